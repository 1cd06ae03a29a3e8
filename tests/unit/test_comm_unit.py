"""comm without MPI peers: chunking, sizes, bfloat16 rounding, buffer validation, flat buffers, CUDA query."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import comm
from comm.algorithms import chunk_bounds
from comm.bench import BenchConfig, expected_sum, parse_size, pattern
from comm.buffers import adapt
from comm.pipeline import RAIL_PIPELINE, _segments_from_env, rail_segments, segment_plan
from tests.parallel.harness import REPO, mpi_env


@pytest.mark.parametrize("count,parts", [(0, 4), (3, 4), (4, 4), (10, 4), (1001, 8), (7, 1)])
def test_chunk_bounds_cover_exactly(count, parts):
    b = chunk_bounds(count, parts)
    assert b[0] == 0 and b[-1] == count and len(b) == parts + 1
    sizes = np.diff(b)
    assert sizes.max() - sizes.min() <= 1 and (sizes[:-1] >= sizes[1:]).all()


@pytest.mark.parametrize("count,segments,q", [(0, 4, 2), (1, 4, 2), (3, 4, 2), (15, 4, 2), (1001, 3, 3), (7, 8, 1),
                                              (16 * 2**20 + 3, 8, 2)])
def test_segment_plan_covers_the_vector(count, segments, q):
    """The pipelined rail's segments tile the vector in order, none empty, each cut into q nearly equal shards."""
    plan = segment_plan(count, segments, q)
    assert len(plan) == min(count, segments)
    pos = 0
    for start, shards in plan:
        assert start == pos and len(shards) == q and sum(shards) > 0 and max(shards) - min(shards) <= 1
        pos += sum(shards)
    assert pos == count
    sizes = [sum(shards) for _, shards in plan]
    assert not sizes or max(sizes) - min(sizes) <= 1


def test_rail_segments_threshold_and_env(monkeypatch):
    monkeypatch.setitem(RAIL_PIPELINE, "min_bytes", 1000)
    monkeypatch.setitem(RAIL_PIPELINE, "segments", 4)
    assert rail_segments(999) == 1 and rail_segments(1000) == 4
    monkeypatch.setenv("LOCALSGD_RAIL_PIPELINE_SEGMENTS", "8")
    assert _segments_from_env("LOCALSGD_RAIL_PIPELINE_SEGMENTS", 4) == 8
    monkeypatch.delenv("LOCALSGD_RAIL_PIPELINE_SEGMENTS")
    assert _segments_from_env("LOCALSGD_RAIL_PIPELINE_SEGMENTS", 4) == 4
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv("LOCALSGD_RAIL_PIPELINE_SEGMENTS", bad)
        with pytest.raises(comm.CommError, match=f"'{bad}'"):
            _segments_from_env("LOCALSGD_RAIL_PIPELINE_SEGMENTS", 4)


def test_parse_size():
    assert parse_size("4K") == 4096 and parse_size("1M") == 2**20 and parse_size("128MiB") == 2**27
    assert parse_size("100") == 100
    with pytest.raises(comm.CommError, match="'4Q'"):
        parse_size("4Q")


def test_pattern_sums_to_closed_form():
    p, n = 7, 50
    total = sum(pattern(r, n, np.int64) for r in range(p))
    assert np.array_equal(total, expected_sum(p, n, np.int64))


def test_bench_config_rejects_bad_values():
    with pytest.raises(comm.CommError, match="'tree'"):
        BenchConfig(sizes=[4096], algorithms=["tree"])
    with pytest.raises(comm.CommError, match="iters must be >= 1; got 0"):
        BenchConfig(sizes=[4096], algorithms=["native"], iters=0)


def test_bfloat16_round_trip_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    vals = np.concatenate([rng.standard_normal(10000) * 10.0 ** rng.integers(-5, 5, 10000),
                           [0.0, -0.0, np.inf, -np.inf, 3.4e38, 1e-40]]).astype(np.float32)
    t = torch.from_numpy(vals.copy()).to(torch.bfloat16)
    work = adapt(t)  # widen: exact, since bfloat16 is the top half of a float32
    assert np.array_equal(work.array, t.to(torch.float32).numpy())
    work.array[:] = vals  # narrow float32 values back: must round like torch (nearest even)
    work.finish()
    assert torch.equal(t.view(torch.int16), torch.from_numpy(vals).to(torch.bfloat16).view(torch.int16))


def test_adapt_rejects_bad_buffers():
    with pytest.raises(comm.CommError, match="not contiguous"):
        adapt(np.ones((4, 4))[::2])
    ro = np.ones(3)
    ro.flags.writeable = False
    with pytest.raises(comm.CommError, match="read-only"):
        adapt(ro)
    with pytest.raises(comm.CommError, match="'complex128'"):
        adapt(np.ones(3, dtype=complex))
    with pytest.raises(comm.CommError, match="dict"):
        adapt({"not": "a buffer"})


def test_flat_buffer_round_trip_numpy_and_torch():
    torch = pytest.importorskip("torch")
    arrays = [np.arange(6.0).reshape(2, 3), np.array([7.0]), np.zeros((2, 2))]
    fb = comm.FlatBuffer(arrays)
    assert np.array_equal(fb.pack(), np.r_[np.arange(6.0), 7.0, np.zeros(4)])
    fb.buffer *= 2
    fb.unpack()
    assert np.array_equal(arrays[0], np.arange(6.0).reshape(2, 3) * 2) and arrays[1][0] == 14.0
    params = [torch.nn.Parameter(torch.randn(3, 3)), torch.nn.Parameter(torch.randn(5))]
    fb = comm.FlatBuffer(params)
    assert fb.nbytes == 14 * 4 and torch.equal(fb.pack()[:9], params[0].detach().reshape(-1))
    fb.buffer.zero_()
    fb.unpack()
    assert all(float(p.detach().abs().sum()) == 0.0 for p in params)
    with pytest.raises(comm.CommError, match="dtype"):
        comm.FlatBuffer([np.ones(2), np.ones(2, dtype=np.float32)])
    with pytest.raises(comm.CommError, match="at least one"):
        comm.FlatBuffer([])


def test_cuda_aware_override(monkeypatch):
    monkeypatch.setenv("LOCALSGD_CUDA_AWARE", "1")
    assert comm.cuda_aware() is True
    monkeypatch.setenv("LOCALSGD_CUDA_AWARE", "0")
    assert comm.cuda_aware() is False
    monkeypatch.setenv("LOCALSGD_CUDA_AWARE", "yes")
    with pytest.raises(comm.CommError, match="'yes'"):
        comm.cuda_aware()


def test_maps_path_keeps_a_path_with_spaces_whole():
    from comm.cuda import maps_path

    line = "7f1c2a000000-7f1c2a200000 r-xp 00000000 fd:01 123 /tmp/sp ace/localsgd/.venv/lib/libmpi.so.12\n"
    assert maps_path(line) == "/tmp/sp ace/localsgd/.venv/lib/libmpi.so.12"
    assert maps_path("7f1c2a000000-7f1c2a200000 rw-p 00000000 00:00 0\n") == ""  # anonymous mapping
    assert maps_path("7ffd1000-7ffd2000 rw-p 00000000 00:00 0   [stack]\n") == "[stack]"


def test_cuda_aware_query_of_pip_mpich_is_false(monkeypatch):
    """The pip MPICH build is not CUDA-aware; the ctypes query must say so (not merely default to False)."""
    import ctypes

    from comm.cuda import _query_libmpi, libmpi_path

    monkeypatch.delenv("LOCALSGD_CUDA_AWARE", raising=False)
    path = libmpi_path()
    assert path and hasattr(ctypes.CDLL(path), "MPIX_Query_cuda_support"), f"{path} lacks MPIX_Query_cuda_support"
    assert _query_libmpi() is False and comm.cuda_aware() is False


def test_comm_does_not_import_torch():
    code = "import sys, comm, comm.bench, comm.topology; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=mpi_env(),
                         check=True).stdout.strip()
    assert out == "False"
