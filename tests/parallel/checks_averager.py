"""Parallel checks of train.LocalSGD: against torch's own model averagers (gloo), SlowMo, hooks, checkpoints."""
from __future__ import annotations

import copy
import tempfile
from collections import OrderedDict
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from mpi4py import MPI

from train import LocalSGD, MPIBackend, TorchBackend, average_gradients

WORLD = MPI.COMM_WORLD
# Float64 models; ours and torch's round differently at each average (torch divides by K before a gloo SUM, our
# comm sums in recursive-doubling order and divides after; the orders of the K-term sums differ), a few ulp per
# sync, which the following local steps carry along without amplifying much over a dozen steps. 1e-12 is about
# 5000 ulp of the parameters' magnitude (~1): far above that rounding, far below any real difference (a missed or
# extra average moves parameters by ~1e-3 here, checked below).
TOL = 1e-12
WORST: dict[str, float] = {}  # largest |ours - torch| seen per check and backend, printed for the docs


def _gloo() -> None:
    """One gloo process group over the MPI ranks (a file store in a fresh temporary path; no network port)."""
    if not dist.is_initialized():
        path = WORLD.bcast(tempfile.mktemp(prefix="gloo-store-") if WORLD.Get_rank() == 0 else None, root=0)
        dist.init_process_group("gloo", init_method=f"file://{path}", rank=WORLD.Get_rank(),
                                world_size=WORLD.Get_size())


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 4)).double()


def _batches(T: int, B: int = 8) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """This rank's own data order: different on every rank, the same for both sides of a comparison."""
    g = torch.Generator().manual_seed(1000 + WORLD.Get_rank())
    return [(torch.randn(B, 8, generator=g, dtype=torch.float64), torch.randint(0, 4, (B,), generator=g))
            for _ in range(T)]


def _flat(model: torch.nn.Module) -> np.ndarray:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).numpy().copy()


def _opt(model: torch.nn.Module, momentum: float = 0.9) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=0.1, momentum=momentum, nesterov=momentum > 0)


def _loss(model: Any, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cross_entropy(model(x), y)


def _backend(kind: str, block: int | None = None) -> Any:
    if kind == "mpi":
        return MPIBackend(hierarchical=block is not None, gpus_per_node=block)
    return TorchBackend(block_size=block)


def _compare(ours: torch.nn.Module, theirs: torch.nn.Module, t: int, synced: bool, key: str = "") -> None:
    a, b = _flat(ours), _flat(theirs)
    err = float(np.abs(a - b).max())
    WORST[key] = max(WORST.get(key, 0.0), err)
    assert err < TOL, f"step {t}: ours and torch's models differ by {err} (tolerance {TOL})"
    models = WORLD.allgather(a)
    spread = max(float(np.abs(m - models[0]).max()) for m in models)
    if synced:
        assert spread < TOL, f"step {t}: models differ across ranks by {spread} right after a sync"
    elif WORLD.Get_size() > 1:
        assert spread > 1e-6, f"step {t}: models should differ between syncs (spread {spread})"


def check_periodic_matches_torch() -> None:
    """LocalSGD(H) = PeriodicModelAverager(period=H, warmup_steps=H-1): torch averages when its counter (from 0)
    reaches warmup_steps and every period after it; ours after every H local steps."""
    from torch.distributed.algorithms.model_averaging.averagers import PeriodicModelAverager
    _gloo()
    H, T = 3, 12
    for kind in ("mpi", "torch"):
        ours, theirs = _model(), _model()
        o_opt, t_opt = _opt(ours), _opt(theirs)
        avg = LocalSGD(ours, H=H, backend=_backend(kind))
        ref = PeriodicModelAverager(period=H, warmup_steps=H - 1)
        for t, (x, y) in enumerate(_batches(T)):
            for m, o in ((ours, o_opt), (theirs, t_opt)):
                o.zero_grad(set_to_none=True)
                _loss(m, x, y).backward()
                o.step()
            level = avg.step()
            ref.average_parameters(theirs.parameters())
            assert level == ("global" if t % H == H - 1 else None), (t, level)
            _compare(ours, theirs, t, level is not None, f"periodic/{kind}")


def check_postlocal_matches_torch() -> None:
    """Post-local SGD (switch at S, then H) = DDP with post_localSGD_hook(start_localSGD_iter=S) and
    PostLocalSGDOptimizer(PeriodicModelAverager(period=H, warmup_steps=S+H-1))."""
    from torch.distributed.algorithms.ddp_comm_hooks.post_localSGD_hook import PostLocalSGDState, post_localSGD_hook
    from torch.distributed.algorithms.model_averaging.averagers import PeriodicModelAverager
    from torch.distributed.optim import PostLocalSGDOptimizer
    _gloo()
    S, H, T = 4, 3, 13
    for kind in ("mpi", "torch"):
        ours, module = _model(), _model()
        ddp = torch.nn.parallel.DistributedDataParallel(module)
        ddp.register_comm_hook(PostLocalSGDState(process_group=None, subgroup=None, start_localSGD_iter=S,
                                                 post_local_gradient_allreduce=False), post_localSGD_hook)
        o_opt = _opt(ours)
        t_opt = PostLocalSGDOptimizer(_opt(module), PeriodicModelAverager(period=H, warmup_steps=S + H - 1))
        avg = LocalSGD(ours, H=H, switch_step=S, backend=_backend(kind))
        for t, (x, y) in enumerate(_batches(T)):
            o_opt.zero_grad(set_to_none=True)
            _loss(ours, x, y).backward()
            assert avg.average_gradients() == (t < S)
            o_opt.step()
            level = avg.step()
            t_opt.zero_grad(set_to_none=True)
            _loss(ddp, x, y).backward()
            t_opt.step()
            expect = t < S or (t - S) % H == H - 1
            assert (level is not None) == expect, (t, level)
            _compare(ours, module, t, expect, f"postlocal/{kind}")


def check_hierarchical_matches_torch() -> None:
    """Hierarchical (H, Hb, blocks of G consecutive ranks) = HierarchicalModelAverager({H: G, H*Hb: K}) whose step
    counter starts at 1: torch averages when step % period == 0 (the largest period wins), ours after H local
    steps, every Hb-th sync global."""
    from torch.distributed.algorithms.model_averaging.hierarchical_model_averager import HierarchicalModelAverager
    _gloo()
    K = WORLD.Get_size()
    G, H, Hb, T = max(1, K // 2), 2, 2, 12
    for kind in ("mpi", "torch"):
        ours, theirs = _model(), _model()
        o_opt, t_opt = _opt(ours), _opt(theirs)
        avg = LocalSGD(ours, H=H, Hb=Hb, backend=_backend(kind, G))
        ref = HierarchicalModelAverager(OrderedDict([(H, G), (H * Hb, K)]), warmup_steps=0)
        ref.step = 1
        node = WORLD.Split(WORLD.Get_rank() // G, WORLD.Get_rank())
        for t, (x, y) in enumerate(_batches(T)):
            for m, o in ((ours, o_opt), (theirs, t_opt)):
                o.zero_grad()
                _loss(m, x, y).backward()
                o.step()
            level = avg.step()
            ref.average_parameters(theirs.parameters())
            want = None if (t + 1) % H else ("global" if (t + 1) % (H * Hb) == 0 else "block")
            assert level == want, (t, level, want)
            _compare(ours, theirs, t, level == "global", f"hierarchical/{kind}")
            if level == "block":
                inside = node.allgather(_flat(ours))
                assert max(float(np.abs(m - inside[0]).max()) for m in inside) < TOL, f"block sync at step {t}"
        node.Free()


def _run(avg_kw: dict[str, Any], T: int, momentum: float = 0.9, state: dict[str, Any] | None = None,
         start: int = 0) -> tuple[torch.nn.Module, torch.optim.Optimizer, LocalSGD]:
    model = _model()
    opt = _opt(model, momentum)
    avg = LocalSGD(model, optimizer=opt, **avg_kw)
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        avg.load_state_dict(state["avg"])
    for x, y in _batches(T)[start:]:
        opt.zero_grad(set_to_none=True)
        _loss(model, x, y).backward()
        avg.average_gradients()
        opt.step()
        avg.step()
    return model, opt, avg


def check_slowmo_alpha1_is_hybrid_bitwise() -> None:
    a, _, _ = _run(dict(H=2, momentum_variant="slowmo", slow_lr=1.0, slow_momentum=0.6), 10)
    b, _, _ = _run(dict(H=2, momentum_variant="hybrid", global_momentum=0.6), 10)
    c, _, _ = _run(dict(H=2, momentum_variant="slowmo", slow_lr=0.5, slow_momentum=0.6), 10)
    assert np.array_equal(_flat(a), _flat(b)), "slowmo with slow_lr 1 must equal hybrid momentum bitwise"
    assert np.abs(_flat(a) - _flat(c)).max() > 1e-6, "slow_lr 0.5 should change the run"


def check_slowmo_update_replayed() -> None:
    """u = beta u + (x_anchor - mean_k x_k) / gamma; x_anchor -= alpha gamma u: an independent float64 replay."""
    alpha, beta, lr, H = 0.7, 0.5, 0.1, 2
    model = _model()
    opt = _opt(model)
    avg = LocalSGD(model, H=H, optimizer=opt, momentum_variant="slowmo", slow_lr=alpha, slow_momentum=beta)
    anchor, u, n = _flat(model), np.zeros(_flat(model).size), 0
    for t, (x, y) in enumerate(_batches(8)):
        opt.zero_grad()
        _loss(model, x, y).backward()
        opt.step()
        mean = np.mean(WORLD.allgather(_flat(model)), axis=0)
        if avg.step() == "global":
            u = beta * u + (anchor - mean) / lr
            anchor = anchor - alpha * lr * u
            assert np.abs(_flat(model) - anchor).max() < 1e-12, f"step {t}"
            n += 1
    assert n == 4 and np.abs(u).max() > 0


def check_slowmo_buffer_policies() -> None:
    for policy in ("reset", "average"):
        _, opt, avg = _run(dict(H=3, momentum_variant="slowmo", slow_lr=0.8, slow_momentum=0.5, buffers=policy), 6)
        bufs = torch.cat([opt.state[p]["momentum_buffer"].reshape(-1) for p in avg.params]).numpy()
        everywhere = WORLD.allgather(bufs)
        if policy == "reset":
            assert not bufs.any(), "reset must zero the momentum buffers at the global sync"
        else:
            assert bufs.any() and all(np.array_equal(b, everywhere[0]) for b in everywhere)


def check_state_dict_resumes_bitwise() -> None:
    """Stop after 5 steps, rebuild model, optimiser and averager from their state dicts: the same final model."""
    kw = dict(H=3, switch_step=2, momentum_variant="slowmo", slow_lr=0.8, slow_momentum=0.5)
    full, _, _ = _run(kw, 11)
    part, opt, avg = _run(kw, 5)
    assert avg.steps == 5
    state = {"model": copy.deepcopy(part.state_dict()), "opt": copy.deepcopy(opt.state_dict()),
             "avg": avg.state_dict()}
    resumed, _, avg2 = _run(kw, 11, state=state, start=5)
    assert avg2.steps == 11 and np.array_equal(_flat(resumed), _flat(full))


def check_set_to_none_and_helper() -> None:
    """zero_grad(set_to_none=True) and False give the same bitwise run; average_gradients(model) is the mean."""
    model = _model()
    x, y = _batches(1)[0]
    _loss(model, x, y).backward()
    mine = torch.cat([p.grad.reshape(-1) for p in model.parameters()]).numpy().copy()
    average_gradients(model)
    mean = np.mean(WORLD.allgather(mine), axis=0)
    got = torch.cat([p.grad.reshape(-1) for p in model.parameters()]).numpy()
    assert np.abs(got - mean).max() < 1e-14
    runs = []
    for none in (True, False):
        m = _model()
        o = _opt(m)
        avg = LocalSGD(m, H=2, switch_step=3)
        for xb, yb in _batches(7):
            o.zero_grad(set_to_none=none)
            _loss(m, xb, yb).backward()
            avg.average_gradients()
            o.step()
            avg.step()
        runs.append(_flat(m))
    assert np.array_equal(runs[0], runs[1])


class _Hooks:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, int]] = []

    def before_sync(self, level: str) -> None:
        self.calls.append(("before", level, 0))

    def after_sync(self, level: str, sent: int, recv: int) -> None:
        self.calls.append(("after", level, sent))


def check_hooks_and_bad_input() -> None:
    hooks = _Hooks()
    model = _model()
    avg = LocalSGD(model, H=2, hooks=hooks, total_steps=5)
    nbytes = sum(p.numel() for p in model.parameters()) * 8
    for _ in range(5):
        avg.step()
    # syncs after steps 1, 3 and the forced final sync after step 4
    assert hooks.calls == [("before", "global", 0), ("after", "global", nbytes)] * 3, hooks.calls
    for kw, word in ((dict(H=0), "H"), (dict(H=2, momentum_variant="fast"), "momentum_variant"),
                     (dict(H=2, momentum_variant="slowmo", slow_lr=0.0), "slow_lr"),
                     (dict(H=2, compress="sign", momentum_variant="global"), "compress"),
                     (dict(H=2, Hb=2), "blocks"), (dict(), "H")):
        try:
            LocalSGD(model, backend=MPIBackend(), **kw)
        except Exception as e:
            assert word in str(e), (kw, e)
        else:
            raise AssertionError(f"LocalSGD({kw}) should have raised")


def check_report_worst() -> None:
    """Not a check of its own: prints the largest differences from torch seen by the checks before it."""
    worst = WORLD.allreduce(max(WORST.values(), default=0.0), op=MPI.MAX)
    if WORLD.Get_rank() == 0:
        print(f"K={WORLD.Get_size()} largest |ours - torch| per check: "
              + ", ".join(f"{k} {v:.1e}" for k, v in sorted(WORST.items())) + f" (all ranks: {worst:.1e})", flush=True)


def check_trainer_slowmo() -> None:
    """The trainer with --momentum-variant slowmo: alpha = 1 is hybrid momentum bitwise; reset zeroes buffers."""
    from tests.parallel.checks_train import _final, tiny
    common = dict(algorithm="local", H=3, epochs=1.0)
    hyb, a = _final(tiny(momentum_variant="hybrid", global_momentum=0.4, **common))
    slo, b = _final(tiny(momentum_variant="slowmo", slow_lr=1.0, slow_momentum=0.4, **common))
    assert np.array_equal(a, b), f"slowmo alpha=1 differs from hybrid by {np.abs(a - b).max()}"
    assert slo.sync.stats["global"]["bytes"] == hyb.sync.stats["global"]["bytes"] > 0  # no extra communication
    _, c = _final(tiny(momentum_variant="slowmo", slow_lr=0.5, slow_momentum=0.4, **common))
    assert np.abs(a - c).max() > 1e-6
    rst, _ = _final(tiny(momentum_variant="slowmo", slow_lr=0.5, slow_momentum=0.4, slow_buffers="reset", **common))
    bufs = [rst.opt.state[p]["momentum_buffer"] for p in rst.averager.params]
    assert all(not b.any() for b in bufs), "reset: the run ends with a global sync, so the buffers are zero"
