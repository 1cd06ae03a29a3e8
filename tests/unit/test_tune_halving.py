"""The tuner's decisions on synthetic learning curves (train/tunehalving.py), the rungs, and the timeline they use."""
from __future__ import annotations

import math

import numpy as np
import pytest

import sim
from train.tunehalving import Observation, SeedResult, decide, estimate_tta, finalists, rank_final, rung_epochs


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


def test_estimate_carries_on_the_rate_of_the_second_half_of_the_curve():
    # 0.5 at 1 s, 0.7 at 3 s: 0.1 per second, so 0.8 at 4 s
    assert estimate_tta([(1.0, 0.5), (3.0, 0.7)], 0.8, True) == pytest.approx((4.0, 0.7))
    # the second half: 0.6 at 2 s to 0.7 at 4 s (0.05 per second), not the early rise from 0.1
    assert estimate_tta([(1.0, 0.1), (2.0, 0.6), (3.0, 0.65), (4.0, 0.7)], 0.8, True) == pytest.approx((6.0, 0.7))
    assert estimate_tta([(1.0, 0.5), (3.0, 0.7), (4.0, 0.65)], 0.8, True) == (None, 0.7)   # falling lately
    assert estimate_tta([(1.0, 0.5)], 0.8, True) == (None, 0.5)                   # one evaluation: no rate
    # a gap falls: 0.2 at 1 s to 0.1 at 2 s, so 0.05 at 2.5 s
    assert estimate_tta([(1.0, 0.2), (2.0, 0.1)], 0.05, False) == pytest.approx((2.5, 0.1))


def test_finished_candidates_stop_those_that_cannot_win():
    a = _obs("a", [(1.0, 0.6), (2.0, 0.85)])                       # reaches 0.8 at 2 s
    b = _obs("b", [(1.5, 0.5), (3.0, 0.7)])                        # at 3 s, past a's 2 s, not there: cannot win
    c = _obs("c", [(0.5, 0.6), (1.0, 0.7)])                        # only 1 s in: it could still win
    got = {d.cid: d for d in decide([a, b, c], 0, False, eta=2, larger_is_better=True, best=None, target=0.8)}
    assert got["a"].action == "finished" and got["a"].score == 2.0
    assert got["b"].action == "stopped" and "cannot win" in got["b"].reason and "a's time to target 2 s" in \
        got["b"].reason
    assert got["c"].action == "continue"


def test_an_earlier_rungs_best_also_stops_candidates():
    c = _obs("c", [(0.5, 0.6), (1.2, 0.7)])
    (d,) = decide([c], 1, False, eta=2, larger_is_better=True, best=("z", 1.0), target=0.8)
    assert d.action == "stopped" and "z's time to target 1 s" in d.reason
    (d,) = decide([c], 1, False, eta=2, larger_is_better=True, best=("z", 5.0), target=0.8)
    assert d.action == "continue"


def test_halving_keeps_the_shortest_estimated_times_to_target():
    # fast: cheap clock but its accuracy has stopped rising (no estimate); p: 0.8 at 4 s; q: 0.8 at 6 s;
    # slow: 0.8 at 12 s. Comparing the accuracy at one common time (0.5 s, where only `fast` has evaluated) would
    # keep `fast`, which never gets there.
    fast = _obs("fast", [(0.1, 0.60), (0.3, 0.75), (0.5, 0.75), (0.7, 0.75), (0.9, 0.75)])
    p = _obs("p", [(1.0, 0.5), (3.0, 0.7)])
    q = _obs("q", [(2.0, 0.5), (4.0, 0.65)])
    slow = _obs("slow", [(4.0, 0.4), (8.0, 0.6)])
    got = decide([fast, slow, q, p], 0, False, eta=2, larger_is_better=True, best=None, target=0.8)
    assert [d.cid for d in got if d.action == "continue"] == ["p", "q"]
    stopped = {d.cid: d.reason for d in got if d.action == "stopped"}
    assert "estimated time to target 12 s, rank 3 of 4" in stopped["slow"]
    assert "no estimate" in stopped["fast"] and "rank 4 of 4" in stopped["fast"]


def test_halving_on_a_gap_keeps_the_smallest_and_the_last_rung_stops_the_rest():
    # a gap to f*: smaller is better; neither has reached its target
    lo = Observation(cid="lo", epochs=1.0, curve=((1.0, 0.2), (2.0, 0.05)), tta_s=None, end_s=2.0)
    hi = Observation(cid="hi", epochs=1.0, curve=((1.0, 0.3), (2.0, 0.2)), tta_s=None, end_s=2.0)
    got = decide([hi, lo], 0, False, eta=2, larger_is_better=False, best=None, target=0.01)
    assert [d.cid for d in got if d.action == "continue"] == ["lo"]
    last = decide([hi, lo], 2, True, eta=2, larger_is_better=False, best=None, target=0.01)
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
