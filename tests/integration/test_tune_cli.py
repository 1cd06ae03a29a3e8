"""`python -m train tune`: bad input, a real tiny tune that pauses and resumes its run, and the resume of a killed tune
from its records (with a fake trainer that writes run folders instead of training)."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

import train.tune as tune_mod
from tests.parallel.harness import REPO, mpi_env
from train.cli import main as train_main

TINY = ["--model", "logreg", "--synthetic-size", "4", "--synthetic-train", "256", "--synthetic-test", "128",
        "--synthetic-noise", "2", "--eval-every", "0.25", "--lr-warmup-epochs", "0"]


@pytest.mark.parametrize("args,needle", [
    (["tune", "--target-acc", "0.5"], "tune needs --on CLUSTER and exactly one of --target-acc A or --target-loss L"),
    (["tune", "--on", "nope", "--target-acc", "0.5"], "--on: unknown preset or missing topology file 'nope'"),
    (["tune", "--on", "paper-8x2-10gbps", "--target-acc", "0.5", "--", "--H", "4"],
     "--H is a tuning axis: give it to train tune before --"),
    (["tune", "--on", "paper-8x2-10gbps", "--target-acc", "0.5", "--", "--out-dir", "x"],
     "--out-dir after -- is the tuner's to set (--out)"),
    (["tune", "--on", "paper-8x2-10gbps", "--target-acc", "0.5", "--nodes", "4"],
     "--nodes, --network and --load apply to a machine file"),
    (["tune", "--on", "paper-8x2-10gbps", "--target-acc", "1.5"], "--target-acc must be a fraction in (0, 1], got 1.5"),
    (["tune", "--on", "paper-8x2-10gbps", "--target-acc", "0.5", "--K", "2,x"], "argument --K: expected comma-"),
    (["tune", "--on", "paper-8x2-10gbps", "--target-acc", "0.5", "--budget", "soon"],
     "argument --budget: expected a duration like 600, 600s, 15m or 1.5h, got 'soon'"),
    (["tune", "--on", "paper-8x2-10gbps", "--target-acc", "0.5", "--", "--epochs", "-1"],
     "--epochs must be a finite number > 0.0, got -1.0"),
    (["tune", "--on", "paper-8x2-10gbps", "--target-acc", "0.5", "--H", "0", "--", *TINY],
     "--H must be an integer >= 1, got 0"),
    (["tune", "--on", "paper-8x2-10gbps", "--target-acc", "0.5", "--K", "3", "--", *TINY],
     "no candidate is left to tune: local H=1 K=3 B=32: the cluster refuses it: K must be a multiple of"),
])
def test_bad_input_is_one_line_before_any_run(tmp_path, capsys, monkeypatch, args, needle):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) if "argument" in needle else _nothing() as done:
        assert train_main(args) == 2
    if done is not None and hasattr(done, "value"):
        assert done.value.code == 2
    err = capsys.readouterr().err
    assert needle in err and err.strip().count("\n") == 0, err
    assert not (tmp_path / "runs").exists()


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return False


def _real(tmp_path: Path, engine: str, *extra: str) -> list[str]:
    return ["tune", "--on", "paper-8x2-10gbps", "--target-acc", "0.7", "--K", "2", "--H", "4", "--seeds", "1",
            "--finalists", "1", "--rungs", "2", "--engine", engine, "--quiet", "--out", str(tmp_path / "t"), *extra,
            "--", *TINY, "--epochs", "1"]


@pytest.mark.parametrize("engine", ["mpi", "virtual"])
def test_a_real_tune_pauses_resumes_and_is_not_redone(tmp_path, capsys, monkeypatch, engine):
    for k, v in mpi_env().items():
        monkeypatch.setenv(k, v)
    monkeypatch.chdir(REPO)
    assert train_main(_real(tmp_path, engine)) == 0
    out = capsys.readouterr().out
    log = [json.loads(x) for x in (tmp_path / "t" / "tune.jsonl").read_text().splitlines()]
    runs = [r for r in log if r["kind"] == "run"]
    # rung 0 ends at 0.5 epochs (a pause), then the same run resumes to the full epoch (the finalist's seed 0)
    head = [str(Path(sys.executable).with_name("mpirun")), "-n", "2"] if engine == "mpi" else \
        [sys.executable, "-m", "train", "--engine", "virtual", "--workers", "2"]
    assert [(r["epochs"], "--resume" in r["command"], r["command"][:len(head)], r["engine"]) for r in runs] == \
        [(0.5, False, head, engine), (1.0, True, head, engine)]
    summary = json.loads((tmp_path / "t" / "runs" / "c00-s0" / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps_done"] == summary["total_steps"]
    assert summary.get("engine", "mpi") == engine
    result = json.loads((tmp_path / "t" / "result.json").read_text())
    top = result["ranked"][0]
    assert top["cid"] == "c00" and top["engine"] == engine and top["seeds"] == 1
    assert top["tta_median_s"] is not None and top["tta_median_s"] > 0, "the tiny task reaches 70 %"
    assert "pick: c00 local H=4 K=2 B=32; run it with: mpirun -n 2 python -m train" in out
    # the same command again: everything is on disk, nothing runs, the same table comes out
    assert train_main(_real(tmp_path, engine)) == 0
    again = capsys.readouterr().out
    assert again == out
    assert sum(1 for x in (tmp_path / "t" / "tune.jsonl").read_text().splitlines()
               if json.loads(x)["kind"] == "run") == 2


class FakeTrainer:
    """Stands in for `launch`: writes the run folder a trainer would (config, evaluations, summary) with accuracy
    1 - exp(-epoch * 4 / sqrt(H)) at every quarter epoch, and can be 'killed' at its n-th launch."""

    def __init__(self, kill_at: int | None = None) -> None:
        self.calls: list[list[str]] = []
        self.kill_at = kill_at

    def __call__(self, cmd: list[str], log_path: Path) -> tuple[int, float]:
        from train.cli import build_parser, config_from_args
        from train.plan import RunPlan
        self.calls.append(cmd)
        if self.kill_at is not None and len(self.calls) == self.kill_at:
            raise KeyboardInterrupt
        K = int(cmd[cmd.index("-n") + 1])
        args = cmd[cmd.index("train") + 1:]
        stop = float(args[args.index("--stop-at-epoch") + 1]) if "--stop-at-epoch" in args else None
        if "--resume" in args:
            run = Path(args[args.index("--resume") + 1])
            cfg_d = json.loads((run / "config.json").read_text())["config"]
            from train.config import TrainConfig
            cfg = TrainConfig(**{**cfg_d, "lr_decay_at": tuple(cfg_d["lr_decay_at"]), "stragglers": ()})
        else:
            run = Path(args[args.index("--out-dir") + 1])
            keep = [a for a in args if a not in ("--quiet", "--no-progress")]
            if "--stop-at-epoch" in keep:
                i = keep.index("--stop-at-epoch")
                del keep[i:i + 2]
            cfg = config_from_args(build_parser().parse_args(["run", *keep]))
        plan = RunPlan.build(cfg, workers=K, n_train=cfg.synthetic_train)
        run.mkdir(parents=True, exist_ok=True)
        (run / "config.json").write_text(json.dumps({
            "config": cfg.to_dict(), "plan": plan.to_dict(), "model_params": 60, "payload_bytes": 240,
            "gflops_per_sample": 1e-7, "dataset": {"n_train": cfg.synthetic_train, "n_test": cfg.synthetic_test}}))
        end = cfg.epochs if stop is None else stop
        T = plan.total_steps
        h = 1 if cfg.algorithm == "minibatch" else cfg.H
        with open(run / "metrics.jsonl", "w") as fh:
            for t in range(T):
                e = plan.epoch_after(t)
                if e > end + 1e-9:
                    break
                if plan.crosses(t, cfg.eval_every) or t == T - 1:
                    acc = 1 - math.exp(-e * 4 / math.sqrt(h)) - 0.001 * cfg.seed
                    fh.write(json.dumps({"kind": "epoch", "step": t, "epoch": e, "wall_s": e, "train_s": e,
                                         "test_acc": acc, "test_loss": 1 - acc}) + "\n")
        done = min(T, math.ceil(end * plan.steps_per_epoch - 1e-9))
        (run / "summary.json").write_text(json.dumps({
            "status": "completed" if stop is None else "paused", "epochs_done": done / plan.steps_per_epoch,
            "steps_done": done, "wall_s": end}))
        return 0, 0.01


def _fake(tmp_path: Path) -> list[str]:
    return ["tune", "--on", "paper-8x2-10gbps", "--target-acc", "0.9", "--K", "2", "--H", "1,4,16,64",
            "--seeds", "2", "--finalists", "2", "--rungs", "3", "--engine", "mpi", "--quiet", "--out",
            str(tmp_path / "t"), "--", *TINY, "--epochs", "2"]


def test_a_killed_tune_resumes_from_its_records_without_redoing_runs(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    whole = FakeTrainer()
    monkeypatch.setattr(tune_mod, "launch", whole)
    assert train_main(_fake(tmp_path / "whole")) == 0
    expected = capsys.readouterr().out
    # the same tune, killed at its 5th launch, then run again
    killed = FakeTrainer(kill_at=5)
    monkeypatch.setattr(tune_mod, "launch", killed)
    assert train_main(_fake(tmp_path)) == 130
    assert "--resume" in capsys.readouterr().err
    again = FakeTrainer()
    monkeypatch.setattr(tune_mod, "launch", again)
    assert train_main(["tune", "--resume", str(tmp_path / "t")]) == 0
    assert capsys.readouterr().out.replace(str(tmp_path / "t"), "T") == expected.replace(
        str(tmp_path / "whole" / "t"), "T")
    # nothing finished before the kill is run again: 4 launches were done, the 5th was killed
    assert len(killed.calls[:4]) + len(again.calls) == len(whole.calls)
    assert list(whole.calls[4:]) != [] and len(again.calls) == len(whole.calls) - 4
    log = [json.loads(x) for x in (tmp_path / "t" / "tune.jsonl").read_text().splitlines()]
    keys = [r["key"] for r in log]
    assert len(keys) == len(set(keys))                      # each decision logged once across both sessions
    decisions = {(r["cid"], r["rung"]): (r["action"], r["reason"]) for r in log if r["kind"] == "decision"}
    # rung 0 (0.5 epochs): the curves of H = 16 and 64 (slower per epoch, and a tiny model's syncs cost little on
    # the preset) are behind at the common time and halved away; rung 1: H = 1 reaches 90 %, and H = 4, whose clock
    # is past that time without reaching it, cannot win
    assert [decisions[(c, 0)][0] for c in ("c00", "c01", "c02", "c03")] == ["continue", "continue", "stopped",
                                                                             "stopped"]
    assert decisions[("c00", 1)][0] == "finished" and decisions[("c01", 1)][1].startswith("cannot win")
    result = json.loads((tmp_path / "t" / "result.json").read_text())
    assert [(r["cid"], r["seeds"], r["seeds_reached"]) for r in result["ranked"]] == [("c00", 2, 2)]
