"""`python -m analysis` end to end: each subcommand writes its files; bad input exits 2 with one error line."""
from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from analysis.cli import main
from tests.unit.test_analysis_plots import check_png, check_svg

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "fixtures" / "analysis"
RUNS = sorted(str(p) for p in FIX.glob("runs/*"))

CASES = {
    "comm": (["comm", str(FIX / "bench_p4.jsonl"), "--calibration", str(FIX / "calibration.json")],
             ["comm_time", "comm_busbw"]),
    "cost": (["cost", str(FIX / "whatif.jsonl"), str(FIX / "run_one.json")], ["cost_H", "cost_Hb"]),
    "speedup": (["speedup", "--sim", str(FIX / "whatif.jsonl"), "--topology", "v100-4x4-10gbps", "--runs", *RUNS],
                ["speedup", "speedup_runs", "time_to_acc"]),
    "convex": (["convex", "--grid", str(FIX / "convex_grid.json"), "--speedup", str(FIX / "convex_speedup.json")],
               ["convex_heatmap", "convex_speedup"]),
    "speedup-runs": (["speedup", "--runs", *RUNS], ["speedup_runs", "time_to_acc"]),
    "curves": (["curves", *RUNS], ["curves_epoch", "curves_wall", "time_breakdown"]),
    "predict": (["predict", "--table", str(FIX / "predict.jsonl"), "--runs", *RUNS], ["predict"]),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_subcommand_writes_deterministic_names(name, tmp_path, capsys):
    argv, stems = CASES[name]
    # The default formats (png,svg) once; PNG only elsewhere, since the unit tests check every SVG.
    formats = ("png", "svg") if name == "comm" else ("png",)
    extra = [] if name == "comm" else ["--formats", "png"]
    assert main([*argv, *extra, "--out-dir", str(tmp_path), "--json", "--quiet"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert sorted(result["figures"]) == sorted(stems)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{s}.{e}" for s in stems for e in formats)
    for stem in stems:
        data = (tmp_path / f"{stem}.png").read_bytes()
        w = int.from_bytes(data[16:20], "big")
        h = int.from_bytes(data[20:24], "big")
        assert w == 700  # default 7 in at 100 dpi
        check_png(data, (w, h))
        if "svg" in formats:
            check_svg((tmp_path / f"{stem}.svg").read_bytes())


def test_report_is_one_self_contained_page(tmp_path, capsys):
    out = tmp_path / "r.html"
    assert main(["report", RUNS[0], "--out", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["outputs"] == [str(out)]
    page = out.read_text()
    assert re.search(r'src="(?!data:)', page) is None and "<link" not in page  # nothing fetched from elsewhere
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == len(result["figures"]) >= 4
    for b64 in images:
        data = base64.b64decode(b64)
        check_png(data, (700, int.from_bytes(data[20:24], "big")))
    summary = json.loads((Path(RUNS[0]) / "summary.json").read_text())
    assert f"{summary['wall_s']:.6g}" in page and "prediction.wall_s" in page
    assert [p.name for p in tmp_path.iterdir()] == ["r.html"]  # atomic: no temp file left


def test_python_dash_m_and_bad_input_exit_2_with_one_line(tmp_path):
    bad = tmp_path / "bench.jsonl"
    row = json.loads((FIX / "bench_p4.jsonl").read_text().splitlines()[0])
    del row["bytes"]
    bad.write_text(json.dumps(row) + "\n")
    proc = subprocess.run([sys.executable, "-m", "analysis", "comm", str(bad), "--out-dir", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: {bad}:1: missing key 'bytes'"
    assert list(tmp_path.iterdir()) == [bad]


@pytest.mark.parametrize("argv, message", [
    (["speedup"], "error: speedup needs --sim FILE"),
    (["curves", "/nonexistent/run"], "error: run directory '/nonexistent/run' does not exist"),
    (["cost", str(FIX / "whatif.jsonl"), "--K", "3"], "error: K must be one of the simulated K values"),
])
def test_bad_arguments_are_one_line_errors(argv, message, tmp_path, capsys):
    assert main([*argv, "--out-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(message) and "\n" not in err


def test_bad_format_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as info:
        main(["curves", RUNS[0], "--formats", "png,gif"])
    assert info.value.code == 2
    assert "format must be one of png, svg, pdf, got 'gif'" in capsys.readouterr().err
