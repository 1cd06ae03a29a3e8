"""Nonblocking all-reduce, gradient buckets, overlapped local SGD and the outer optimizer under mpirun (bodies in
checks_nonblocking.py and checks_overlap.py; across emulated nodes: tests/cluster/test_cluster_mpi.py)."""
from __future__ import annotations

import pytest

from tests.parallel.harness import run_checks

NONBLOCKING = ["check_iallreduce_equals_blocking", "check_iallreduce_reference", "check_many_in_flight",
               "check_buffer_in_flight_refused", "check_progress_poll", "check_hierarchical_and_block_requests",
               "check_communicator_freed_with_its_lane"]
OVERLAP = ["check_buckets_bitwise_equal_unbucketed", "check_buckets_no_sync_and_when",
           "check_localsgd_minibatch_buckets_bitwise", "check_overlap_rule_replayed", "check_overlap_resume_bitwise",
           "check_outer_sgd_is_slowmo", "check_overlap_hierarchical_counts"]


# numpy only (no torch import): 2, 3 and 5 (the fold of the power-of-two algorithms: 1 rank sits out) and 8 (the
# rail and the hierarchy over virtual blocks of 2 in lg 8 = 3 rounds)
@pytest.mark.parametrize("p", [2, 3, 5, 8])
def test_iallreduce(p: int) -> None:
    run_checks(p, "tests.parallel.checks_nonblocking", NONBLOCKING, timeout=180)


# torch on every rank costs seconds of import per rank on 2 cores: 2 ranks (virtual blocks of 2 for the hierarchy)
# and 3 (the fold, blocks of 1)
@pytest.mark.parametrize("p", [2, 3])
def test_buckets_overlap_outer(p: int) -> None:
    run_checks(p, "tests.parallel.checks_overlap", OVERLAP, timeout=240)
    if p == 2:
        run_checks(p, "tests.parallel.checks_nonblocking", ["check_torch_buffers_in_flight"], timeout=120)
