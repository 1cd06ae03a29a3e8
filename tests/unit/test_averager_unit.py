"""train.LocalSGD without MPI (a one-rank backend), the SlowMo options of TrainConfig and the simulator's API."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

import sim
from sim.schedule import SyncSchedule
from train import LocalSGD, TrainConfig, TrainError


class Solo:
    """A one-rank backend: every collective is the identity; counts the calls."""

    rank, size, has_blocks = 0, 1, True

    def __init__(self) -> None:
        self.calls: list[str] = []

    def allreduce_mean(self, buf: torch.Tensor, level: str) -> None:
        self.calls.append(level)

    def allgather_bytes(self, send: np.ndarray, level: str) -> np.ndarray:
        return send.copy()

    def broadcast(self, buf: torch.Tensor, root: int = 0) -> None:
        self.calls.append("bcast")

    def group_size(self, level: str) -> int:
        return 1

    def barrier(self, level: str) -> None:
        raise AssertionError("LocalSGD must never call a barrier")


def _levels(avg: LocalSGD, n: int) -> list[str | None]:
    return [avg.step(lr=0.1) for _ in range(n)]


def test_import_train_does_not_start_mpi() -> None:
    code = "import sys, train, train.averager, train.backend; assert 'mpi4py' not in sys.modules, 'mpi4py'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_schedules_from_simple_arguments() -> None:
    lin = torch.nn.Linear(2, 2)
    b = Solo()
    avg = LocalSGD(lin, H=3, backend=b)
    assert b.calls == ["bcast"]
    assert _levels(avg, 9) == [None, None, "global"] * 3 and avg.steps == 9
    assert b.calls == ["bcast", "global", "global", "global"]
    fin = LocalSGD(lin, H=3, total_steps=5, backend=Solo())
    assert _levels(fin, 5) == [None, None, "global", None, "global"]  # the schedule's final sync
    hie = LocalSGD(lin, H=2, Hb=3, backend=Solo())
    assert _levels(hie, 12) == [None, "block", None, "block", None, "global"] * 2
    warm = LocalSGD(lin, H=4, warmup="exponential", warmup_steps=9, backend=Solo())
    got = [t for t, lvl in enumerate(_levels(warm, 16)) if lvl]
    assert got == [0, 1, 2, 4, 8, 12]
    sched = SyncSchedule(algorithm="postlocal", H=2, switch_step=3)
    post = LocalSGD(lin, schedule=sched, backend=Solo())
    phases = []
    for _ in range(7):
        phases.append(post.grad_phase)
        post.step()
    assert phases == [True] * 3 + [False] * 4


def test_grad_average_only_in_minibatch_steps_and_with_none_grads() -> None:
    lin = torch.nn.Linear(2, 2)
    b = Solo()
    avg = LocalSGD(lin, H=2, switch_step=1, backend=b)
    assert lin.weight.grad is None
    assert avg.average_gradients() is True  # step 0: mini-batch; a missing gradient counts as zero
    assert lin.weight.grad is not None and not lin.weight.grad.any()
    avg.step()
    assert avg.average_gradients() is False


def test_bad_arguments_name_the_value() -> None:
    lin = torch.nn.Linear(2, 2)
    with pytest.raises(TrainError, match="either schedule"):
        LocalSGD(lin, H=2, schedule=SyncSchedule(algorithm="local", H=2), backend=Solo())
    with pytest.raises(TrainError, match="buffers"):
        LocalSGD(lin, H=2, momentum_variant="slowmo", buffers="drop", backend=Solo())
    with pytest.raises(TrainError, match="pass optimizer"):
        LocalSGD(lin, H=2, momentum_variant="slowmo", buffers="reset", backend=Solo())
    opt = torch.optim.SGD(lin.parameters(), lr=0.1, momentum=0.9)
    with pytest.raises(TrainError, match="hybrid"):
        LocalSGD(lin, H=2, momentum_variant="global", optimizer=opt, backend=Solo())
    avg = LocalSGD(lin, H=1, momentum_variant="hybrid", global_momentum=0.5, backend=Solo())
    with pytest.raises(TrainError, match="learning rate"):
        avg.step()  # global momentum needs gamma: neither lr= nor optimizer=


def test_state_dict_round_trip() -> None:
    lin = torch.nn.Linear(3, 1)
    a = LocalSGD(lin, H=2, momentum_variant="slowmo", slow_lr=0.5, slow_momentum=0.9, lr=0.1, backend=Solo())
    with torch.no_grad():
        lin.weight.add_(1.0)
    _levels(a, 2)
    b = LocalSGD(lin, H=2, momentum_variant="slowmo", slow_lr=0.5, slow_momentum=0.9, lr=0.1, backend=Solo())
    b.load_state_dict(a.state_dict())
    assert b.steps == 2 and torch.equal(b.momentum_buf, a.momentum_buf) and b.momentum_buf.abs().sum() > 0
    c = LocalSGD(lin, H=2, backend=Solo())
    with pytest.raises(TrainError, match="momentum variant"):
        c.load_state_dict(a.state_dict())


def test_train_config_slowmo_options() -> None:
    cfg = TrainConfig(algorithm="local", momentum_variant="slowmo", slow_lr=0.5, slow_momentum=0.7)
    assert (cfg.slow_lr, cfg.slow_momentum, cfg.slow_buffers) == (0.5, 0.7, "keep")
    for kw, word in ((dict(slow_lr=0.5), "slowmo only"), (dict(momentum_variant="slowmo", slow_lr=0.0), "slow_lr"),
                     (dict(momentum_variant="slowmo", slow_buffers="average"), "slow_buffers"),
                     (dict(momentum_variant="slowmo", global_momentum=0.5), "global_momentum"),
                     (dict(momentum_variant="slowmo", algorithm="minibatch"), "minibatch")):
        with pytest.raises(TrainError, match=word):
            TrainConfig(**{"algorithm": "local", **kw})  # type: ignore[arg-type]


def test_simulator_charges_slowmo_nothing_extra() -> None:
    kw = dict(topology="paper-8x2-10gbps", K=16, B=32, epochs=2.0, algorithm="hierarchical", H=4, Hb=2)
    runs = {v: sim.simulate(**kw, momentum_variant=v).to_json() for v in ("local", "slowmo")}
    for r in runs.values():
        r.pop("sim_seconds")
    assert runs["local"] == runs["slowmo"] and runs["local"]["syncs_global"] > 0
    with pytest.raises(sim.SimError, match="momentum_variant"):
        sim.run_config(topology="paper-8x2-10gbps", K=16, momentum_variant="slow")


def test_trainer_prediction_of_slowmo_equals_local() -> None:
    from train.predict import predict
    base = dict(algorithm="local", H=16, epochs=1.0)
    p_local = predict(TrainConfig(**base), 8, "paper-8x2-10gbps")  # type: ignore[arg-type]
    p_slow = predict(TrainConfig(**base, momentum_variant="slowmo", slow_lr=0.5, slow_momentum=0.6),  # type: ignore[arg-type]
                     8, "paper-8x2-10gbps")
    assert p_local == p_slow and p_local["syncs_global"] > 0


def test_simulate_api_takes_a_config_or_arguments() -> None:
    cfg = sim.run_config(topology="paper-8x2-10gbps", K=8, B=32, N=8 * 32 * 40, algorithm="local", H=4)
    res = sim.simulate(cfg)
    assert isinstance(res, sim.RunResult) and res.syncs_global == 10 and res.wall_s > res.compute_s > 0
    with pytest.raises(sim.SimError, match="not both"):
        sim.simulate(cfg, K=8)


def test_trainer_creates_attributes_only_in_init() -> None:
    """Every `self.X = ...` in Trainer (and its records mixin) assigns an attribute that __init__ creates."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "train"
    made: set[str] = set()
    later: dict[str, str] = {}
    for name in ("trainer.py", "records.py"):
        for cls in ast.walk(ast.parse((root / name).read_text())):
            if not (isinstance(cls, ast.ClassDef) and cls.name in ("Trainer", "RecordsMixin")):
                continue
            for fn in cls.body:
                if not isinstance(fn, ast.FunctionDef):
                    continue
                for node in ast.walk(fn):
                    targets = node.targets if isinstance(node, ast.Assign) else \
                        [node.target] if isinstance(node, (ast.AnnAssign, ast.AugAssign)) else []
                    for t in targets:
                        for e in ast.walk(t):
                            if isinstance(e, ast.Attribute) and isinstance(e.value, ast.Name) and e.value.id == "self":
                                if fn.name == "__init__":
                                    made.add(e.attr)
                                else:
                                    later.setdefault(e.attr, f"{name}:{fn.name}")
    assert made and {a: w for a, w in later.items() if a not in made} == {}
