"""Parallel checks that run across emulated nodes (tests/cluster): real node detection, hierarchy, auto's choice."""
from __future__ import annotations

import os
import signal
import sys
import time

import numpy as np
from mpi4py import MPI

import comm
from comm.allreduce import private_comm
from comm.buffers import adapt
from comm.nodes import node_layout, rail_allreduce
from comm.pipeline import RAIL_PIPELINE, pipelined_rail_allreduce, rail_segments
from tests.parallel.checks_comm import assert_identical_everywhere, check_result, random_input, reference

WORLD = MPI.COMM_WORLD
NODES = int(os.environ.get("LOCALSGD_CLUSTER_NODES", "1"))
PPN = int(os.environ.get("LOCALSGD_CLUSTER_RANKS_PER_NODE", str(WORLD.size)))


def check_real_nodes_found() -> None:
    """Topology.from_comm() without gpus_per_node finds the emulated nodes (hostname = node), ranks in order."""
    topo = comm.Topology.from_comm()
    assert not topo.virtual and topo.n_nodes == NODES and topo.gpus_per_node == PPN, topo.describe()
    assert topo.node_id == WORLD.rank // PPN and topo.node_rank == WORLD.rank % PPN, (topo.node_id, topo.node_rank)
    assert MPI.Get_processor_name() == f"node{topo.node_id}", MPI.Get_processor_name()
    layout = node_layout(private_comm(WORLD))
    assert layout.n_nodes == NODES and layout.ranks_per_node == (PPN,) * NODES, layout.ranks_per_node


def check_hierarchy_on_real_nodes() -> None:
    """hierarchical_allreduce and block_allreduce over the real nodes equal native; results identical per rank."""
    topo = comm.Topology.from_comm()
    rng = np.random.default_rng(11 + WORLD.rank)
    for n in (0, 1, WORLD.size + 3, 4099):
        xi = rng.integers(-1000, 1000, n).astype(np.int64)
        want = xi.copy()
        WORLD.Allreduce(MPI.IN_PLACE, want)
        for alg in ("auto", "recursive_doubling", "rabenseifner", "ring", "native"):
            got = comm.hierarchical_allreduce(xi.copy(), topo, algorithm=alg)
            assert np.array_equal(got, want), f"hierarchical {alg} n={n}"
            assert_identical_everywhere(got, f"hierarchical {alg} n={n}")
    x = np.full(9, WORLD.rank, dtype=np.int64)
    comm.block_allreduce(x, topo)
    first = topo.node_id * PPN
    assert (x == sum(range(first, first + PPN))).all(), f"block sum {x[0]} on node {topo.node_id}"


def check_auto_knows_the_layout() -> None:
    """auto picks a multi-node algorithm exactly when ranks share a node's NIC; the flat choice otherwise."""
    layout = node_layout(private_comm(WORLD))
    for nbytes in (4096, 1 << 20, 64 << 20):
        got = comm.auto_algorithm(nbytes, layout)
        if NODES > 1 and PPN > 1:
            assert got in ("ring", "rail", "hierarchical"), (nbytes, got)
        else:
            assert got == comm.auto_algorithm(nbytes), (nbytes, got)


# Every dtype and every op once (float16 and bfloat16 share the widened float32 path); then larger sums.
PIPELINE_CASES = [(np.float64, "sum"), (np.float32, "mean"), (np.float16, "sum"), (np.int64, "max"), (np.int32, "min")]


def _rail(buf: np.ndarray, op: str, segments: int) -> np.ndarray:
    """comm.allreduce's rail path on `buf`, pipelined in `segments` segments (1: the unpipelined rail)."""
    layout = node_layout(private_comm(WORLD))
    work = adapt(buf)
    if segments == 1:
        rail_allreduce(work, layout, op, "ring")
    else:
        pipelined_rail_allreduce(work, layout, op, "ring", segments)
    if op == "mean":
        work.ops.divide(work.array, WORLD.size)
    work.finish()
    return buf


def check_pipelined_rail() -> None:
    """The pipelined rail (2, 3 and 8 segments; empty shards and segments) equals MPI_Allreduce and the unpipelined
    rail (integers exactly) for every dtype and op, bitwise identical on every rank; and comm.allreduce takes it
    above LOCALSGD_RAIL_PIPELINE_MIN_BYTES, which the test lowers to 64 KiB."""
    assert RAIL_PIPELINE["min_bytes"] == int(os.environ.get("LOCALSGD_RAIL_PIPELINE_MIN_BYTES", "-1")), RAIL_PIPELINE
    rng = np.random.default_rng(5 + WORLD.rank)
    for segments in (2, 3, 8):
        # 1 and q + 1 elements: fewer than S segments; 2 S q - 1: some segments have an empty shard.
        cases = [(n, dt, op) for n in (1, PPN + 1, 2 * segments * PPN - 1) for dt, op in PIPELINE_CASES]
        for n, dtype, op in [*cases, (20011, np.float64, "sum"), (20011, np.int64, "sum")]:
            x = random_input(rng, n, dtype)
            want = reference(x, op)
            got, plain = _rail(x.copy(), op, segments), _rail(x.copy(), op, 1)
            what = f"pipelined rail S={segments} {np.dtype(dtype).name} {op} n={n}"
            check_result(got, want, dtype, what)
            same = plain if np.dtype(dtype).kind == "i" else plain.astype(np.float64)
            check_result(got, same, dtype, what + " vs the unpipelined rail")
            assert_identical_everywhere(got, what)
    for n in (16 * 1024 + 1, 100_003):  # float32 above the lowered threshold: comm.allreduce pipelines them
        assert rail_segments(4 * n) == RAIL_PIPELINE["segments"] > 1, (n, RAIL_PIPELINE)
        for alg in ("rail", "auto"):
            x = random_input(rng, n, np.float32)
            want = reference(x, "sum")
            got = comm.allreduce(x.copy(), algorithm=alg)
            check_result(got, want, np.float32, f"{alg} float32 n={n}")
            assert_identical_everywhere(got, f"{alg} float32 n={n}")


def check_last_rank_dies() -> None:
    """The last rank (on the last node) is killed with SIGKILL while the others wait in a collective."""
    WORLD.Barrier()
    if WORLD.rank == WORLD.size - 1:
        print(f"KILLED-AT {time.time():.3f}", flush=True)
        sys.stdout.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    WORLD.Allreduce(MPI.IN_PLACE, np.ones(4))
    time.sleep(60)  # never reached in a healthy launcher: the job is torn down first
