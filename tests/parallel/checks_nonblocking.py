"""Parallel check bodies for comm.iallreduce (run by tests/parallel/runner.py at any world size, and across nodes)."""
from __future__ import annotations

import os

import numpy as np
from mpi4py import MPI

import comm
from comm.nonblocking import in_flight
from tests.parallel.checks_comm import ALGS, assert_identical_everywhere, check_result, counts, random_input, reference

WORLD = MPI.COMM_WORLD
DTYPES = (np.float16, np.float32, np.float64, np.int64)


def check_iallreduce_equals_blocking() -> None:
    """Every algorithm, dtype, op and count edge case: the request's result is bitwise the blocking all-reduce's
    with the same algorithm (native floats: equal to rounding, as MPICH may sum them in another order), and is
    identical on every rank."""
    rng = np.random.default_rng(77 + WORLD.rank)
    for alg in ALGS:
        for dtype in DTYPES:
            for op in ("sum", "mean", "max"):
                if op == "mean" and np.dtype(dtype).kind == "i":
                    continue
                for n in counts(WORLD.size):
                    x = random_input(rng, n, dtype)
                    want = comm.allreduce(x.copy(), op=op, algorithm=alg)
                    req = comm.iallreduce(x, op=op, algorithm=alg)
                    got = req.wait()
                    what = f"iallreduce {alg} {np.dtype(dtype).name} {op} n={n} p={WORLD.size}"
                    assert got is x and req.done and req.test(), what
                    if alg == "native" and np.dtype(dtype).kind == "f":  # MPICH picks MPI_Iallreduce's algorithm
                        check_result(got, want, dtype, what)             # apart from MPI_Allreduce's
                    else:
                        assert np.array_equal(got, want), f"{what}: differs from the blocking all-reduce"
                    assert_identical_everywhere(got, what)
    assert in_flight() == 0


def check_iallreduce_reference() -> None:
    """A few random float64 inputs against MPI_Allreduce in float64 (the closed-form check of comm's own tests)."""
    rng = np.random.default_rng(5 + WORLD.rank)
    for alg in ALGS:
        for n in (1, WORLD.size + 1, 4099):
            x = random_input(rng, n, np.float64)
            want = reference(x, "sum")
            got = comm.iallreduce(x.copy(), algorithm=alg).wait()
            check_result(got, want, np.float64, f"iallreduce {alg} n={n}")


def check_many_in_flight() -> None:
    """Requests on different buffers (algorithms, dtypes, float16 widening with its own scratch) in flight together,
    waited in reverse order, while the caller's thread runs blocking collectives of its own: each equals the
    blocking result, and every rank agrees."""
    rng = np.random.default_rng(11 + WORLD.rank)
    for rounds in range(3):
        plan = [(alg, dtype, 1000 + 37 * i) for i, (alg, dtype) in enumerate(
            (a, d) for a in ("auto", "ring", "recursive_doubling", "native", "rabenseifner") for d in DTYPES)]
        xs = [random_input(rng, n, dtype) for _, dtype, n in plan]
        wants = [comm.allreduce(x.copy(), algorithm=alg) for x, (alg, _, _) in zip(xs, plan)]
        reqs = [comm.iallreduce(x, algorithm=alg) for x, (alg, _, _) in zip(xs, plan)]
        mine = np.full(5, WORLD.rank, dtype=np.int64)
        comm.allreduce(mine)  # the caller's own traffic beside the helper thread's
        WORLD.Barrier()
        assert (mine == sum(range(WORLD.size))).all()
        for req, want, (alg, dtype, n) in reversed(list(zip(reqs, wants, plan))):
            got = req.wait()
            if alg == "native" and np.dtype(dtype).kind == "f":
                check_result(got, want, dtype, f"round {rounds} native {np.dtype(dtype).name}")
            else:
                assert np.array_equal(got, want), f"round {rounds} {alg} {np.dtype(dtype).name} n={n}"
            assert_identical_everywhere(got, f"in flight {alg} {np.dtype(dtype).name}")
    assert in_flight() == 0


def check_buffer_in_flight_refused() -> None:
    """A second all-reduce of memory still in flight (the same array, an overlapping view, a blocking call) raises
    CommError on every rank; after wait() the memory is free again; disjoint halves may be in flight together."""
    x = np.ones(1 << 16, dtype=np.float32)
    req = comm.iallreduce(x)
    for what, call in (("same array", lambda: comm.iallreduce(x)), ("view", lambda: comm.iallreduce(x[100:200])),
                       ("blocking", lambda: comm.allreduce(x[-10:]))):
        try:
            call()
        except comm.CommError as e:
            assert "still in flight" in str(e), str(e)
        else:
            raise AssertionError(f"{what}: reuse of a buffer in flight was not refused")
    req.wait()
    assert (x == WORLD.size).all()
    a, b = comm.iallreduce(x[: 1 << 15]), comm.iallreduce(x[1 << 15:])
    a.wait()
    b.wait()
    assert (x == WORLD.size ** 2).all()
    comm.allreduce(x)  # free again
    for bad, msg in (({"progress": "later"}, "progress must be"), ({"algorithm": "fastest"}, "algorithm must be"),
                     ({"op": "prod"}, "op must be")):
        try:
            comm.iallreduce(np.ones(4), **bad)
        except comm.CommError as e:
            assert msg in str(e), str(e)
        else:
            raise AssertionError(f"{bad} was accepted")
    assert in_flight() == 0


def check_progress_poll() -> None:
    """progress="poll": requests advance in test() calls alone (several in flight, polled through the newest) and in
    wait(); they equal the blocking results bitwise; mean divides; float16 is widened and narrowed back."""
    rng = np.random.default_rng(3 + WORLD.rank)
    for alg in ("auto", "ring", "rabenseifner", "recursive_doubling", "rail", "hierarchical"):
        xs = [random_input(rng, 5000, dtype) for dtype in (np.float32, np.float16, np.int64)]
        wants = [comm.allreduce(x.copy(), algorithm=alg) for x in xs]
        reqs = [comm.iallreduce(x, algorithm=alg, progress="poll") for x in xs]
        while not reqs[-1].test():
            pass
        assert all(r.done for r in reqs)
        for x, want in zip(xs, wants):
            assert np.array_equal(x, want), f"poll {alg} {x.dtype}"
    y = np.arange(10, dtype=np.float64)
    comm.iallreduce(y, op="mean", algorithm="native", progress="poll").wait()
    assert np.array_equal(y, np.arange(10, dtype=np.float64))
    assert in_flight() == 0


def check_hierarchical_and_block_requests() -> None:
    """ihierarchical_allreduce and iblock_allreduce over virtual blocks (or the real nodes, across emulated nodes)
    equal their blocking forms bitwise, in flight together with a flat request."""
    g = int(os.environ.get("HIER_GPUS_PER_NODE", "0")) or (2 if WORLD.size % 2 == 0 else 1)
    topo = comm.Topology.from_comm(gpus_per_node=None if os.environ.get("HIER_REAL_NODES") else g)
    rng = np.random.default_rng(21 + WORLD.rank)
    for n in (0, 3, 4099):
        for alg in ("auto", "recursive_doubling", "ring"):
            x, y, z = (rng.standard_normal(n) for _ in range(3))
            wx = comm.hierarchical_allreduce(x.copy(), topo, op="mean", algorithm=alg)
            wy = comm.block_allreduce(y.copy(), topo, op="mean", algorithm=alg)
            wz = comm.allreduce(z.copy(), algorithm=alg)
            reqs = [comm.ihierarchical_allreduce(x, topo, op="mean", algorithm=alg),
                    comm.iblock_allreduce(y, topo, op="mean", algorithm=alg), comm.iallreduce(z, algorithm=alg)]
            for r in reqs:
                r.wait()
            assert np.array_equal(x, wx) and np.array_equal(y, wy) and np.array_equal(z, wz), (n, alg)
            assert_identical_everywhere(x, f"ihierarchical {alg} n={n}")
            assert_identical_everywhere(y, f"iblock {alg} n={n}", topo.node_comm)


def check_torch_buffers_in_flight() -> None:
    """torch CPU tensors (float32, bfloat16 through its widening, a parameter that requires grad): requests equal
    the blocking results."""
    import torch

    g = torch.Generator().manual_seed(WORLD.rank)
    ts = [torch.randn(3001, generator=g), torch.randn(777, generator=g).to(torch.bfloat16),
          torch.nn.Parameter(torch.randn(50, generator=g))]
    wants = [comm.allreduce(t.detach().clone(), op="mean") for t in ts]
    reqs = [comm.iallreduce(t, op="mean") for t in ts]
    for r, want in zip(reqs, wants):
        got = r.wait()
        assert torch.equal(got.detach(), want), got.dtype


def check_communicator_freed_with_its_lane() -> None:
    """A communicator's helper thread and duplicates go with it: free it after its requests, make another one
    (whose handle MPICH may reuse), and its requests run on a lane and duplicates of their own."""
    for _ in range(3):
        c = WORLD.Dup()
        x = np.full(100, c.Get_rank() + 1.0)
        reqs = [comm.iallreduce(x, comm=c), comm.iallreduce(np.ones(7), comm=c, progress="poll")]
        for r in reqs:
            r.wait()
        assert (x == sum(range(1, c.Get_size() + 1))).all()
        c.Free()
    assert in_flight() == 0
