"""Learning-rate values at known steps and the resolved run plan (steps, switch step, warm-up, sync counts)."""
from __future__ import annotations

import math

import pytest

from train.config import TrainConfig
from train.errors import TrainError
from train.lr import LRSchedule
from train.plan import RunPlan


def test_train_lr_protocol_values_at_known_steps() -> None:
    # K = 16, B = 32, gamma_0 = 0.1 at batch 128: peak 0.1 * 512 / 128 = 0.4; 16 steps per epoch, 5-epoch warm-up
    # = 80 steps, T = 160 steps, decays at ceil(0.5 * 160) = 80 and ceil(0.75 * 160) = 120.
    s = LRSchedule.from_protocol(lr=0.1, ref_batch=128, scaling="linear", workers=16, batch=32, warmup_epochs=5,
                                 steps_per_epoch=16, total_steps=160, decay_at=(0.5, 0.75), factor=10)
    assert s.peak == pytest.approx(0.4) and s.warmup_steps == 80 and s.decay_steps == (80, 120)
    expected = {0: 0.1, 1: 0.1 + 0.3 / 80, 40: 0.25, 79: 0.1 + 0.3 * 79 / 80, 80: 0.04, 119: 0.04, 120: 0.004,
                159: 0.004}
    for step, lr in expected.items():
        assert s.lr_at(step) == pytest.approx(lr, rel=1e-12), step
    assert s.first_decay == 80


def test_train_lr_no_warmup_when_peak_not_above_base() -> None:
    s = LRSchedule.from_protocol(lr=0.2, ref_batch=128, scaling="linear", workers=1, batch=32, warmup_epochs=5,
                                 steps_per_epoch=100, total_steps=1000, decay_at=(0.5,), factor=10)
    assert s.lr_at(0) == pytest.approx(0.05) and s.lr_at(499) == pytest.approx(0.05)
    assert s.lr_at(500) == pytest.approx(0.005)
    flat = LRSchedule.from_protocol(lr=0.2, ref_batch=128, scaling="none", workers=8, batch=256, warmup_epochs=0,
                                    steps_per_epoch=10, total_steps=100, decay_at=(), factor=10)
    assert flat.lr_at(0) == flat.lr_at(99) == 0.2 and flat.first_decay is None


def test_train_lr_rejects_bad_values() -> None:
    with pytest.raises(TrainError, match="base learning rate must be a finite number > 0, got -1"):
        LRSchedule(base=-1, peak=1, warmup_steps=0, decay_steps=())
    with pytest.raises(TrainError, match=r"decay_steps must be non-negative and sorted, got \[5, 3\]"):
        LRSchedule(base=1, peak=1, warmup_steps=0, decay_steps=(5, 3))


def test_train_plan_steps_and_switch() -> None:
    cfg = TrainConfig(algorithm="postlocal", H=8, batch_size=32, epochs=10)
    plan = RunPlan.build(cfg, workers=16, n_train=8192)
    assert plan.n_local == 512 and plan.total_steps == 160 and plan.samples_total == 81920
    assert plan.switch_step == 80                    # the first learning-rate decay
    assert [plan.grad_phase(t) for t in (0, 79, 80)] == [True, True, False]
    # post-local: 80 mini-batch syncs, then ceil(80 / 8) = 10 local syncs
    assert plan.schedule.counts(160) == {"block": 0, "global": 90}
    cfg2 = TrainConfig(algorithm="postlocal", H=8, batch_size=32, epochs=10, switch_epoch=2.5)
    assert RunPlan.build(cfg2, workers=16, n_train=8192).switch_step == 40
    odd = RunPlan.build(TrainConfig(batch_size=30, epochs=1.5), workers=3, n_train=100)
    assert odd.n_local == 33 and odd.total_steps == math.ceil(round(1.5 * 33) / 30)


def test_train_plan_hierarchical_counts_match_spec() -> None:
    for K, B, H, Hb, N_epochs in ((16, 32, 4, 2, 10), (4, 8, 3, 5, 3)):
        cfg = TrainConfig(algorithm="hierarchical", H=H, Hb=Hb, batch_size=B, epochs=N_epochs)
        plan = RunPlan.build(cfg, workers=K, n_train=8192)
        N = plan.samples_total
        g = math.ceil(N / (K * B * H * Hb))
        assert plan.schedule.counts(plan.total_steps) == {"global": g, "block": math.ceil(N / (K * B * H)) - g}


def test_train_plan_epoch_crossings() -> None:
    plan = RunPlan.build(TrainConfig(batch_size=10, epochs=3), workers=2, n_train=50)  # 2.5 steps per epoch
    assert [t for t in range(plan.total_steps) if plan.crosses(t, 1.0)] == [2, 4, 7]
    assert [t for t in range(plan.total_steps) if plan.crosses(t, 0.5)] == [1, 2, 3, 4, 6, 7]
