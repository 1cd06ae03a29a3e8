"""Targets recorded by a real run, `sim retime` of its folder against its own prediction, and `analysis tta`."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from analysis.cli import main as analysis_main
from sim.cli import main as sim_main
from tests.parallel.harness import MPIRUN, REPO, mpi_env

#: A tiny convex task (binary logistic regression on 48 features, 512 samples) that reaches both targets early.
TASK = ["--model", "logreg-binary", "--synthetic-classes", "2", "--synthetic-size", "4", "--synthetic-train", "512",
        "--synthetic-test", "256", "--synthetic-noise", "3", "--weight-decay", "0.002", "--batch-size", "8",
        "--epochs", "2", "--eval-every", "0.125", "--lr-warmup-epochs", "0", "--quiet"]
PRESET = "paper-8x2-10gbps"


def _train(args: list[str], ranks: int) -> None:
    cmd = ([MPIRUN, "-n", str(ranks)] if ranks > 1 else []) + [sys.executable, "-m", "train", *args]
    r = subprocess.run(cmd, cwd=REPO, env=mpi_env(), capture_output=True, text=True, timeout=180, check=False)
    assert r.returncode == 0, r.stderr[-2000:]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """local SGD, H = 4, on 2 ranks, with both targets, the objective log and the prediction on PRESET."""
    out = tmp_path_factory.mktemp("tta") / "run"
    _train([*TASK, "--algorithm", "local", "--H", "4", "--target-acc", "0.8", "--target-loss", "0.05",
            "--log-objective", "--predict-topology", PRESET, "--out-dir", str(out)], 2)
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same task on one worker (no mpirun)."""
    out = tmp_path_factory.mktemp("tta") / "ref"
    _train([*TASK, "--algorithm", "minibatch", "--out-dir", str(out)], 1)
    return out


def _evals(run_dir: Path) -> list[dict]:
    return [r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
            if r.get("kind") == "epoch"]


@pytest.mark.parametrize("key,metric,target,better", [("time_to_target", "test_acc", 0.8, 1),
                                                       ("time_to_target_loss", "objective_gap", 0.05, -1)])
def test_the_first_evaluation_reaching_a_target_is_recorded(run, key, metric, target, better):
    evals, s = _evals(run), json.loads((run / "summary.json").read_text())
    i = next(i for i, r in enumerate(evals) if better * r[metric] >= better * target)
    tt = s[key]
    assert (tt["step"], tt["wall_s"], tt["value"]) == (evals[i]["step"], evals[i]["wall_s"], evals[i][metric])
    if i == 0:
        assert tt["interpolated_step"] == evals[0]["step"]
    else:  # linear in the metric between the evaluation before and this one
        a, b = evals[i - 1], evals[i]
        x = (target - a[metric]) / (b[metric] - a[metric])
        assert tt["interpolated_step"] == pytest.approx(a["step"] + x * (b["step"] - a["step"]))
        assert a["step"] < tt["interpolated_step"] <= b["step"]
    assert tt["interpolated_epoch"] == pytest.approx((tt["interpolated_step"] + 1) / (evals[0]["step"] + 1) * 0.125)


def test_the_objective_gap_is_to_the_computed_fstar_of_the_averaged_model(run):
    evals, s = _evals(run), json.loads((run / "summary.json").read_text())
    fstar = s["fstar"]
    assert fstar["source"] == "computed" and 0 < fstar["value"] < math.log(2)   # below f(0) = log 2
    for r in evals:
        assert r["objective_gap"] == pytest.approx(r["objective"] - fstar["value"], abs=1e-12)
        assert r["objective_gap"] > -1e-6                                       # f* is the minimum
    # the last evaluation follows the final global sync: every worker holds the averaged model, whose objective
    # rank 0 also logged over the whole training set (objective.jsonl)
    last = json.loads((run / "objective.jsonl").read_text().splitlines()[-1])
    assert last["step"] == evals[-1]["step"]
    assert evals[-1]["objective"] == pytest.approx(last["f"], rel=1e-6)


def test_retime_on_the_predicted_preset_agrees_with_the_prediction(run, capsys):
    assert sim_main(["retime", str(run), "--preset", PRESET, "--target-loss", "0.05", "--json"]) == 0
    rt = json.loads(capsys.readouterr().out)
    pred = json.loads((run / "summary.json").read_text())["prediction"]
    assert rt["predicted_wall_s"] == pytest.approx(pred["wall_s"], rel=0.01)
    assert rt["prediction"]["syncs_global"] == pred["syncs_global"]
    tg, s = rt["target"], json.loads((run / "summary.json").read_text())["time_to_target_loss"]
    assert tg["reached"] and tg["step"] == s["step"] and tg["steps"] == s["step"] + 1
    assert tg["syncs_global"] == (s["step"] + 1) // 4                          # H = 4: a sync every 4th step
    assert tg["bytes_sent"] == tg["syncs_global"] * pred["wire_bytes"]
    times = [p["time_s"] for p in rt["curve"]]
    assert times == sorted(times) and 0 < tg["time_s"] < rt["predicted_wall_s"]
    assert tg["time_s"] in times and tg["interpolated_time_s"] <= tg["time_s"]


def test_retime_speedup_over_one_worker_and_the_figure(run, reference, tmp_path, capsys):
    out = tmp_path / "rt.jsonl"
    assert sim_main(["retime", str(run), "--preset", PRESET, "--target-acc", "0.8", "--reference", str(reference),
                     "--out", str(out)]) == 0
    text = capsys.readouterr().out
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r.get("role", "run") for r in rows] == ["run", "reference"]
    run_rt, ref_rt = rows
    assert ref_rt["workers"] == 1 and "one worker" in ref_rt["topology"]
    sp = run_rt["speedup"]
    assert sp["value"] == pytest.approx(ref_rt["target"]["time_s"] / run_rt["target"]["time_s"])
    assert f"{sp['value']:.2f} x over one worker" in text
    assert analysis_main(["tta", str(out), "--out-dir", str(tmp_path / "fig"), "--formats", "png", "--quiet"]) == 0
    assert (tmp_path / "fig" / "tta.png").stat().st_size > 10_000
    # a JSON-lines file without a retimed run is one line naming it
    other = tmp_path / "other.jsonl"
    other.write_text('{"kind": "decision"}\n')
    capsys.readouterr()
    assert analysis_main(["tta", str(other), "--out-dir", str(tmp_path / "fig2"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "no row of schema 'sim.retime/1'" in err and err.count("\n") == 1


@pytest.mark.parametrize("args,needle", [
    (["retime", "/nonexistent-run", "--preset", PRESET], "run folder '/nonexistent-run' does not exist"),
    (["retime", "RUN", "--preset", "nope"], "preset must be one of"),
    (["retime", "RUN", "--preset", PRESET, "--target-acc", "2"], "--target-acc must be a fraction in 0..1, got 2.0"),
    (["retime", "RUN", "--preset", PRESET, "--nodes", "2"], "apply to --machine only"),
    (["retime", "RUN", "--machine", PRESET], "is not a train.machine/1 file"),
])
def test_retime_bad_input_is_one_line(run, capsys, args, needle):
    args = [str(run) if a == "RUN" else a for a in args]
    assert sim_main(args) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1, err
