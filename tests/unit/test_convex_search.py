"""Tests of the c search: its early-stopped batches must agree with every c run alone to the end."""
from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import scipy.sparse as sp

from sim.convex.cli import register
from sim.convex.errors import ConvexError
from sim.convex.fstar import solve_fstar
from sim.convex.localsgd import Problem, Protocol, Run, simulate
from sim.convex.objective import LogisticObjective
from sim.convex.search import SearchSettings, relative_times, search_config


def _problem(seed: int = 4, n: int = 120, d: int = 8) -> Problem:
    rng = np.random.default_rng(seed)
    X = (rng.random((n, d)) < 0.3).astype(float)
    y = np.where(X @ rng.normal(size=d) + 0.5 * rng.normal(size=n) > 0.3, 1.0, -1.0)
    obj = LogisticObjective(sp.csr_matrix(X), y)
    return Problem(obj, fstar=solve_fstar(obj).fstar)


def _alone(problem, protocol, K, H, B, schedule, c_exp):
    (res,) = simulate(problem, protocol, K=K, H=H, B=B, runs=[Run(schedule=schedule, c_exp=c_exp)])
    return res.time


@pytest.mark.parametrize("K, H, B, eps", [(4, 2, 2, 0.003), (2, 1, 4, 0.001)])
def test_search_agrees_with_each_c_run_alone(K, H, B, eps):
    problem = _problem()
    protocol = Protocol(epsilon=eps, unit_comm=5.0, max_time=4000.0, seed=1)
    settings = SearchSettings(start={"decay": -6, "const": -6}, c_min_exp=-12, c_max_exp=4)
    res = search_config(problem, protocol, K=K, H=H, B=B, settings=settings)
    best = res.best
    assert best is not None and res.time == best.time
    alone = {(s, e): _alone(problem, protocol, K, H, B, s, e)
             for s, sr in res.schedules.items() for e in sr.tried}
    finite = [t for t in alone.values() if t is not None]
    assert res.time == min(finite)
    assert alone[(best.schedule, best.c_exp)] == best.time
    for (s, e), t in alone.items():
        assert t is None or t >= res.time
        got = res.schedules[s].tried[e]
        if got.time is not None:
            assert got.time == t  # a run that hit in a batch hits at the same time alone
        else:
            assert t is None or t > got.stopped_at  # a stopped run really needed longer
    assert best.optimal
    for sr in res.schedules.values():  # the rule, wherever it is claimed, holds for the runs alone
        if sr.optimal:
            for i in (-2, -1, 1, 2):
                t = alone[(sr.schedule, sr.c_exp + i)]
                assert t is None or t > sr.time
    # The window of the winner reaches 2 exponents on each side (within the allowed range).
    tried = res.schedules[best.schedule].tried
    assert all(e in tried for e in range(max(-12, best.c_exp - 2), min(4, best.c_exp + 2) + 1))


def test_unreachable_target_reports_none():
    problem = _problem()
    protocol = Protocol(epsilon=1e-9, max_time=300.0)
    res = search_config(problem, protocol, K=2, H=1, B=1, settings=SearchSettings(c_min_exp=-3, c_max_exp=0))
    assert res.time is None and res.best is None
    out = res.to_json()
    assert out["reached"] is False and out["c"] is None
    json.dumps(out, allow_nan=False)


def test_relative_times():
    class R:
        def __init__(self, t):
            self.time = t
    assert relative_times([R(10.0), R(None), R(25.0)]) == [1.0, None, 2.5]
    assert relative_times([R(None)]) == [None]


def test_settings_validation():
    with pytest.raises(ConvexError, match="c_min_exp <= c_max_exp"):
        SearchSettings(c_min_exp=3, c_max_exp=2)
    with pytest.raises(ConvexError, match="radius must be an integer >= 1, got 0"):
        SearchSettings(radius=0)
    with pytest.raises(ConvexError, match="subset of decay, const"):
        SearchSettings(schedules=("adam",))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sim")
    register(parser.add_subparsers(dest="command", required=True))
    return parser


def test_cli_register_builds_three_commands_with_handlers(tmp_path, capsys):
    parser = _parser()
    args = parser.parse_args(["convex", "grid", "--data", "x", "--H", "1,4", "--batch-size", "8"])
    assert args.H == [1, 4] and args.B == [8] and args.K == 16 and callable(args.func)
    args = parser.parse_args(["convex", "speedup", "--data", "x"])
    assert args.K == [1, 2, 4, 8, 16, 32, 64] and args.B == 16 and args.k1_comm is False
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(["convex", "grid", "--data", "x", "--batch-size", "0,2"])
    assert exc.value.code == 2
    assert "integers >= 1, got '0,2'" in capsys.readouterr().err


def test_cli_handler_turns_bad_input_into_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.svm"
    bad.write_text("1 1:1\n-1 2:x\n")
    args = _parser().parse_args(["convex", "fstar", "--data", str(bad), "--cache-dir", str(tmp_path), "--quiet"])
    assert args.func(args) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {bad}:2: feature value must be a number, got 'x' in '2:x'"


def test_cli_grid_end_to_end_on_a_small_file(tmp_path, capsys, monkeypatch):
    import sim.convex.io as convex_io
    written: list[bool] = []
    real_write = convex_io.write_json_atomic
    monkeypatch.setattr(convex_io, "write_json_atomic",
                        lambda path, doc: (written.append(doc["complete"]), real_write(path, doc)))
    rng = np.random.default_rng(0)
    lines = []
    for _ in range(80):
        feats = sorted(rng.choice(np.arange(1, 7), size=rng.integers(1, 4), replace=False))
        label = 1 if (3 in feats) ^ (rng.random() < 0.1) else -1
        lines.append(f"{label:+d} " + " ".join(f"{f}:1" for f in feats))
    data = tmp_path / "tiny.svm"
    data.write_text("\n".join(lines) + "\n")
    out = tmp_path / "grid.json"
    args = _parser().parse_args(["convex", "grid", "--data", str(data), "--cache-dir", str(tmp_path / "c"),
                                 "--K", "2", "--H", "1,2", "--batch-size", "1,4", "--epsilon", "0.02",
                                 "--max-time", "5000", "--out", str(out), "--quiet", "--json"])
    assert args.func(args) == 0
    printed = json.loads(capsys.readouterr().out)
    saved = json.loads(out.read_text())
    assert printed["configs"] == saved["configs"] and saved["schema"] == "localsgd.convex.grid/1"
    assert written == [False, False, False, True]  # 3 partial files while running, then the final one
    rel = [c["relative"] for c in saved["configs"] if c["time"] is not None]
    assert min(rel) == 1.0
    best = min((c for c in saved["configs"] if c["time"] is not None), key=lambda c: c["time"])
    assert saved["best"] == {"H": best["H"], "B": best["B"], "time": best["time"]}
    for c in saved["configs"]:
        if c["time"] is not None:
            assert c["time"] % c["round_time"] == 0  # the target is met at a sync


def test_cli_seeds_average_independent_single_seed_runs(tmp_path, capsys):
    rng = np.random.default_rng(1)
    rows = rng.random((60, 5)) < 0.4
    labels = np.where(rows[:, 0] | (rng.random(60) < 0.15), 1, -1)
    data = tmp_path / "tiny.svm"
    data.write_text("".join(f"{y:+d} " + " ".join(f"{j + 1}:1" for j in np.flatnonzero(r)) + "\n"
                            for y, r in zip(labels, rows)))
    common = ["convex", "grid", "--data", str(data), "--cache-dir", str(tmp_path / "c"), "--K", "2",
              "--H", "1,3", "--batch-size", "2", "--epsilon", "0.01", "--max-time", "3000", "--quiet", "--json"]
    parser = _parser()

    def run(*extra):
        args = parser.parse_args(common + list(extra))
        assert args.func(args) == 0
        return json.loads(capsys.readouterr().out)

    both = run("--seeds", "3,4")
    alone = [run("--seed", "3"), run("--seed", "4")]
    assert both["seeds"] == [3, 4] and alone[0]["seeds"] == [3]
    for i, cfg in enumerate(both["configs"]):
        times = [a["configs"][i]["time"] for a in alone]
        assert [p["time"] for p in cfg["per_seed"]] == times
        assert cfg["time"] == pytest.approx(sum(times) / 2)
        assert cfg["time_min"] == min(times) and cfg["time_max"] == max(times)
        assert cfg["per_seed"][1]["c_exp"] == alone[1]["configs"][i]["c_exp"]


def test_partial_documents_grow_and_end_in_the_final_one():
    from sim.convex.experiment import LoadedProblem, run_grid, run_speedup
    from sim.convex.fstar import FstarResult
    problem = _problem()
    lp = LoadedProblem(problem=problem, path="synthetic", sha256="0" * 64, fstar_used=problem.fstar,
                       fstar_source="computed", fstar=FstarResult(fstar=problem.fstar, grad_norm=0.0, gap_bound=0.0,
                                                                  iterations=0, w_norm=0.0, lam=problem.lam))
    protocol = Protocol(epsilon=0.003, unit_comm=5.0, max_time=4000.0)
    for run, kwargs, total in ((run_grid, dict(K=2, H=[1, 2], B=[2, 4]), 4),
                               (run_speedup, dict(B=2, H=[1, 2], K=[2]), 4)):
        docs: list[dict] = []
        final = run(lp, protocol, partial=docs.append, **kwargs)
        assert [len(d["configs"]) for d in docs] == list(range(1, total))
        assert all(d["complete"] is False for d in docs) and final["complete"] is True
        for d in docs:
            assert [c["time"] for c in d["configs"]] == [c["time"] for c in final["configs"][:len(d["configs"])]]
        json.dumps(final, allow_nan=False)
    assert next(c["speedup"] for c in final["configs"]) == 1.0
