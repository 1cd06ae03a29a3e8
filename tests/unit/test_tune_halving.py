"""The tuner's decisions on synthetic learning curves (train/tunehalving.py), the rungs, and the timeline they use."""
from __future__ import annotations

import math

import numpy as np
import pytest

import sim
from train.tunehalving import Observation, SeedResult, decide, finalists, rank_final, rung_epochs, value_at


def _obs(cid: str, curve: list[tuple[float, float]], target: float = 0.8, epochs: float = 1.0) -> Observation:
    """A candidate whose accuracy curve is `curve`; its time to target is its first point at or above `target`."""
    tta = next((t for t, v in curve if v >= target), None)
    return Observation(cid=cid, epochs=epochs, curve=tuple(curve), tta_s=tta, end_s=curve[-1][0])


def test_rung_epochs_end_on_evaluations_and_at_the_full_run():
    assert rung_epochs(8, 3, 2, 0.5) == [2.0, 4.0, 8]
    assert rung_epochs(4, 3, 3, 0.25) == [0.5, 1.5, 4]           # 4/9 = 0.44 -> 0.5, 4/3 = 1.33 -> 1.5
    assert rung_epochs(1, 4, 2, 0.5) == [0.5, 1]                 # duplicates and rungs at E collapse
    assert rung_epochs(3, 1, 2, 1) == [3]
    with pytest.raises(ValueError, match="eta > 1"):
        rung_epochs(4, 3, 1.0, 0.5)


def test_value_at_interpolates_and_is_none_before_the_first_evaluation():
    c = [(1.0, 0.5), (3.0, 0.7), (4.0, None)]
    assert value_at(c, 0.5) is None
    assert value_at(c, 2.0) == pytest.approx(0.6)
    assert value_at(c, 9.0) == 0.7                                # held after the last evaluation


def test_finished_candidates_stop_those_that_cannot_win():
    a = _obs("a", [(1.0, 0.6), (2.0, 0.85)])                       # reaches 0.8 at 2 s
    b = _obs("b", [(1.5, 0.5), (3.0, 0.7)])                        # at 3 s, past a's 2 s, not there: cannot win
    c = _obs("c", [(0.5, 0.6), (1.0, 0.7)])                        # only 1 s in: it could still win
    got = {d.cid: d for d in decide([a, b, c], 0, False, eta=2, larger_is_better=True, best=None)}
    assert got["a"].action == "finished" and got["a"].score == 2.0
    assert got["b"].action == "stopped" and "cannot win" in got["b"].reason and "a's time to target 2 s" in \
        got["b"].reason
    assert got["c"].action == "continue"


def test_an_earlier_rungs_best_also_stops_candidates():
    c = _obs("c", [(0.5, 0.6), (1.2, 0.7)])
    (d,) = decide([c], 1, False, eta=2, larger_is_better=True, best=("z", 1.0))
    assert d.action == "stopped" and "z's time to target 1 s" in d.reason
    (d,) = decide([c], 1, False, eta=2, larger_is_better=True, best=("z", 5.0))
    assert d.action == "continue"


def test_halving_keeps_the_best_at_the_common_time():
    # at t_c = 2 s (the shortest curve): p 0.70, q 0.65 (interpolated), r 0.60, s no evaluation yet
    p = _obs("p", [(1.0, 0.6), (2.0, 0.7)])
    q = _obs("q", [(1.0, 0.5), (3.0, 0.8 - 1e-9)])
    r = _obs("r", [(2.0, 0.6), (4.0, 0.75)])
    s = _obs("s", [(2.5, 0.79), (5.0, 0.79)])
    got = decide([s, r, q, p], 0, False, eta=2, larger_is_better=True, best=None)
    kept = [d.cid for d in got if d.action == "continue"]
    assert kept == ["p", "q"]
    stopped = {d.cid: d.reason for d in got if d.action == "stopped"}
    assert "rank 3 of 4" in stopped["r"] and "rank 4 of 4" in stopped["s"] and "at the common predicted time 2 s" \
        in stopped["s"]


def test_halving_on_a_gap_keeps_the_smallest_and_the_last_rung_stops_the_rest():
    # a gap to f*: smaller is better; neither has reached its target
    lo = Observation(cid="lo", epochs=1.0, curve=((1.0, 0.2), (2.0, 0.05)), tta_s=None, end_s=2.0)
    hi = Observation(cid="hi", epochs=1.0, curve=((1.0, 0.3), (2.0, 0.2)), tta_s=None, end_s=2.0)
    got = decide([hi, lo], 0, False, eta=2, larger_is_better=False, best=None)
    assert [d.cid for d in got if d.action == "continue"] == ["lo"]
    last = decide([hi, lo], 2, True, eta=2, larger_is_better=False, best=None)
    assert {d.action for d in last} == {"stopped"} and all("did not reach the target" in d.reason for d in last)


def test_finalists_and_the_ranking_over_seeds():
    assert finalists({"a": 3.0, "b": 1.0, "c": 2.0}, 2) == ["b", "c"]
    ranked = rank_final([SeedResult(cid="a", tta_s=[1.0, 1.1, None]),      # median 1.1 (None counts as infinite)
                         SeedResult(cid="b", tta_s=[1.5, 1.2, 1.3]),       # median 1.3
                         SeedResult(cid="c", tta_s=[None, None, 0.5])])    # median infinite
    assert [r.cid for r in ranked] == ["a", "b", "c"]
    assert ranked[0].spread == (1.0, 1.1) and math.isinf(ranked[2].median_s)


@pytest.mark.parametrize("kw", [{"algorithm": "local", "H": 4}, {"algorithm": "hierarchical", "H": 2, "Hb": 3},
                                {"algorithm": "minibatch"}])
def test_timeline_is_the_same_in_both_engines_and_ends_at_the_wall_time(kw):
    cfg = sim.run_config(topology="paper-8x2-10gbps", K=16, model="resnet20", epochs=0.5, **kw)
    fast, event = sim.simulate(cfg, engine="fast"), sim.simulate(cfg, engine="event")
    a, b = fast.timeline, event.timeline
    assert a is not None and b is not None
    assert list(a.steps) == list(b.steps) and a.levels == b.levels
    np.testing.assert_allclose(a.end_s, b.end_s, rtol=1e-12)
    np.testing.assert_allclose(a.ready_s, b.ready_s, rtol=1e-12)
    assert a.end_s[-1] == pytest.approx(fast.wall_s) and a.steps[-1] == cfg.total_steps - 1
    assert np.all(np.diff(a.end_s) > 0) and np.all(a.ready_s <= a.end_s)
    counts = a.syncs_through(int(a.steps[-1]))
    assert (counts["global"], counts["block"]) == (fast.syncs_global, fast.syncs_block)


def test_timeline_shares_a_rounds_compute_evenly_between_its_syncs():
    cfg = sim.run_config(topology="paper-8x2-10gbps", K=16, model="resnet20", epochs=0.5, algorithm="local", H=4)
    tl = sim.simulate(cfg).timeline
    assert tl is not None
    step_s = cfg.topology.compute.seconds(cfg.model, cfg.B)
    t = tl.time_after([0, 1, 2, 3, 4])
    assert t[0] == pytest.approx(step_s) and t[1] == pytest.approx(2 * step_s)
    assert t[3] == pytest.approx(tl.end_s[0]) and t[3] > 4 * step_s            # step 3 ends with its sync
    assert t[4] == pytest.approx(tl.end_s[0] + step_s)
    with pytest.raises(sim.SimError, match="steps must be in 0.."):
        tl.time_after([cfg.total_steps])
