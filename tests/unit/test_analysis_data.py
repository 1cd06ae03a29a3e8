"""The data each figure draws, checked against independent computations on the fixture files."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from analysis.commplot import bench_series, load_bench
from analysis.convexplot import convex_speedup_lines, grid_cells, load_convex_rows, relative_matrix
from analysis.curvesplot import run_curves
from analysis.errors import InputError
from analysis.predictplot import Pair, pairs_from_runs, pairs_from_table
from analysis.runs import as_percent, load_run, load_runs
from analysis.simout import group_lines, load_sim, select
from analysis.speedupplot import run_speedup_lines, sim_speedup_lines

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "analysis"


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_bench_series_recomputes_busbw_and_drops_incorrect_rows():
    raw = _jsonl(FIX / "bench_p4.jsonl")
    series = bench_series(load_bench([FIX / "bench_p4.jsonl"]))
    good = [r for r in raw if r["correct"]]
    assert sum(len(s.bytes) for s in series) == len(good)
    by_key = {(r["algorithm"], r["bytes"]): r for r in good}
    for s in series:
        for n, t, bw in zip(s.bytes, s.t_median_s, s.busbw_GBps):
            row = by_key[(s.algorithm, n)]
            assert t == row["t_median_s"]
            assert bw == pytest.approx(row["busbw_GBps"], rel=1e-12)  # the writer's own figure
    rd = next(s for s in series if s.algorithm == "recursive_doubling")
    assert rd.incorrect == 1 and max(rd.bytes) < 2**24


def test_bench_repeated_files_take_the_median(tmp_path):
    rows = _jsonl(FIX / "bench_p4.jsonl")[:1]
    files = []
    for i, scale in enumerate((1.0, 3.0, 1.5)):
        f = tmp_path / f"b{i}.jsonl"
        f.write_text(json.dumps(dict(rows[0], t_median_s=rows[0]["t_median_s"] * scale)) + "\n")
        files.append(f)
    (s,) = bench_series(load_bench(files))
    assert s.t_median_s == [pytest.approx(rows[0]["t_median_s"] * 1.5)]


def test_bench_missing_key_is_one_line_naming_file_and_key(tmp_path):
    f = tmp_path / "b.jsonl"
    row = _jsonl(FIX / "bench_p4.jsonl")[0]
    del row["t_median_s"]
    f.write_text(json.dumps(row) + "\n")
    with pytest.raises(InputError) as info:
        load_bench([f])
    assert str(info.value) == f"{f}:1: missing key 't_median_s'"


def test_convex_relative_matrix_matches_the_file():
    doc = json.loads((FIX / "convex_grid.json").read_text())
    bs, hs, mat = relative_matrix(grid_cells(load_convex_rows(FIX / "convex_grid.json")))
    assert (bs, hs) == (sorted(doc["B"]), sorted(doc["H"]))
    for r in doc["configs"]:
        v = mat[bs.index(r["B"]), hs.index(r["H"])]
        if r["reached"]:
            assert v == pytest.approx(r["time"] / doc["best"]["time"]) and v == pytest.approx(r["relative"])
        else:
            assert not np.isfinite(v)
    assert mat[bs.index(doc["best"]["B"]), hs.index(doc["best"]["H"])] == 1.0


def test_convex_inconsistent_relative_is_rejected(tmp_path):
    doc = json.loads((FIX / "convex_grid.json").read_text())
    doc["configs"][0]["relative"] = 123.0
    f = tmp_path / "g.json"
    f.write_text(json.dumps(doc))
    with pytest.raises(InputError, match=r"configs\[0\]: relative time 123.0 disagrees"):
        relative_matrix(grid_cells(load_convex_rows(f)))


def test_convex_speedup_given_or_computed_and_unreached_left_out(tmp_path):
    doc = json.loads((FIX / "convex_speedup.json").read_text())
    given, ref = convex_speedup_lines(load_convex_rows(FIX / "convex_speedup.json"))
    h1 = next(line for line in given if line[0] == 1)
    assert 8 not in h1[1] and h1[1] == [1, 2, 4, 16]  # the unreached (null) point is dropped
    for r in doc["configs"]:
        del r["speedup"]
    f = tmp_path / "s.json"
    f.write_text(json.dumps(doc))
    computed, ref2 = convex_speedup_lines(load_convex_rows(f))
    assert ref == ref2 == 1
    times = {(r["H"], r["K"]): r["time"] for r in doc["configs"]}
    for (h1_, k1, s1), (h2, k2, s2) in zip(given, computed):
        assert (h1_, k1) == (h2, k2)
        assert s1 == pytest.approx(s2) and s2 == pytest.approx([times[h2, 1] / times[h2, k] for k in k2])


def test_sim_lines_group_by_everything_but_x():
    raw = _jsonl(FIX / "whatif.jsonl")
    pts = load_sim([FIX / "whatif.jsonl"])
    lines = group_lines(pts, "H", "eq6_s", where={"K": 16, "Hb": 1, "algorithm": "local"})
    assert sorted(label for label, *_ in lines) == ["paper-8x2-10gbps", "v100-4x4-10gbps"]
    for label, xs, ys, _ in lines:
        expect = sorted((r["H"], r["eq6_s"]) for r in raw if r["topology"] == label and r["K"] == 16
                        and r["Hb"] == 1 and r["algorithm"] == "local")
        assert list(zip(xs, ys)) == [(float(h), e) for h, e in expect]
    comm = group_lines(pts, "Hb", "comm_s", where={"K": 16, "algorithm": "hierarchical"})
    r0 = next(r for r in raw if r["K"] == 16 and r["Hb"] == 4 and r["algorithm"] == "hierarchical"
              and r["topology"] == comm[0][0])
    assert comm[0][1][2] == 4.0 and comm[0][2][2] == pytest.approx(r0["comm_intra_s"] + r0["comm_inter_s"])


def test_select_filters_and_drops_hierarchical_hb1_duplicates():
    pts = load_sim([FIX / "whatif.jsonl"])
    k16 = select(pts, K=16)
    assert all(p.get("K") == 16 for p in k16)
    assert not any(p.get("algorithm") == "hierarchical" and p.get("Hb") == 1 for p in k16)
    assert any(p.get("algorithm") == "hierarchical" and p.get("Hb") == 1
               for p in select(pts, dedupe_local=False, K=16))
    with pytest.raises(InputError, match=r"topology must be one of paper-8x2-10gbps, v100-4x4-10gbps "
                                         r"\(the simulated values\), got 'nope'"):
        select(pts, topology="nope")


def test_sim_duplicate_configuration_is_an_error(tmp_path):
    line = (FIX / "whatif.jsonl").read_text().splitlines()[0]
    f = tmp_path / "w.jsonl"
    f.write_text(line + "\n" + line + "\n")
    with pytest.raises(InputError, match="two simulator records for the same configuration"):
        group_lines(load_sim([f]), "H", "eq6_s")


def test_sim_speedup_from_single_worker_or_wall_time(tmp_path):
    raw = [r for r in _jsonl(FIX / "whatif.jsonl") if r["algorithm"] == "local"]
    f = tmp_path / "w.jsonl"
    f.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "speedup"}) + "\n" for r in raw))
    lines = sim_speedup_lines(load_sim([f]))  # from single_worker_s / wall_s
    for label, xs, ys, *_ in lines:
        topo, h = label.split(", H=")
        rows = {r["K"]: r for r in raw if r["topology"] == topo and r["H"] == int(h)}
        assert ys == [pytest.approx(rows[int(k)]["single_worker_s"] / rows[int(k)]["wall_s"]) for k in xs]
    f.write_text("".join(json.dumps({k: v for k, v in r.items() if k not in ("speedup", "single_worker_s")})
                         + "\n" for r in raw))
    for label, xs, ys, *_ in sim_speedup_lines(load_sim([f])):  # from wall(K=1) / wall(K)
        topo, h = label.split(", H=")
        walls = {r["K"]: r["wall_s"] for r in raw if r["topology"] == topo and r["H"] == int(h)}
        assert ys == [pytest.approx(walls[1] / walls[int(k)]) for k in xs]


def test_run_speedup_reference_is_fewest_workers_smallest_H(tmp_path):
    runs = load_runs(sorted(FIX.glob("runs/*")))
    lines, ref, ref_K = run_speedup_lines(runs)
    assert ref.startswith("minibatch") and ref_K == 4
    walls = {r.label: r.wall_s() for r in runs}
    t_ref = walls[next(lab for lab in walls if lab.startswith("minibatch"))]
    local = next(line for line in lines if line[0].startswith("local"))
    assert local[2][0] == pytest.approx(t_ref / walls["local K=4 H=8"])
    assert sorted(walls) == ["hierarchical K=4 H=2 Hᵇ=4", "local K=4 H=8", "local K=8 H=8", "minibatch K=4"]
    assert local[1] == [4.0, 8.0] and local[2][1] == pytest.approx(t_ref / walls["local K=8 H=8"])
    # config.json keeps H=8 for mini-batch SGD; it must still count as H=1 (the reference, and its label).
    assert json.loads((FIX / "runs" / "minibatch_K4" / "config.json").read_text())["config"]["H"] == 8
    assert [line[0] for line in lines] == ["hierarchical, H=2, Hᵇ=4", "local, H=8", "minibatch"]


def test_run_breakdown_curves_and_percent():
    run = load_run(FIX / "runs" / "local_K4_H8")
    summary = json.loads((FIX / "runs" / "local_K4_H8" / "summary.json").read_text())
    b = run.breakdown()
    t = summary["totals_rank0"]
    assert b == {"compute": t["compute_s"], "straggler (emulated)": 0.0, "comm block / intra-node": t["comm_s_block"],
                 "comm global / inter-node": t["comm_s_global"], "waiting": t["wait_s_block"] + t["wait_s_global"],
                 "evaluation": t["eval_s"]}
    assert math.isclose(sum(b.values()), summary["wall_s"])
    curves = run_curves(run)
    epochs = [r for r in _jsonl(FIX / "runs" / "local_K4_H8" / "metrics.jsonl") if r["kind"] == "epoch"]
    assert curves.series("test_acc", "epoch")[1] == [pytest.approx(100 * r["test_acc"]) for r in epochs]
    assert as_percent([0.5, 1.0]) == [50.0, 100.0] and as_percent([50.0, 91.0]) == [50.0, 91.0]
    assert as_percent([None, 0.25]) == [None, 25.0]  # an epoch without that metric stays a gap


def test_run_without_epoch_records_or_bad_kind(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"kind": "step", "step": 0, "epoch": 0.5, "train_loss": 1.0}\n'
                                            '{"kind": "step", "step": 1, "epoch": 1.0, "train_loss": 0.5}\n')
    curves = run_curves(load_run(tmp_path))  # a run in progress: step records stand in
    assert curves.label.endswith("(steps)") and curves.series("train_loss", "epoch") == ([0.5, 1.0], [1.0, 0.5])
    (tmp_path / "metrics.jsonl").write_text("")
    with pytest.raises(InputError, match="no 'epoch' or 'step' records"):
        run_curves(load_run(tmp_path))
    (tmp_path / "metrics.jsonl").write_text('{"kind": "batch"}\n')
    with pytest.raises(InputError, match="key 'kind' must be 'step' or 'epoch', got 'batch'"):
        load_run(tmp_path)


def test_predict_pairs_and_error_sign():
    rows = _jsonl(FIX / "predict.jsonl")
    pairs = pairs_from_table(FIX / "predict.jsonl")
    assert [p.rel_error for p in pairs] == [pytest.approx((r["predicted_s"] - r["measured_s"]) / r["measured_s"])
                                           for r in rows]
    run_pairs = pairs_from_runs(load_runs(sorted(FIX.glob("runs/*"))))
    s = json.loads((FIX / "runs" / "minibatch_K4" / "summary.json").read_text())
    mb = next(p for p in run_pairs if p.name.startswith("minibatch"))
    assert (mb.predicted_s, mb.measured_s) == (s["prediction"]["wall_s"], s["wall_s"])
    with pytest.raises(InputError, match="measured_s must be a finite time > 0, got 0.0"):
        Pair(name="x", predicted_s=1.0, measured_s=0.0)


def test_run_speedup_in_time_to_accuracy():
    runs = load_runs(sorted(FIX.glob("runs/*")))
    lines, _ref, _ = run_speedup_lines(runs, use_tta=True)
    tta = {r.label: json.loads((r.path / "summary.json").read_text())["time_to_target"]["wall_s"] for r in runs}
    hier = next(line for line in lines if line[0].startswith("hierarchical"))
    assert hier[2] == [pytest.approx(tta["minibatch K=4"] / tta["hierarchical K=4 H=2 Hᵇ=4"])]


def test_run_label_names_the_compression(tmp_path):
    import shutil
    shutil.copytree(FIX / "runs" / "local_K4_H8", tmp_path / "r")
    cfg = json.loads((tmp_path / "r" / "config.json").read_text())
    assert load_run(tmp_path / "r").label == "local K=4 H=8"
    cfg["config"]["compress"] = "ef-sign"
    (tmp_path / "r" / "config.json").write_text(json.dumps(cfg))
    assert load_run(tmp_path / "r").label == "local K=4 H=8 ef-sign"


def test_two_runs_of_one_configuration_get_distinct_legend_entries(tmp_path):
    import shutil

    from analysis.curvesplot import plot_curves
    from analysis.render import RenderConfig
    for name in ("seed0", "seed1"):
        shutil.copytree(FIX / "runs" / "local_K4_H8", tmp_path / name)
    fig = plot_curves(load_runs([tmp_path / "seed0", tmp_path / "seed1"]), RenderConfig())["curves_epoch"]
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "local K=4 H=8 (seed0)" in labels and "local K=4 H=8 (seed1)" in labels
