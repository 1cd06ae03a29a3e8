"""Targets of a run (train/targets.py, train/config.py): the crossing, and the bad values of --target-loss/--fstar."""
from __future__ import annotations

import pytest

from train.config import TrainConfig
from train.errors import TrainError
from train.targets import crossing, reached


def _rec(step: int, **kw: float) -> dict:
    return {"step": step, "epoch": (step + 1) / 10, "wall_s": step / 100, "train_s": step / 200, **kw}


def test_reached_goes_up_for_accuracy_and_down_for_the_gap():
    assert reached("test_acc", 0.8, 0.8) and not reached("test_acc", 0.79, 0.8)
    assert reached("objective_gap", 0.01, 0.01) and not reached("objective_gap", 0.011, 0.01)
    assert not reached("test_acc", None, 0.5) and not reached("objective_gap", float("nan"), 1.0)


def test_crossing_is_linear_between_the_evaluation_before_and_the_one_that_reached_it():
    got = crossing("test_acc", 0.8, _rec(9, test_acc=0.6), _rec(19, test_acc=1.0), 10.0)
    assert (got["step"], got["epoch"], got["value"]) == (19, 2.0, 1.0)    # the eval point itself
    assert got["interpolated_step"] == pytest.approx(14.0)                 # halfway from 0.6 to 1.0
    assert got["interpolated_epoch"] == pytest.approx(1.5)
    gap = crossing("objective_gap", 0.05, _rec(9, objective_gap=0.25), _rec(19, objective_gap=0.0), 10.0)
    assert gap["interpolated_step"] == pytest.approx(17.0)                # 0.25 -> 0: 0.05 at 4/5 of the way
    first = crossing("test_acc", 0.8, None, _rec(4, test_acc=0.9), 10.0)   # no evaluation before it
    assert first["interpolated_step"] == 4


@pytest.mark.parametrize("kw,match", [
    ({"target_loss": 0.0}, "target_loss must be a finite number > 0.0, got 0.0"),
    ({"target_loss": 0.1, "model": "resnet8"}, "fstar computed solves the objective of logreg-binary"),
    ({"target_loss": 0.1, "model": "logreg-binary", "weight_decay": 0.0}, "with weight_decay > 0 only"),
    ({"fstar": "best"}, "fstar must be computed, paper or a finite number, got 'best'"),
    ({"target_loss": 0.1, "model": "lstm", "dataset": "synthetic", "lm_state": "carry", "fstar": "0"},
     "target_loss needs the objective over the training set"),
])
def test_bad_targets_are_refused_with_the_value(kw, match):
    with pytest.raises(TrainError, match=match):
        TrainConfig(**kw)


def test_fstar_as_a_number_goes_with_any_model():
    assert TrainConfig(target_loss=0.1, model="resnet8", fstar="0").fstar == "0"
