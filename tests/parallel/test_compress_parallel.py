"""Sign compression under mpirun: reference updates, bytes accounted = bytes sent, levels, convergence, resume."""
from __future__ import annotations

from tests.parallel.harness import run_checks

MOD = "tests.parallel.checks_compress"


def test_compress_3_ranks() -> None:
    run_checks(3, MOD, ["check_sign_local_matches_reference_and_bytes",
                        "check_ef_sign_local_matches_reference_and_bytes",
                        "check_postlocal_compressed_syncs_every_step_before_switch", "check_each_scheme_converges",
                        "check_ef_memory_resumes_exactly"], timeout=180)


def test_compress_hierarchical_4_ranks() -> None:
    run_checks(4, MOD, ["check_hierarchical_compressed_levels", "check_sign_local_matches_reference_and_bytes"],
               timeout=180)
