"""train.LocalSGD under mpirun: the same models as torch's own averagers (gloo), SlowMo, hooks, checkpoints."""
from __future__ import annotations

import pytest

from tests.parallel.harness import run_checks

MOD = "tests.parallel.checks_averager"
TORCH = ["check_periodic_matches_torch", "check_postlocal_matches_torch", "check_hierarchical_matches_torch",
         "check_report_worst"]
OURS = ["check_slowmo_alpha1_is_hybrid_bitwise", "check_slowmo_update_replayed", "check_slowmo_buffer_policies",
        "check_state_dict_resumes_bitwise", "check_set_to_none_and_helper", "check_hooks_and_bad_input",
        "check_trainer_slowmo"]


@pytest.mark.parametrize("n", [2, 4])
def test_averager_matches_torch_averagers(n: int) -> None:
    run_checks(n, MOD, TORCH, timeout=180)


@pytest.mark.parametrize("n", [1, 3])
def test_averager_slowmo_hooks_checkpoints(n: int) -> None:
    run_checks(n, MOD, OURS, timeout=120)
