"""CLI runs of `python -m sim convex` on the real w8a file: f* to 1e-12, a small grid and a small speedup."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

W8A_FSTAR = 0.126180686510513  # independent Newton solve, shared/data/README
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _sim(*argv: str, cache: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "XDG_CACHE_HOME": cache}
    return subprocess.run([sys.executable, "-m", "sim", "convex", *argv], cwd=ROOT, env=env, check=False,
                          capture_output=True, text=True, timeout=120)


def test_fstar_json_and_cache(tmp_path, w8a):
    W8A = str(w8a)
    first = _sim("fstar", "--data", W8A, "--json", cache=str(tmp_path))
    assert first.returncode == 0, first.stderr
    out = json.loads(first.stdout)
    assert abs(out["fstar_computed"] - W8A_FSTAR) <= 1e-12
    assert out["fstar_paper"] == 0.126433176216545 and out["cached"] is False
    assert os.listdir(tmp_path / "localsgd")
    second = json.loads(_sim("fstar", "--data", W8A, "--json", cache=str(tmp_path)).stdout)
    assert second["cached"] is True and second["fstar_computed"] == out["fstar_computed"]


def test_small_grid_and_speedup_on_w8a(tmp_path, w8a):
    W8A = str(w8a)
    out = tmp_path / "grid.json"
    run = _sim("grid", "--data", W8A, "--K", "4", "--H", "1,4", "--batch-size", "16,64", "--out", str(out),
               cache=str(tmp_path))
    assert run.returncode == 0, run.stderr
    assert "relative" in run.stdout and f"wrote {out}" in run.stdout
    grid = json.loads(out.read_text())
    assert grid["schema"] == "localsgd.convex.grid/1" and grid["K"] == 4
    assert [(c["H"], c["B"]) for c in grid["configs"]] == [(1, 16), (1, 64), (4, 16), (4, 64)]
    assert abs(grid["fstar"]["used"] - W8A_FSTAR) <= 1e-12
    for c in grid["configs"]:
        assert c["reached"] and c["time"] % (c["H"] * c["B"] + 25) == 0
        assert c["relative"] == pytest.approx(c["time"] / grid["best"]["time"])
    sp = _sim("speedup", "--data", W8A, "--batch-size", "16", "--H", "4", "--K", "4", "--json", "--fstar", "paper",
              cache=str(tmp_path))
    assert sp.returncode == 0, sp.stderr
    res = json.loads(sp.stdout)
    assert res["K"] == [1, 4] and res["fstar"]["used"] == 0.126433176216545
    base = res["configs"][0]
    assert base["K"] == 1 and base["speedup"] == 1.0 and base["round_time"] == 4 * 16  # no comm at K = 1
    for c in res["configs"]:
        assert c["speedup"] == pytest.approx(base["time"] / c["time"])


def test_bad_input_exits_2_with_one_line(tmp_path):
    run = _sim("grid", "--data", str(tmp_path / "missing"), cache=str(tmp_path))
    assert run.returncode == 2
    assert run.stderr.startswith("error: data file") and run.stderr.count("\n") == 1
    run = _sim("speedup", "--data", str(tmp_path / "missing"), "--epsilon", "-1", cache=str(tmp_path))
    assert run.returncode == 2 and "epsilon must be a finite number > 0, got -1.0" in run.stderr


def test_convex_modules_never_import_torch_or_mpi4py():
    code = ("import sys, importlib\n"
            "for m in ('cli', 'experiment', 'fstar', 'io', 'libsvm', 'localsgd', 'objective', 'sampler', 'search',"
            " 'target'):\n"
            "    importlib.import_module('sim.convex.' + m)\n"
            "print(sorted(m for m in ('torch', 'mpi4py') if m in sys.modules))\n")
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                         check=False)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"
