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
from comm.nodes import node_layout
from tests.parallel.checks_comm import assert_identical_everywhere

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


def check_last_rank_dies() -> None:
    """The last rank (on the last node) is killed with SIGKILL while the others wait in a collective."""
    WORLD.Barrier()
    if WORLD.rank == WORLD.size - 1:
        print(f"KILLED-AT {time.time():.3f}", flush=True)
        sys.stdout.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    WORLD.Allreduce(MPI.IN_PLACE, np.ones(4))
    time.sleep(60)  # never reached in a healthy launcher: the job is torn down first
