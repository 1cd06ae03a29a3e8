"""Parallel check bodies for gradient buckets, overlapped local SGD and the outer optimizer (any world size)."""
from __future__ import annotations

import copy
import hashlib

import torch
from mpi4py import MPI

import comm
from train.averager import LocalSGD, average_gradients
from train.backend import MPIBackend
from train.buckets import GradientBuckets

WORLD = MPI.COMM_WORLD


class Net(torch.nn.Module):
    """Layers of uneven sizes, and a parameter that never gets a gradient."""

    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Linear(7, 33)
        self.b = torch.nn.Linear(33, 65)
        self.c = torch.nn.Linear(65, 3)
        self.unused = torch.nn.Parameter(torch.ones(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c(torch.tanh(self.b(torch.tanh(self.a(x)))))


def _net(dtype=torch.float64) -> Net:
    torch.manual_seed(3)
    return Net().to(dtype)


def _batch(step: int, dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 * step + WORLD.rank)
    return torch.randn(16, 7, generator=g, dtype=dtype), torch.randn(16, 3, generator=g, dtype=dtype)


def _loss(model: torch.nn.Module, step: int) -> torch.Tensor:
    x, y = _batch(step, next(model.parameters()).dtype)
    return ((model(x) - y) ** 2).mean()


def _flat(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def _grads(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([(p.grad if p.grad is not None else torch.full_like(p, float("nan"))).flatten()
                      for p in model.parameters()])


def _identical(t: torch.Tensor, what: str) -> None:
    digests = WORLD.allgather(hashlib.sha256(t.detach().contiguous().numpy().tobytes()).hexdigest())
    assert len(set(digests)) == 1, f"{what}: ranks differ"


def check_buckets_bitwise_equal_unbucketed() -> None:
    """Bucketed gradients (small buckets, so every layer is split among several) are bitwise the unbucketed average
    with recursive doubling, Rabenseifner and auto (which runs the whole gradient's algorithm), for both progress
    kinds; the unused parameter averages to 0 on both paths; every rank agrees."""
    for alg in ("recursive_doubling", "rabenseifner", "auto"):
        for progress in ("thread", "poll"):
            ref, mine = _net(), _net()
            buckets = GradientBuckets(mine, bucket_bytes=600, first_bucket_bytes=100,
                                      backend=MPIBackend(algorithm=alg, progress=progress))
            assert len(buckets.buckets) >= 4, buckets.bucket_sizes
            for step in range(3):
                for m in (ref, mine):
                    m.zero_grad(set_to_none=True)
                    _loss(m, step).backward()
                average_gradients(ref, backend=MPIBackend(algorithm=alg))
                assert buckets.wait() is True
                a, b = _grads(ref), _grads(mine)
                assert torch.equal(a, b), f"{alg} {progress} step {step}: max diff {(a - b).abs().max()}"
                assert mine.unused.grad is not None and not mine.unused.grad.any()
                _identical(b, f"bucketed grads {alg} {progress}")
            buckets.remove()


def check_buckets_no_sync_and_when() -> None:
    """no_sync() accumulates without communicating; the next backward averages the sum. `when` returning False
    leaves the gradients alone and wait() says so."""
    ref, mine = _net(), _net()
    buckets = GradientBuckets(mine, bucket_bytes=1000, first_bucket_bytes=200,
                              backend=MPIBackend(algorithm="recursive_doubling"))
    with buckets.no_sync():
        _loss(mine, 1).backward()
    _loss(mine, 2).backward()
    buckets.wait()
    _loss(ref, 1).backward()
    _loss(ref, 2).backward()
    average_gradients(ref, backend=MPIBackend(algorithm="recursive_doubling"))
    assert torch.equal(_grads(ref)[:-5], _grads(mine)[:-5])
    off = GradientBuckets(_net(), when=lambda: False)
    model = off.buckets[0].params[0]
    assert off.wait() is False and model.grad is None


def check_localsgd_minibatch_buckets_bitwise() -> None:
    """LocalSGD's mini-batch steps with buckets train bitwise the same models as without (recursive doubling), and
    post-local SGD's local phase leaves the buckets idle."""
    finals = []
    for bucket in (None, 512):
        model = _net()
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
        avg = LocalSGD(model, H=2, switch_step=4, backend=MPIBackend(algorithm="recursive_doubling"),
                       bucket_bytes=bucket, first_bucket_bytes=128, total_steps=9)
        for step in range(9):
            opt.zero_grad()
            _loss(model, step).backward()
            assert avg.average_gradients() is (step < 4)
            opt.step()
            avg.step()
        finals.append(_flat(model))
    assert torch.equal(finals[0], finals[1])
    _identical(finals[1], "post-local with buckets")


def _replay(H: int, tau: int, T: int, progress: str) -> None:
    """LocalSGD(overlap) against a by-hand replay of x <- x + (avg(x_t) - x_t), compared after every step."""
    ours, ref = _net(), _net()
    opt_o = torch.optim.SGD(ours.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    opt_r = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    avg = LocalSGD(ours, H=H, overlap=True, overlap_steps=tau, total_steps=T, progress=progress,
                   backend=MPIBackend(algorithm="ring", progress=progress))
    pending = None
    for t in range(T):
        for m, o in ((ours, opt_o), (ref, opt_r)):
            o.zero_grad()
            _loss(m, t).backward()
            o.step()
        avg.step()
        if pending is not None and t == pending[0]:
            x = _flat(ref) + (pending[1] - pending[2])
            torch.nn.utils.vector_to_parameters(x, ref.parameters())
            pending = None
        if (t + 1) % H == 0 or t == T - 1:
            if pending is not None:  # not yet due (the run's last sync): applied first
                torch.nn.utils.vector_to_parameters(_flat(ref) + (pending[1] - pending[2]), ref.parameters())
                pending = None
            snap = _flat(ref)
            if t == T - 1:
                torch.nn.utils.vector_to_parameters(comm.allreduce(snap.clone(), op="mean", algorithm="ring"),
                                                    ref.parameters())
            else:
                pending = (t + tau, comm.allreduce(snap.clone(), op="mean", algorithm="ring"), snap)
        assert torch.equal(_flat(ours), _flat(ref)), f"H={H} tau={tau} {progress}: step {t} differs"
    _identical(_flat(ours), f"overlap H={H} tau={tau} end of run")


def check_overlap_rule_replayed() -> None:
    for H, tau, T, progress in ((3, 1, 11, "thread"), (4, 4, 13, "poll"), (2, 2, 7, "thread")):
        _replay(H, tau, T, progress)


def check_overlap_resume_bitwise() -> None:
    """A state taken while a sync is in flight, loaded into fresh objects (which start its all-reduce again),
    continues to the same final models as the uninterrupted run; with SlowMo and with the outer optimizer."""
    for kw in ({"momentum_variant": "slowmo", "slow_lr": 0.5, "slow_momentum": 0.5},
               {"outer_optimizer": "nesterov", "outer_lr": 0.7, "outer_momentum": 0.9}, {}):
        T, cut = 14, 7  # H = 3, tau = 2: the sync after step 5 is pending through steps 6 and 7

        def make(T: int = T, kw: dict = kw):
            model = _net()
            opt = torch.optim.SGD(model.parameters(), lr=0.125, momentum=0.9, nesterov=True)
            avg = LocalSGD(model, H=3, overlap=True, overlap_steps=2, total_steps=T, optimizer=opt, lr=0.125,
                           backend=MPIBackend(algorithm="rabenseifner"), **kw)
            return model, opt, avg

        def run(model, opt, avg, steps):
            for t in steps:
                opt.zero_grad()
                _loss(model, t).backward()
                opt.step()
                avg.step()

        whole = make()
        run(*whole, range(T))
        first = make()
        run(*first, range(cut))
        assert first[2].overlap is not None and first[2].overlap.pending is not None
        state = copy.deepcopy({"model": first[0].state_dict(), "opt": first[1].state_dict(),
                               "avg": first[2].state_dict()})
        first[2].drain()  # the abandoned run's request completes (every rank started it)
        second = make()
        second[0].load_state_dict(state["model"])
        second[1].load_state_dict(state["opt"])
        second[2].load_state_dict(state["avg"])
        run(*second, range(cut, T))
        assert torch.equal(_flat(whole[0]), _flat(second[0])), f"{kw}: resumed run differs"
        _identical(_flat(second[0]), f"resumed {kw}")


def check_outer_sgd_is_slowmo() -> None:
    """At K ranks: the outer optimizer sgd (lr alpha, momentum beta) equals SlowMo(alpha, beta) bitwise (base lr a
    power of two), blocking and overlapped alike."""
    for overlap in (False, True):
        finals = []
        for kw in ({"momentum_variant": "slowmo", "slow_lr": 0.5, "slow_momentum": 0.7},
                   {"outer_optimizer": "sgd", "outer_lr": 0.5, "outer_momentum": 0.7}):
            model = _net()
            opt = torch.optim.SGD(model.parameters(), lr=0.25, momentum=0.9)
            avg = LocalSGD(model, H=2, total_steps=10, optimizer=opt, overlap=overlap,
                           backend=MPIBackend(algorithm="recursive_doubling"), **kw)
            for t in range(10):
                opt.zero_grad()
                _loss(model, t).backward()
                opt.step()
                avg.step()
            finals.append(_flat(model))
        assert torch.equal(finals[0], finals[1]), f"overlap={overlap}"


def check_overlap_hierarchical_counts() -> None:
    """Hierarchical overlapped local SGD with global momentum over virtual blocks: the hooks count every sync the
    schedule has, overlapped ones without a barrier, and the run ends with identical models."""
    from train.sync import SyncTimer

    g = 2 if WORLD.size % 2 == 0 else 1
    model = _net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    backend = MPIBackend(hierarchical=True, gpus_per_node=g)
    timer = SyncTimer(backend)
    avg = LocalSGD(model, H=2, Hb=2, total_steps=15, optimizer=opt, backend=backend, hooks=timer,
                   momentum_variant="global", global_momentum=0.5, overlap=True)
    for t in range(15):
        opt.zero_grad()
        _loss(model, t).backward()
        opt.step()
        avg.step()
    counts = avg.schedule.counts(15)
    assert {lvl: timer.stats[lvl]["syncs"] for lvl in ("block", "global")} == counts, timer.stats
    assert timer.stats["global"]["inflight_s"] > 0 and timer.stats["block"]["wait_s"] == 0.0
    _identical(_flat(model), "hierarchical overlap")
