"""comm under mpirun at world sizes 1, 2, 3, 4, 5, 8 and 16 (bodies in checks_comm.py)."""
from __future__ import annotations

import pytest

from tests.parallel.harness import WORLD_SIZES, run_checks

CORE = ["check_numpy_all_algorithms", "check_allgather", "check_other_buffer_kinds", "check_private_communicator_isolation",
        "check_scratch_reused", "check_bad_input_raises_everywhere"]


@pytest.mark.parametrize("p", WORLD_SIZES)
def test_allreduce_numpy(p):
    run_checks(p, "tests.parallel.checks_comm", CORE, timeout=240)


@pytest.mark.parametrize("p", [3, 5, 6, 7, 16])
def test_random_inputs_equal_native(p):
    run_checks(p, "tests.parallel.checks_comm", ["check_random_equals_native_exactly"], timeout=120)


# torch on every rank costs seconds of import per rank on 2 cores: a few sizes (16 ranks run the numpy checks and
# the trainer's default run; torch tensors reach comm through the same buffer path at any size).
@pytest.mark.parametrize("p", [1, 2, 3, 5, 8])
def test_allreduce_torch_cpu(p):
    run_checks(p, "tests.parallel.checks_comm",
               ["check_torch_cpu_buffers", "check_device_ops_path", "check_flat_buffer_sync", "check_allgather_torch"], timeout=240)


@pytest.mark.parametrize("p,gpus", [(8, 2), (8, 4), (6, 2), (6, 3), (4, 4), (2, 1)])
def test_hierarchical_virtual_blocks(p, gpus):
    run_checks(p, "tests.parallel.checks_hier",
               ["check_virtual_topology_shape", "check_hierarchical_equals_flat", "check_block_allreduce_stays_in_node"],
               env={"HIER_GPUS_PER_NODE": str(gpus)}, timeout=180)


@pytest.mark.parametrize("p", [1, 3, 4])
def test_shared_memory_topology(p):
    run_checks(p, "tests.parallel.checks_hier", ["check_shared_memory_nodes"], timeout=60)


def test_pipelined_rail_on_one_node():
    """One node: the pipelined rail has no network to overlap and runs the unpipelined one (across nodes:
    tests/cluster/test_cluster_mpi.py)."""
    run_checks(3, "tests.cluster.checks_cluster", ["check_pipelined_rail"], timeout=60,
               env={"LOCALSGD_RAIL_PIPELINE_MIN_BYTES": "65536", "LOCALSGD_RAIL_PIPELINE_SEGMENTS": "3"})
