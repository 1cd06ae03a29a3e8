"""Hiding communication, without MPI: bucket plans, the simulator's overlap timing in closed form, the outer
optimizer against SlowMo, the overlap rule on one rank, configuration and command-line refusals."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from sim.compute import ComputeModel, ModelSpec
from sim.errors import SimError
from sim.overlap import bucket_finish, parse_bytes, uniform_buckets
from sim.run import RunConfig, simulate
from sim.schedule import SyncSchedule
from sim.topology import Level, Topology
from train.buckets import plan_buckets
from train.config import TrainConfig
from train.errors import TrainError
from train.gradprofile import grad_readiness, predicted_buckets


def test_parse_bytes():
    assert parse_bytes("0") == 0 and parse_bytes("256K") == 262144 and parse_bytes("1M") == 1 << 20
    assert parse_bytes("64kib") == 65536 and parse_bytes("1000") == 1000
    for bad in ("", "1.5M", "-1", "4Q"):
        with pytest.raises(ValueError, match="byte count"):
            parse_bytes(bad)


def test_plan_buckets_caps_and_order():
    # the first bucket closes at its own (smaller) cap; a tensor above the cap is a bucket of its own
    assert plan_buckets([10, 10, 10, 50, 5, 5, 30], bucket_bytes=40, first_bucket_bytes=15) == \
        [[0, 1], [2, 3], [4, 5, 6]]
    assert plan_buckets([100], 10, 10) == [[0]]
    assert plan_buckets([1, 1, 1], 1000, 1000) == [[0, 1, 2]]
    with pytest.raises(TrainError, match="bucket_bytes must be an integer >= 1, got 0"):
        plan_buckets([1], 0, 1)


def test_uniform_buckets_cover_the_payload():
    b = uniform_buckets(1000.0, 300, 100)
    assert [n for n, _ in b] == [100, 300, 300, 300] and b[-1][1] == pytest.approx(1.0)
    assert b[0][1] == pytest.approx(1 / 3 + 2 / 3 * 0.1)  # forward, then 10 % of the backward
    assert [f for _, f in b] == sorted(f for _, f in b)


def test_grad_readiness_follows_backward_order():
    """A 3-layer MLP: the last layer's gradients come first (just after the forward third), the first layer's at
    the very end; the predicted buckets are ready in order and hold every byte."""
    model = torch.nn.Sequential(torch.nn.Linear(8, 64), torch.nn.ReLU(), torch.nn.Linear(64, 64),
                                torch.nn.ReLU(), torch.nn.Linear(64, 4))
    g = grad_readiness(model, torch.zeros(1, 8))
    # reverse registration order: bias and weight of layer 4, then layer 2, then layer 0
    fr = [f for _, f in g]
    assert fr[0] == fr[1] < fr[2] == fr[3] < fr[4] == fr[5] == pytest.approx(1.0)
    flops = [8 * 64, 64 * 64, 64 * 4]  # multiply-adds per layer, counted twice by torch (x2 cancels)
    total = sum(flops)
    assert fr[0] == pytest.approx((total + 2 * flops[2]) / (3 * total))
    buckets = predicted_buckets(g, bucket_bytes=4 * 4096, first_bucket_bytes=1)
    assert sum(n for n, _ in buckets) == sum(p.numel() * 4 for p in model.parameters())
    assert [f for _, f in buckets] == sorted(f for _, f in buckets)


def _topo(bw_GBps: float, step_s: float) -> Topology:
    lvl = Level(name="inter", latency_s=0.0, bandwidth_GBps=bw_GBps, overhead_s=0.0, gamma_s_per_byte=0.0)
    return Topology(name="t", nodes=4, gpus_per_node=1, intra=lvl, inter=lvl,
                    compute=ComputeModel(kind="fixed", device="cpu", seconds_per_iter=(step_s,)))


MODEL = ModelSpec(name="m", params=250_000, gflops_per_sample=0.001, train_samples=1000)  # 1 MB


def _run(schedule: SyncSchedule, *, bw: float, tau: int = 0, buckets=(), delay: float = 0.0, N: int = 32 * 4 * 24):
    return simulate(RunConfig(topology=_topo(bw, 0.1), model=MODEL, K=4, B=32, N=N, schedule=schedule,
                              allreduce="ring", overlap_steps=tau, buckets=buckets, delay_global_s=delay))


def test_overlapped_sync_is_hidden_up_to_the_compute_it_overlaps():
    """24 steps of 0.1 s, H = 4: 6 syncs, the last one blocking. A ring all-reduce of 1 MB over 4 ranks moves
    1.5 MB per rank: 0.0015 s at 1 GB/s (hidden by tau = 1 step), 0.15 s at 0.01 GB/s (0.05 s left per sync with
    tau = 1, nothing left with tau = 2)."""
    sched = SyncSchedule(algorithm="local", H=4)
    fast = _run(sched, bw=1.0, tau=1)
    blocking = _run(sched, bw=0.01)
    one_sync = blocking.comm_inter_s / 6
    assert one_sync == pytest.approx(0.15, rel=0.01)
    assert fast.wall_s == pytest.approx(2.4 + 0.0015, rel=1e-3)
    slow1, slow2 = _run(sched, bw=0.01, tau=1), _run(sched, bw=0.01, tau=2)
    assert blocking.wall_s == pytest.approx(2.4 + 6 * one_sync, rel=1e-6)
    assert slow1.wall_s == pytest.approx(2.4 + 5 * (one_sync - 0.1) + one_sync, rel=1e-6)
    assert slow2.wall_s == pytest.approx(2.4 + one_sync, rel=1e-6)
    assert slow2.hidden_s == pytest.approx(5 * one_sync, rel=1e-6) and slow2.syncs_global == 6
    # a delay is hidden the same way: 0.15 s of wire + 0.04 s of delay fit into tau = 2 steps
    delayed = _run(sched, bw=0.01, tau=2, delay=0.04)
    assert delayed.wall_s == pytest.approx(2.4 + one_sync + 0.04, rel=1e-6)


def test_bucketed_minibatch_step_in_closed_form():
    """Two buckets of 0.5 MB ready at 60 % and 100 % of a 0.1 s step; each takes 0.075 s at 0.01 GB/s: the first
    runs from 0.06 to 0.135, the second from 0.135 (after the first, past the end of backward) to 0.21."""
    buckets = ((500_000.0, 0.6), (500_000.0, 1.0))
    assert bucket_finish(np.zeros(4), np.full(4, 0.1), [0.6, 1.0], [0.075, 0.075]) == pytest.approx(0.21)
    r = _run(SyncSchedule(algorithm="minibatch"), bw=0.01, buckets=buckets, N=32 * 4 * 10)
    assert r.wall_s == pytest.approx(10 * 0.21, rel=1e-6)
    unbucketed = _run(SyncSchedule(algorithm="minibatch"), bw=0.01, N=32 * 4 * 10)
    assert unbucketed.wall_s == pytest.approx(10 * (0.1 + 0.15), rel=1e-6)
    assert r.hidden_s == pytest.approx(10 * 0.04, rel=1e-6)


def test_timeline_of_overlapped_and_bucketed_syncs():
    """The clock at every sync (sim.runconfig.Timeline, read by time-to-accuracy): an overlapped sync ends where it
    starts (the ranks go on), the last one blocks; a bucketed step ends once its last bucket is done."""
    sched = SyncSchedule(algorithm="local", H=4)
    tl = _run(sched, bw=0.01, tau=2).timeline
    assert tl is not None and list(tl.steps) == [3, 7, 11, 15, 19, 23]
    assert np.array_equal(tl.end_s[:-1], tl.ready_s[:-1]) and tl.end_s[-1] > tl.ready_s[-1]
    buckets = ((500_000.0, 0.6), (500_000.0, 1.0))
    tl = _run(SyncSchedule(algorithm="minibatch"), bw=0.01, buckets=buckets, N=32 * 4 * 10).timeline
    assert tl is not None and tl.end_s == pytest.approx(0.21 * np.arange(1, 11), rel=1e-6)
    assert tl.ready_s == pytest.approx(tl.end_s - 0.11, rel=1e-6)


def test_event_engine_refuses_overlap_and_bad_configs():
    sched = SyncSchedule(algorithm="local", H=2)
    cfg = RunConfig(topology=_topo(1.0, 0.1), model=MODEL, K=4, B=32, N=32 * 4 * 8, schedule=sched, overlap_steps=1)
    with pytest.raises(SimError, match="engine 'event' does not model"):
        simulate(cfg, engine="event")
    with pytest.raises(SimError, match="overlap_steps must be <= H = 2, got 3"):
        RunConfig(topology=_topo(1.0, 0.1), model=MODEL, K=4, B=32, N=1000, schedule=sched, overlap_steps=3)
    with pytest.raises(SimError, match="bucket 0 must have bytes > 0"):
        RunConfig(topology=_topo(1.0, 0.1), model=MODEL, K=4, B=32, N=1000, schedule=sched, buckets=((0, 0.5),))


VIRTUAL = {"engine": "virtual", "workers": 2}


@pytest.mark.parametrize("kw, msg", [
    ({"algorithm": "minibatch", "overlap": True}, "overlap applies to the model syncs of local SGD"),
    ({"algorithm": "local", "H": 2, "overlap": True, "overlap_steps": 3}, "overlap_steps must be <= H = 2, got 3"),
    ({"algorithm": "local", "overlap_steps": 2}, "overlap_steps applies with overlap only, got 2"),
    ({"algorithm": "local", "overlap": True, "compress": "sign"}, "overlap cannot go with compress 'sign'"),
    ({"algorithm": "local", "outer_lr": 0.5}, "outer_lr / outer_momentum apply with an outer_optimizer only"),
    ({"algorithm": "local", "outer_optimizer": "adam"}, "outer_optimizer must be one of none, sgd, nesterov"),
    ({"algorithm": "local", "outer_optimizer": "sgd", "momentum_variant": "slowmo"}, "replaces the momentum"),
    ({"algorithm": "local", "progress": "busy"}, "progress must be one of thread, poll, got 'busy'"),
    ({"algorithm": "minibatch", "bucket_size": -1}, "bucket_size must be an integer >= 0, got -1"),
    # engine virtual: means in memory, nothing to hide
    ({**VIRTUAL, "algorithm": "local", "overlap": True}, "overlap does not apply to engine virtual"),
    ({**VIRTUAL, "algorithm": "minibatch", "bucket_size": 1024}, "bucket_size 1024 does not apply to engine virtual"),
    ({**VIRTUAL, "algorithm": "minibatch", "progress": "poll"}, "progress 'poll' does not apply to engine virtual"),
])
def test_config_refusals(kw, msg):
    with pytest.raises(TrainError, match=msg):
        TrainConfig(**kw)


@pytest.mark.parametrize("argv, msg", [
    (["--algorithm", "local", "--bucket-size", "64K"], "--bucket-size applies to mini-batch steps"),
    (["--algorithm", "minibatch", "--bucket-size", "0", "--first-bucket-size", "1K"], "--first-bucket-size does"),
    (["--algorithm", "local", "--progress", "poll"], "--progress poll applies to nonblocking all-reduces"),
    (["--algorithm", "local", "--overlap", "--overlap-steps", "9"], "--overlap-steps must be <= H = 8, got 9"),
    (["--algorithm", "minibatch", "--bucket-size", "1.5M"], "expected a byte count"),
])
def test_cli_refusals(argv, msg, capsys):
    from train.cli import main
    with pytest.raises(SystemExit) if "byte count" in msg else _nothing():
        assert main(argv) == 2
    assert msg in capsys.readouterr().err


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class _Solo:
    """A one-rank backend: the average of one model is the model itself (the outer step still runs)."""

    rank, size, has_blocks, progress = 0, 1, False, "thread"

    def allreduce_mean(self, buf, level):
        pass

    def broadcast(self, buf, root=0):
        pass

    def barrier(self, level):
        pass

    def group_size(self, level):
        return 1


def _train(avg_kw: dict, steps: int = 24, lr: float = 0.25, seed: int = 0) -> torch.Tensor:
    from train.averager import LocalSGD
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)).double()
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True)
    avg = LocalSGD(model, H=4, backend=_Solo(), optimizer=opt, **avg_kw)
    g = torch.Generator().manual_seed(seed + 1)
    for _ in range(steps):
        x = torch.randn(16, 6, generator=g, dtype=torch.float64)
        opt.zero_grad()
        ((model(x) - x.sum(1, keepdim=True)) ** 2).mean().backward()
        opt.step()
        avg.step(lr)
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_outer_sgd_is_slowmo_bitwise():
    """SlowMo(alpha, beta) and the outer optimizer "sgd" (lr alpha, momentum beta) give bitwise equal models when
    the base learning rate is a power of two (SlowMo's buffer is in gradient units, gamma times smaller)."""
    slow = _train({"momentum_variant": "slowmo", "slow_lr": 0.75, "slow_momentum": 0.5})
    outer = _train({"outer_optimizer": "sgd", "outer_lr": 0.75, "outer_momentum": 0.5})
    plain = _train({})
    assert torch.equal(slow, outer)
    assert not torch.equal(outer, plain)  # the outer step did something
    nest = _train({"outer_optimizer": "nesterov", "outer_lr": 0.75, "outer_momentum": 0.5})
    assert not torch.equal(nest, outer)


def test_outer_optimizer_factory_and_refusals():
    a = _train({"outer_optimizer": lambda ps: torch.optim.SGD(ps, lr=0.75, momentum=0.5)})
    assert torch.equal(a, _train({"outer_optimizer": "sgd", "outer_lr": 0.75, "outer_momentum": 0.5}))
    for kw, msg in (({"outer_optimizer": "sgd", "outer_lr": 0.0}, "outer_lr must be a number in"),
                    ({"outer_optimizer": "adamw"}, "outer_optimizer must be one of sgd, nesterov"),
                    ({"outer_optimizer": lambda ps: 3}, "factory must return a torch.optim.Optimizer"),
                    ({"outer_optimizer": "sgd", "momentum_variant": "hybrid"}, "replaces the momentum variants")):
        with pytest.raises(TrainError, match=msg):
            _train(kw, steps=1)


def test_overlapped_ranks_share_the_cores_all_the_time():
    """4 ranks on 2 cores, rank 0 a straggler at twice the work. Overlapped syncs keep no rank waiting for another
    (the syncs are hidden), so all 4 compute all the time at share 2: each rank's compute is exactly twice its work,
    also while its clock runs ahead of the straggler's (processor sharing between barriers would speed it up)."""
    from sim.cpushare import SharedCPU
    from sim.stragglers import Stragglers
    cfg = RunConfig(topology=_topo(1.0, 0.1), model=MODEL, K=4, B=32, N=32 * 4 * 24,
                    schedule=SyncSchedule(algorithm="local", H=4), allreduce="ring", overlap_steps=2,
                    cpu=SharedCPU(cores=2), stragglers=Stragglers(kind="fixed", rank=0, slowdown=2.0))
    r = simulate(cfg)
    assert r.compute_s == pytest.approx(2 * 24 * (0.2 + 3 * 0.1) / 4, rel=1e-9)
