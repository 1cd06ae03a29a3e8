"""Ranks sharing one machine's cores (sim/cpushare.py): processor sharing against its closed form, and the run
simulator's waits under it (a straggler's last steps speed up once the others wait)."""
from __future__ import annotations

import numpy as np
import pytest

from sim.compute import MODELS, ComputeModel
from sim.cpushare import SharedCPU
from sim.errors import SimError
from sim.run import RunConfig, simulate
from sim.schedule import SyncSchedule
from sim.stragglers import Stragglers
from sim.topology import Level, Topology


def closed_form(work: np.ndarray, cpu: SharedCPU) -> np.ndarray:
    """Equal starts: the j-th smallest work ends after each phase i <= j ran K - i + 1 ranks at their rate."""
    order = np.argsort(work, kind="stable")
    out, t, prev = np.empty_like(work), 0.0, 0.0
    for i, k in enumerate(order):
        t += (work[k] - prev) / cpu.rate(len(work) - i)
        prev = work[k]
        out[k] = t
    return out


@pytest.mark.parametrize("cores,background", [(1, 0.0), (2, 0.0), (2, 1.5), (4, 0.3)])
def test_equal_starts_match_the_closed_form(cores, background):
    rng = np.random.default_rng(cores)
    cpu = SharedCPU(cores=cores, background=background)
    for K in (1, 2, 3, 8, 16):
        w = rng.exponential(1.0, K)
        assert cpu.finish(np.zeros(K), w) == pytest.approx(closed_form(w, cpu), rel=1e-12)
        # K busy ranks with equal work: each takes s = max(cores, K + background) / cores times its work
        same = cpu.finish(np.zeros(K), np.full(K, 2.0))
        assert same == pytest.approx(np.full(K, 2.0 * max(cores, K + background) / cores), rel=1e-12)


def test_staggered_starts():
    cpu = SharedCPU(cores=2)
    # two ranks at rate 1 until a third arrives at 1; three share 2 cores (2/3 each)
    got = cpu.finish(np.array([0.0, 0.0, 1.0, 5.0]), np.array([1.5, 3.0, 1.0, 1.0]))
    # t=1: ranks 0, 1 have 0.5 and 2.0 left; at 2/3: rank 0 ends at 1.75, ranks 1 and 2 have 1.5 and 0.5 left,
    # at rate 1 rank 2 ends at 2.25 and rank 1 at 3.25; rank 3 starts alone at 5
    assert got == pytest.approx([1.75, 3.25, 2.25, 6.0], rel=1e-12)
    # zero work ends at its start; nothing is conserved wrongly with background load
    assert SharedCPU(cores=1, background=1.0).finish(np.array([3.0, 0.0]), np.array([0.0, 1.0])) == \
        pytest.approx([3.0, 2.0])


@pytest.mark.parametrize("kw,match", [({"cores": 0}, "cores must be an integer >= 1, got 0"),
                                      ({"cores": 2, "background": -1.0}, "background load must be a finite number"),
                                      ({"cores": 2.5}, "cores must be an integer >= 1, got 2.5")])
def test_bad_input(kw, match):
    with pytest.raises(SimError, match=match):
        SharedCPU(**kw)


def _run(cpu: SharedCPU | None, stragglers: Stragglers, engine: str = "fast"):
    free = Level(latency_s=0.0, bandwidth_GBps=None)
    topo = Topology(name="box", nodes=1, gpus_per_node=8, intra=free, inter=free,
                    compute=ComputeModel(kind="fixed", device="cpu", seconds_per_iter=(0.01,)))
    cfg = RunConfig(topology=topo, model=MODELS["resnet20"], K=8, B=32, N=8 * 32 * 40,
                    schedule=SyncSchedule(algorithm="local", H=4), allreduce="ring", stragglers=stragglers,
                    cpu=cpu)
    return simulate(cfg, engine)


def test_a_straggler_on_shared_cores_finishes_its_last_steps_alone():
    # 8 ranks, 2 cores, rank 7 computes twice as slowly, H = 4, u = 10 ms of work per step: all eight share the
    # cores until the seven finish their 4u at 16u; rank 7 then has 4u left and a core to itself: 20u per sync,
    # and the seven wait 4u. Without the shared cores the sim would charge 8u of waiting at dedicated speed.
    u, syncs = 0.01, 10
    slow = Stragglers(kind="fixed", rank=7, slowdown=2.0)
    res = _run(SharedCPU(cores=2), slow)
    assert res.syncs_global == syncs
    assert res.wall_s == pytest.approx(syncs * 20 * u, rel=1e-9)
    assert res.wait_s == pytest.approx(syncs * 7 * 4 * u / 8, rel=1e-9)
    plain = _run(SharedCPU(cores=2), Stragglers())
    assert plain.wall_s == pytest.approx(syncs * 16 * u, rel=1e-9) and plain.wait_s == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(SimError, match="engine 'event' does not model ranks that share a machine's cores"):
        _run(SharedCPU(cores=2), slow, "event")
