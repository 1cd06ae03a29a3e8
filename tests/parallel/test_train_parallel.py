"""The trainer's algorithms under mpirun: bitwise identity after syncs, post-local switch, hierarchy, momentum."""
from __future__ import annotations

from tests.parallel.harness import run_checks

MOD = "tests.parallel.checks_train"


def test_train_k1_local_is_plain_sgd() -> None:
    run_checks(1, MOD, ["check_k1_local_equals_plain_sgd"], timeout=120)


def test_train_algorithms_3_ranks() -> None:
    run_checks(3, MOD, ["check_minibatch_identical_every_step", "check_local_identical_after_sync_only",
                        "check_local_average_is_mean_of_models", "check_postlocal_switch",
                        "check_postlocal_default_switch_is_first_decay", "check_global_momentum_update",
                        "check_hierarchical_hb1_equals_local", "check_local_warmup_follows_schedule",
                        "check_delay_and_straggler", "check_global_variant_has_no_local_momentum",
                        "check_every_model_takes_steps", "check_evaluation_bn_modes",
                        "check_clip_grad_norm_bounds_every_step",
                        "check_ctrl_c_at_the_last_start_up_agreement_frees_the_folder"], timeout=180)


def test_train_hierarchical_4_ranks() -> None:
    run_checks(4, MOD, ["check_hierarchical_blocks", "check_hierarchical_hb1_equals_local",
                        "check_local_identical_after_sync_only"], timeout=180)


def test_stop_agreement_at_several_sizes() -> None:
    for n in (1, 2, 5):
        run_checks(n, "tests.parallel.checks_stop", ["check_signal_on_one_rank_is_agreed_one_sync_later",
                                                     "check_strongest_signal_wins_and_second_signal_aborts",
                                                     "check_checks_are_spaced_min_gap_steps_apart"],
                   timeout=90)
