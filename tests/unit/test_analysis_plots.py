"""Every figure renders from the fixtures as a PNG of the expected size that is not blank, and as valid SVG."""
from __future__ import annotations

import io
import json
import struct
import xml.etree.ElementTree as ET
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.image as mpimg
import pytest
from matplotlib.text import Text

from analysis.commplot import bench_series, load_bench, plot_comm
from analysis.convexplot import (
    convex_speedup_lines,
    grid_cells,
    load_convex_rows,
    plot_convex_grid,
    plot_convex_speedup,
)
from analysis.costmodel import load_calibration
from analysis.costplot import plot_cost
from analysis.curvesplot import plot_breakdown, plot_curves
from analysis.errors import InputError
from analysis.predictplot import pairs_from_table, plot_predict
from analysis.render import RenderConfig, figure_bytes, parse_formats, save_figure, style
from analysis.runs import load_runs
from analysis.simout import load_sim, select
from analysis.speedupplot import plot_speedup, plot_time_to_acc, sim_speedup_lines

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "analysis"
CFG = RenderConfig(formats=("png", "svg"), dpi=100)


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from the IHDR chunk, after checking the PNG signature and the chunk's CRC-free layout."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG signature"
    length, ctype = struct.unpack(">I4s", data[8:16])
    assert ctype == b"IHDR" and length == 13, "first chunk must be IHDR"
    return struct.unpack(">II", data[16:24])


def check_png(data: bytes, expected: tuple[int, int], min_std: float = 0.02) -> None:
    """A valid PNG of exactly ``expected`` pixels whose pixel values vary (not a blank canvas)."""
    assert png_size(data) == expected
    pixels = mpimg.imread(io.BytesIO(data), format="png")
    assert pixels.shape[:2] == (expected[1], expected[0])
    assert float(pixels[..., :3].std()) > min_std, "image is (nearly) blank"


def check_svg(data: bytes) -> None:
    root = ET.fromstring(data)
    assert root.tag.endswith("svg")
    assert len(list(root.iter())) > 50  # axes, ticks, lines: far more than an empty document


def _all_figures():
    runs = load_runs(sorted(FIX.glob("runs/*")))
    points = load_sim([FIX / "whatif.jsonl"])
    cal = load_calibration(FIX / "calibration.json")
    lines, ref = convex_speedup_lines(load_convex_rows(FIX / "convex_speedup.json"))
    figs = {}
    figs.update(plot_comm(bench_series(load_bench([FIX / "bench_p4.jsonl"])), CFG, cal, spread=True))
    figs.update(plot_cost(points, CFG))
    figs.update(plot_speedup(sim_speedup_lines(select(points, Hb=1)), CFG))
    figs.update(plot_time_to_acc(runs, CFG))
    figs.update(plot_convex_grid(grid_cells(load_convex_rows(FIX / "convex_grid.json")), CFG))
    figs.update(plot_convex_speedup(lines, ref, CFG))
    figs.update(plot_curves(runs, CFG))
    figs.update(plot_breakdown(runs, CFG))
    figs.update(plot_predict(pairs_from_table(FIX / "predict.jsonl"), CFG))
    return figs


FIGURES = _all_figures()  # built once at import: the figures are shared by the tests below
EXPECTED = {"comm_time", "comm_busbw", "cost_H", "cost_Hb", "speedup", "time_to_acc", "convex_heatmap",
            "convex_speedup", "curves_epoch", "curves_wall", "time_breakdown", "predict"}


def test_every_figure_family_is_drawn():
    assert set(FIGURES) == EXPECTED


@pytest.mark.parametrize("stem", sorted(EXPECTED))
def test_png_size_not_blank_svg_and_nothing_clipped(stem):
    fig = FIGURES[stem]
    w_in, h_in = fig.get_size_inches()
    assert w_in == CFG.width_in  # every figure is README width: 700 px at 100 dpi
    check_svg(figure_bytes(fig, "svg", CFG))
    check_png(figure_bytes(fig, "png", CFG), (round(w_in * CFG.dpi), round(h_in * CFG.dpi)))
    # Nothing clipped: everything drawn in the PNG (labels, ticks, legends, titles) lies inside it.
    with style():  # as saved: tick labels take their size from the house style at draw time
        tight = fig.get_tightbbox(fig.canvas.get_renderer())  # inches
    assert tight.x0 >= -0.01 and tight.y0 >= -0.01, f"{stem}: drawn outside left/bottom: {tight}"
    assert tight.x1 <= w_in + 0.01 and tight.y1 <= h_in + 0.01, f"{stem}: drawn outside right/top: {tight}"


def test_axes_are_labelled_with_units_and_have_legends_or_colorbars():
    for stem, fig in FIGURES.items():
        data_axes = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
        for ax in data_axes:
            assert ax.get_xlabel() and ax.get_ylabel(), f"{stem}: unlabelled axis"
        has_key = bool(fig.legends) or any(ax.get_legend() for ax in fig.axes) or len(fig.axes) > len(data_axes)
        assert has_key or stem in ("time_to_acc",), f"{stem}: no legend or colour bar"


def test_save_writes_each_format_and_dpi_scales_the_size(tmp_path):
    fig = FIGURES["predict"]
    cfg = RenderConfig(formats=parse_formats("png,svg,pdf"), dpi=50)
    paths = save_figure(fig, tmp_path, "predict", cfg)
    assert [p.name for p in paths] == ["predict.png", "predict.svg", "predict.pdf"]
    w_in, h_in = fig.get_size_inches()
    check_png(paths[0].read_bytes(), (round(w_in * 50), round(h_in * 50)))
    check_svg(paths[1].read_bytes())
    assert paths[2].read_bytes()[:5] == b"%PDF-"
    assert figure_bytes(fig, "svg", cfg) == figure_bytes(fig, "svg", cfg)  # deterministic output


def test_blank_canvas_would_fail_the_check():
    from matplotlib.figure import Figure
    blank = Figure(figsize=(7, 4.2), dpi=100)
    with pytest.raises(AssertionError, match="blank"):
        check_png(figure_bytes(blank, "png", CFG), (700, 420))


def test_render_config_rejects_bad_values():
    with pytest.raises(InputError, match="format must be one of png, svg, pdf, got 'jpg'"):
        parse_formats("png,jpg")
    with pytest.raises(InputError, match="dpi must be an integer in \\[30, 600\\], got 0"):
        RenderConfig(dpi=0)


def test_many_long_legend_entries_still_fit():
    """Every simulated line (both algorithms, all H^b) gives long labels; the legend must stay inside."""
    fig = plot_speedup(sim_speedup_lines(load_sim([FIX / "whatif.jsonl"])), CFG)["speedup"]
    w_in, h_in = fig.get_size_inches()
    check_png(figure_bytes(fig, "png", CFG), (round(w_in * CFG.dpi), round(h_in * CFG.dpi)))
    with style():
        tight = fig.get_tightbbox(fig.canvas.get_renderer())
    assert tight.x0 >= -0.01 and tight.x1 <= w_in + 0.01 and tight.y0 >= -0.01 and tight.y1 <= h_in + 0.01


def test_time_to_acc_marks_a_run_that_never_reached_the_target(tmp_path):
    import json
    import shutil
    src = FIX / "runs" / "local_K4_H8"
    dst = tmp_path / "unreached"
    shutil.copytree(src, dst)
    summary = json.loads((dst / "summary.json").read_text())
    summary["time_to_target"] = None
    (dst / "summary.json").write_text(json.dumps(summary))
    runs = load_runs([src, dst])
    assert runs[1].summary_num("tta_s") is None
    fig = plot_time_to_acc(runs, CFG)["time_to_acc"]
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert " target not reached" in texts and f" {summary['wall_s'] / 6 * 4:.3g} s" in texts
    assert fig.axes[0].get_ylim() == (1.5, -0.5)  # the unreached run, drawn last, keeps its row in view
    check_png(figure_bytes(fig, "png", CFG), tuple(round(v * CFG.dpi) for v in fig.get_size_inches()))


def test_a_partial_convex_grid_says_so_in_its_title(tmp_path):
    import json
    doc = json.loads((FIX / "convex_grid.json").read_text())
    doc["complete"] = False
    f = tmp_path / "g.json"
    f.write_text(json.dumps(doc))
    full = plot_convex_grid(grid_cells(load_convex_rows(FIX / "convex_grid.json")), CFG)["convex_heatmap"]
    part = plot_convex_grid(grid_cells(load_convex_rows(f)), CFG)["convex_heatmap"]
    assert "still running" not in full.axes[0].get_title()
    assert part.axes[0].get_title().endswith("(K = 16, grid still running: best so far)")
    w_in, h_in = part.get_size_inches()
    check_png(figure_bytes(part, "png", CFG), (round(w_in * CFG.dpi), round(h_in * CFG.dpi)))
    with style():
        tight = part.get_tightbbox(part.canvas.get_renderer())
    assert tight.x0 >= -0.01 and tight.x1 <= w_in + 0.01  # the longer title still fits


def _label_boxes(fig):
    """Window extents of the text of every annotation in ``fig`` (leader lines left out), drawn as saved."""
    with style():
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        return [(a.get_text(), Text.get_window_extent(a, renderer)) for ax in fig.axes for a in ax.texts]


@pytest.mark.parametrize("table", [FIX / "predict.jsonl",
                                   Path(__file__).resolve().parents[2] / "docs" / "predict-table.jsonl"])
def test_predict_error_labels_neither_overlap_nor_leave_the_axes(table):
    fig = plot_predict(pairs_from_table(table), CFG)["predict"]
    boxes = _label_boxes(fig)
    assert len(boxes) == len(pairs_from_table(table))
    ax = fig.axes[0].bbox
    for i, (text, a) in enumerate(boxes):
        assert ax.x0 <= a.x0 and a.x1 <= ax.x1 and ax.y0 <= a.y0 and a.y1 <= ax.y1, f"{text} leaves the axes"
        for other, b in boxes[i + 1:]:
            assert not a.overlaps(b), f"labels {text!r} and {other!r} overlap"


def test_predict_crowded_points_get_separate_labels(tmp_path):
    """Twelve points within 2 % of each other: the naive fixed offset would print every label on one spot."""
    rows = [{"name": f"run {i}", "predicted_s": 10.0 * (1 + 0.002 * i), "measured_s": 10.0 * (1 - 0.002 * i)}
            for i in range(6)] + [{"name": "far", "predicted_s": 40.0, "measured_s": 5.0}]
    table = tmp_path / "t.jsonl"
    table.write_text("".join(json.dumps(r) + "\n" for r in rows))
    boxes = _label_boxes(plot_predict(pairs_from_table(table), CFG)["predict"])
    for i, (text, a) in enumerate(boxes):
        for other, b in boxes[i + 1:]:
            assert not a.overlaps(b), f"labels {text!r} and {other!r} overlap"


def test_durations_are_labelled_in_readable_units():
    from analysis.render import format_seconds
    assert [format_seconds(v) for v in (2e-4, 1e-3, 0.0015, 5e-3, 2.0, 3e-8)] == \
        ["200 µs", "1 ms", "1.5 ms", "5 ms", "2 s", "30 ns"]
    fig = FIGURES["comm_time"]
    with style():
        fig.canvas.draw()
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels() + fig.axes[0].get_yticklabels(minor=True)]
    assert any(text.endswith(("µs", "ms")) for text in labels), labels
