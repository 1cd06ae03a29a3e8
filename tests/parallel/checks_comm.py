"""Parallel check bodies for comm, run on every rank by tests/parallel/runner.py; correct at any world size."""
from __future__ import annotations

import hashlib

import numpy as np
from mpi4py import MPI

import comm
from comm.algorithms import ALGORITHM_FUNCS
from comm.buffers import HOST_SCRATCH, TorchOps

WORLD = MPI.COMM_WORLD
ALGS = ("recursive_doubling", "rabenseifner", "ring", "rail", "hierarchical", "native", "auto")
NP_DTYPES = (np.float16, np.float32, np.float64, np.int32, np.int64)


def counts(p: int) -> list[int]:
    """Edge cases: empty, fewer elements than ranks, exactly p, not divisible by p, larger odd counts."""
    return sorted({0, 1, max(p - 1, 1), p, p + 1, 2 * p + 3, 1000, 4099})


def assert_identical_everywhere(arr, what: str, comm_=WORLD) -> None:
    digest = hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest()
    digests = comm_.allgather(digest)
    assert len(set(digests)) == 1, f"{what}: ranks differ bitwise ({len(set(digests))} distinct results)"


def random_input(rng, n: int, dtype) -> np.ndarray:
    if np.dtype(dtype).kind == "i":
        return rng.integers(-1000, 1000, n).astype(dtype)
    return rng.standard_normal(n).astype(dtype)


def reference(x: np.ndarray, op: str) -> np.ndarray:
    """MPI_Allreduce of the same data in float64 (floats) or the native integer type."""
    wide = x.astype(np.float64) if x.dtype.kind == "f" else x.copy()
    mpi_op = {"sum": MPI.SUM, "mean": MPI.SUM, "max": MPI.MAX, "min": MPI.MIN}[op]
    WORLD.Allreduce(MPI.IN_PLACE, wide, op=mpi_op)
    return wide / WORLD.size if op == "mean" else wide


def check_result(got: np.ndarray, want: np.ndarray, dtype, what: str) -> None:
    if np.dtype(dtype).kind == "i":
        assert np.array_equal(got, want), f"{what}: integer result differs from MPI_Allreduce"
    else:
        tol = {np.float16: 2e-2, np.float32: 1e-5, np.float64: 1e-12}[dtype]
        scale = max(1.0, float(np.abs(want).max(initial=0.0))) * WORLD.size
        err = float(np.abs(got.astype(np.float64) - want).max(initial=0.0))
        assert err <= tol * scale, f"{what}: max error {err:.3g} above {tol * scale:.3g}"


def check_numpy_all_algorithms() -> None:
    """Every algorithm x dtype x op x count edge case equals MPI_Allreduce and is bitwise identical on all ranks."""
    rng = np.random.default_rng(1234 + WORLD.rank)
    for alg in ALGS:
        for dtype in NP_DTYPES:
            for op in ("sum", "mean", "max", "min"):
                if op == "mean" and np.dtype(dtype).kind == "i":
                    continue
                for n in counts(WORLD.size):
                    x = random_input(rng, n, dtype)
                    want = reference(x, op)
                    got = comm.allreduce(x.copy(), op=op, algorithm=alg)
                    what = f"{alg} {np.dtype(dtype).name} {op} n={n} p={WORLD.size}"
                    check_result(got, want, dtype, what)
                    assert_identical_everywhere(got, what)


def check_random_equals_native_exactly() -> None:
    """Randomised float64 and int64 inputs with odd counts: ours equals native (ints exactly) and is identical."""
    rng = np.random.default_rng(99 + WORLD.rank)
    sizes = [int(np.random.default_rng(t).integers(1, 3 * WORLD.size + 50)) | 1 for t in range(6)]  # odd, alike
    for n in [*sizes, 40001]:  # 320 KB of float64: above auto's multi-node ring threshold (256 KiB)
        for alg in comm.ALGORITHMS:
            xi = rng.integers(-2**40, 2**40, n, dtype=np.int64)
            native = xi.copy()
            WORLD.Allreduce(MPI.IN_PLACE, native)
            ours = comm.allreduce(xi.copy(), algorithm=alg)
            assert np.array_equal(ours, native), f"{alg} int64 n={n} differs from MPI_Allreduce"
            assert_identical_everywhere(ours, f"{alg} int64 n={n}")
            xf = rng.standard_normal(n)
            native = xf.copy()
            WORLD.Allreduce(MPI.IN_PLACE, native)
            ours = comm.allreduce(xf.copy(), algorithm=alg)
            assert np.allclose(ours, native, rtol=1e-12, atol=1e-12 * WORLD.size), f"{alg} float64 n={n}"
            assert_identical_everywhere(ours, f"{alg} float64 n={n}")


def check_torch_cpu_buffers() -> None:
    """torch CPU tensors of every dtype (bfloat16 accumulated in float32), 2-D, and a parameter with grad."""
    import torch

    p = WORLD.size
    for alg in ALGS:
        for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.int32, torch.int64):
            for n in (0, 1, p + 1, 257):
                base = torch.arange(n, dtype=torch.float64) % 5 + WORLD.rank
                t = base.to(dtype)
                comm.allreduce(t, algorithm=alg)
                want = (torch.arange(n, dtype=torch.float64) % 5) * p + p * (p - 1) / 2
                assert torch.equal(t.to(torch.float64), want.to(dtype).to(torch.float64)), f"{alg} {dtype} n={n}"
                raw = t.view(torch.int16) if dtype == torch.bfloat16 else t
                assert_identical_everywhere(raw.numpy(), f"torch {alg} {dtype} n={n}")
        w = torch.nn.Parameter(torch.full((3, 4), float(WORLD.rank)))
        comm.allreduce(w.detach(), op="mean", algorithm=alg)
        assert torch.allclose(w.detach(), torch.full((3, 4), (p - 1) / 2)), f"parameter mean {alg}"
    # bfloat16 sums that need rounding: the float32 sum rounded once, to nearest even, like torch does.
    rng = np.random.default_rng(7 + WORLD.rank)
    x = torch.from_numpy(rng.standard_normal(1001).astype(np.float32)).to(torch.bfloat16)
    wide = x.to(torch.float32).numpy().copy()
    WORLD.Allreduce(MPI.IN_PLACE, wide)
    comm.allreduce(x, algorithm="rabenseifner")
    err = (x.to(torch.float32) - torch.from_numpy(wide)).abs().max().item()
    assert err <= 2 ** -7 * max(1.0, float(np.abs(wide).max())) * 2, f"bfloat16 error {err}"


class _DLPackOnly:
    """An object that offers only DLPack (like arrays of other libraries)."""

    def __init__(self, arr: np.ndarray) -> None:
        self._arr = arr

    def __dlpack__(self, **kwargs):
        return self._arr.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self._arr.__dlpack_device__()


def check_other_buffer_kinds() -> None:
    """The buffer protocol (array.array, bytearray-backed memoryview) and DLPack-only objects, reduced in place."""
    import array

    p = WORLD.size
    a = array.array("d", [WORLD.rank + 1.0] * 7)
    comm.allreduce(a)
    assert list(a) == [p * (p + 1) / 2] * 7, f"array.array: {list(a)}"
    store = np.full(9, WORLD.rank, dtype=np.int64)
    comm.allreduce(_DLPackOnly(store), algorithm="ring")
    assert (store == p * (p - 1) // 2).all(), f"DLPack: {store}"
    fortran = np.asfortranarray(np.arange(12, dtype=np.float64).reshape(3, 4) * (WORLD.rank + 1))
    comm.allreduce(fortran)
    assert np.array_equal(fortran, np.arange(12).reshape(3, 4) * p * (p + 1) / 2), "Fortran-ordered array"


def check_private_communicator_isolation() -> None:
    """A user's pending wildcard receive on the same communicator never catches our messages."""
    p, rank = WORLD.size, WORLD.rank
    box = np.full(1, -1, dtype=np.int64)
    req = WORLD.Irecv(box, source=MPI.ANY_SOURCE, tag=MPI.ANY_TAG)
    for alg in ALGS:
        comm.allreduce(np.ones(4099, dtype=np.int64), algorithm=alg)
    WORLD.Send(np.array([1000 + rank], dtype=np.int64), dest=(rank + 1) % p, tag=5)
    status = MPI.Status()
    req.Wait(status)
    assert box[0] == 1000 + (rank - 1) % p and status.Get_tag() == 5, f"user receive got {box[0]}"


def check_scratch_reused() -> None:
    """After the first call of a size, repeated calls of that size or smaller allocate nothing."""
    x = np.ones(100_003, dtype=np.float32)
    for alg in ("recursive_doubling", "rabenseifner", "ring"):
        comm.allreduce(x, algorithm=alg, op="mean")
    before = HOST_SCRATCH.allocations
    for alg in ("recursive_doubling", "rabenseifner", "ring"):
        for n in (100_003, 50_000, 7):
            comm.allreduce(x[:n], algorithm=alg, op="mean")
    assert HOST_SCRATCH.allocations == before, f"{HOST_SCRATCH.allocations - before} scratch allocations"


def check_device_ops_path() -> None:
    """The algorithms run on torch tensors with torch reductions (the CUDA-aware path), here on CPU tensors."""
    import torch

    from comm.allreduce import private_comm

    p = WORLD.size
    ops = TorchOps(torch.device("cpu"))
    for name, fn in ALGORITHM_FUNCS.items():
        for n in (0, 1, p, 3 * p + 1):
            t = torch.arange(n, dtype=torch.float64) + WORLD.rank
            fn(private_comm(WORLD), t, ops, "sum")
            want = torch.arange(n, dtype=torch.float64) * p + p * (p - 1) / 2
            assert torch.equal(t, want), f"TorchOps {name} n={n}"


def check_flat_buffer_sync() -> None:
    """One all-reduce of a FlatBuffer equals one all-reduce per tensor, and unpack writes the parameters."""
    import torch

    torch.manual_seed(WORLD.rank)
    params = [torch.nn.Parameter(torch.randn(s)) for s in ((3, 5), (7,), (2, 2, 2), (1,))]
    expected = []
    for prm in params:
        e = prm.detach().clone()
        comm.allreduce(e, op="mean", algorithm="native")
        expected.append(e)
    flat = comm.FlatBuffer(params)
    comm.allreduce(flat.pack(), op="mean")
    flat.unpack()
    for prm, e in zip(params, expected):
        assert torch.allclose(prm.detach(), e, rtol=1e-6, atol=1e-6), "flat sync differs from per-tensor sync"
    assert_identical_everywhere(flat.buffer.numpy(), "flat buffer")


def check_bad_input_raises_everywhere() -> None:
    """Bad arguments raise CommError on every rank before any communication (no rank hangs in a collective)."""
    cases = [dict(op="prod"), dict(algorithm="tree"), dict(op="mean", buf=np.ones(3, dtype=np.int64))]
    for case in cases:
        buf = case.pop("buf", np.ones(3))
        try:
            comm.allreduce(buf, **case)
        except comm.CommError as e:
            assert "\n" not in str(e)
        else:
            raise AssertionError(f"{case} did not raise")
    try:
        comm.allreduce(np.ones((4, 4))[:, ::2])
    except comm.CommError as e:
        assert "not contiguous" in str(e)
    else:
        raise AssertionError("strided view accepted")
    if WORLD.size > 1:
        bad = WORLD.size + 1
        try:
            comm.Topology.from_comm(WORLD, gpus_per_node=bad)
        except comm.CommError as e:
            assert str(WORLD.size) in str(e) and str(bad) in str(e), str(e)
        else:
            raise AssertionError("indivisible gpus_per_node accepted")
    WORLD.Barrier()  # every rank got here: none is stuck in a collective


def check_allgather() -> None:
    """Our recursive-doubling all-gather equals MPI_Allgather for any p, block size (0 included) and dtype."""
    p, rank = WORLD.size, WORLD.rank
    for block in (0, 1, 3, 64, 1001):
        for dtype in (np.uint8, np.float32, np.int64):
            mine = (np.arange(block) * 7 + rank * 1000).astype(dtype)
            want = np.empty(p * block, dtype=dtype)
            WORLD.Allgather(mine, want)
            for alg in comm.ALLGATHER_ALGORITHMS:
                out = np.full(p * block, 255, dtype=dtype)
                comm.allgather(mine, out, algorithm=alg)
                assert np.array_equal(out, want), f"allgather {alg} block={block} {np.dtype(dtype).name}"
            got = comm.allgather(mine)  # default: a uint8 array of p * bytes
            assert got.dtype == np.uint8 and np.array_equal(got.view(dtype), want)
    try:
        comm.allgather(np.ones(3), np.ones(3 * p + 1))
    except comm.CommError as e:
        assert "must hold" in str(e)
    else:
        raise AssertionError("wrong recvbuf size accepted")


def check_allgather_torch() -> None:
    """Packed sign bits as a torch uint8 tensor: gathered rank-ordered into a torch output tensor."""
    import torch

    p, rank = WORLD.size, WORLD.rank
    bits = torch.full((13,), rank, dtype=torch.uint8)
    out = torch.zeros(13 * p, dtype=torch.uint8)
    comm.allgather(bits, out)
    assert torch.equal(out, torch.arange(p, dtype=torch.uint8).repeat_interleave(13))
