"""Parallel checks of the hierarchy: virtual blocks and shared-memory nodes (run where the world size fits)."""
from __future__ import annotations

import os

import numpy as np
from mpi4py import MPI

import comm
from tests.parallel.checks_comm import assert_identical_everywhere

WORLD = MPI.COMM_WORLD
GPUS = int(os.environ.get("HIER_GPUS_PER_NODE", "2"))


def check_virtual_topology_shape() -> None:
    topo = comm.Topology.from_comm(WORLD, gpus_per_node=GPUS)
    p, rank = WORLD.size, WORLD.rank
    assert topo.n_nodes == p // GPUS and topo.gpus_per_node == GPUS and topo.virtual
    assert topo.node_id == rank // GPUS and topo.node_rank == rank % GPUS
    assert topo.node_comm.Get_size() == GPUS
    assert topo.is_leader == (rank % GPUS == 0)
    assert (topo.leader_comm is not None) == topo.is_leader
    if topo.is_leader:
        assert topo.leader_comm.Get_size() == p // GPUS and topo.leader_comm.Get_rank() == rank // GPUS


def check_hierarchical_equals_flat() -> None:
    topo = comm.Topology.from_comm(WORLD, gpus_per_node=GPUS)
    rng = np.random.default_rng(5 + WORLD.rank)
    for alg in ("auto", "recursive_doubling", "rabenseifner", "ring", "native"):
        for n in (0, 1, WORLD.size + 1, 1001):
            for dtype in (np.int64, np.float64, np.float16):
                x = (rng.integers(-50, 50, n) if dtype is np.int64 else rng.standard_normal(n)).astype(dtype)
                flat = x.astype(np.float64) if dtype is np.float16 else x.copy()
                WORLD.Allreduce(MPI.IN_PLACE, flat)
                got = comm.hierarchical_allreduce(x.copy(), topo, algorithm=alg)
                what = f"hierarchical {alg} {np.dtype(dtype).name} n={n} {topo.describe()}"
                if dtype is np.int64:
                    assert np.array_equal(got, flat), what
                else:
                    tol = 5e-2 if dtype is np.float16 else 1e-12
                    assert np.allclose(got, flat, rtol=tol, atol=tol * WORLD.size), what
                assert_identical_everywhere(got, what)
        m = comm.hierarchical_allreduce(np.full(5, float(WORLD.rank)), topo, op="mean", algorithm=alg)
        assert np.allclose(m, (WORLD.size - 1) / 2), f"hierarchical mean {alg}"


def check_block_allreduce_stays_in_node() -> None:
    topo = comm.Topology.from_comm(WORLD, gpus_per_node=GPUS)
    x = np.full(17, WORLD.rank, dtype=np.int64)
    comm.block_allreduce(x, topo)
    first = topo.node_id * GPUS
    assert (x == sum(range(first, first + GPUS))).all(), f"block sum {x[0]}"
    assert_identical_everywhere(x, "block", topo.node_comm)


def check_shared_memory_nodes() -> None:
    """Without gpus_per_node the split is by shared memory: on this one machine, one node of every rank."""
    topo = comm.Topology.from_comm(WORLD)
    assert not topo.virtual and topo.n_nodes == 1 and topo.gpus_per_node == WORLD.size
    x = np.arange(10, dtype=np.int64) + WORLD.rank
    comm.hierarchical_allreduce(x, topo)
    assert np.array_equal(x, np.arange(10) * WORLD.size + WORLD.size * (WORLD.size - 1) // 2)
