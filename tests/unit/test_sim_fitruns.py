"""Calibration from measured runs: exact recovery on simulated runs, the shipped paper-8x2-fitted preset, errors."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from sim.compute import MODELS
from sim.errors import SimError
from sim.fitruns import fit_runs, fitted_topology, read_runs
from sim.run import RunConfig, simulate
from sim.schedule import SyncSchedule
from sim.topology import PRESET_DIR, load_topology

TABLE = "sim/presets/paper-8x2-runs.csv"
ROOT = Path(__file__).resolve().parents[2]


def _wall(topo, algorithm: str, H: int, Hb: int = 1, K: int = 16, B: int = 128, epochs: float = 300) -> float:
    cfg = RunConfig(topology=topo, model=MODELS["resnet20"], K=K, B=B, N=round(epochs * 50_000),
                    schedule=SyncSchedule(algorithm=algorithm, H=H, Hb=Hb))
    return simulate(cfg).wall_s


def test_regenerating_the_fitted_preset_from_its_table_reproduces_it(monkeypatch):
    monkeypatch.chdir(ROOT)  # the description names the table by its repo-relative path
    base = load_topology("paper-8x2-10gbps")
    topo = fitted_topology(base, fit_runs(read_runs([TABLE]), base), name="paper-8x2-fitted", table=TABLE)
    shipped = json.loads((PRESET_DIR / "paper-8x2-fitted.json").read_text())
    assert json.loads(json.dumps(topo.to_json())) == shipped
    assert "20.07" not in json.dumps(shipped["compute"])  # the figures live in the table, not as constants


@pytest.mark.parametrize("H,minutes", [(1, 20.07), (16, 8.57)])
def test_fitted_preset_reproduces_the_two_published_figures(H, minutes):
    assert _wall(load_topology("paper-8x2-fitted"), "local", H) / 60 == pytest.approx(minutes, rel=1e-9)


def test_fitted_preset_answers_every_H_and_says_which_question_it_answers():
    fitted, spec = load_topology("paper-8x2-fitted"), load_topology("paper-8x2-10gbps")
    walls = [_wall(fitted, "local", H) for H in (1, 2, 64, 1024)]
    assert all(w > 0 for w in walls) and walls == sorted(walls, reverse=True)
    # H = 1024: 7325 steps of the fitted step time plus 8 syncs of the links' collective and the fitted overhead
    from sim.engine import simulate_collective
    step = fitted.compute.seconds(MODELS["resnet20"], 128)
    coll = simulate_collective(fitted, tuple(range(16)), "hierarchical", float(MODELS["resnet20"].bytes)).duration_s
    over = fitted.sync_overhead_s[0] + fitted.sync_collective_factor[0] * coll
    assert walls[-1] == pytest.approx(7325 * step + 8 * (coll + over), rel=1e-12)
    assert "FITTED" in fitted.description and "paper-8x2-10gbps" in fitted.description
    assert "LINK-SPEC" in spec.description and "paper-8x2-fitted" in spec.description


def test_fit_recovers_known_costs_from_simulated_runs(tmp_path):
    base = load_topology("paper-8x2-10gbps")
    truth = dataclasses.replace(base, sync_overhead_s=(0.031, 0.007), compute=base.compute.scaled(0.5, "half"))
    rows = []
    for alg, H, Hb in (("local", 1, 1), ("local", 8, 1), ("hierarchical", 2, 4), ("hierarchical", 1, 16)):
        rows.append({"name": f"{alg}-{H}-{Hb}", "model": "resnet20", "K": 16, "B": 128, "epochs": 3,
                     "algorithm": alg, "H": H, "Hb": Hb, "wall_s": _wall(truth, alg, H, Hb, epochs=3)})
    (tmp_path / "runs.json").write_text(json.dumps(rows))
    fit = fit_runs(read_runs([tmp_path / "runs.json"]), base, "fixed")
    assert fit.step_s == pytest.approx(truth.compute.seconds(MODELS["resnet20"], 128), rel=1e-6)
    assert fit.overhead_global_s == pytest.approx(0.031, rel=1e-6)
    assert fit.overhead_block_s == pytest.approx(0.007, rel=1e-6)
    assert fit.factor_global == 0 and fit.factor_block == 0
    assert max(abs(r["rel_residual"]) for r in fit.rows) < 1e-9
    # the same runs with the default split: the fitted cost is each collective times a factor, which cannot be
    # exact here (the truth is a constant), and the note says which split was taken
    scaled = fit_runs(read_runs([tmp_path / "runs.json"]), base)
    assert scaled.overhead_global_s == 0 and scaled.factor_global > 0
    assert any("--sync-split scaled" in n for n in scaled.notes)


def test_fit_separates_fixed_and_scaled_sync_costs_when_collectives_differ(tmp_path):
    # runs on 8 and 16 workers have different collectives: both parts of the per-sync cost are fitted
    base = load_topology("paper-8x2-10gbps")
    truth = dataclasses.replace(base, sync_overhead_s=(0.02, 0.0), sync_collective_factor=(3.0, 0.0))
    rows = [{"name": f"K{K}-H{H}", "model": "resnet20", "K": K, "B": 128, "epochs": 2, "algorithm": "local",
             "H": H, "wall_s": _wall(truth, "local", H, K=K, epochs=2)} for K in (8, 16) for H in (1, 8)]
    (tmp_path / "runs.json").write_text(json.dumps(rows))
    fit = fit_runs(read_runs([tmp_path / "runs.json"]), base, "fixed")  # the split is not needed: both fitted
    assert fit.overhead_global_s == pytest.approx(0.02, rel=1e-6)
    assert fit.factor_global == pytest.approx(3.0, rel=1e-6)
    assert fit.step_s == pytest.approx(base.compute.seconds(MODELS["resnet20"], 128), rel=1e-6)
    topo = fitted_topology(base, fit, name="t", table="runs.json")
    assert topo.sync_collective_factor == pytest.approx((3.0, 0.0), rel=1e-6)
    assert _wall(topo, "local", 4, K=16) == pytest.approx(_wall(truth, "local", 4, K=16), rel=1e-6)


def test_fit_reads_train_summaries(tmp_path):
    from sim.topology import Level
    free = Level(latency_s=0.0, bandwidth_GBps=None)  # links that cost nothing: the whole sync cost is overhead
    base = dataclasses.replace(load_topology("paper-8x2-10gbps"), intra=free, inter=free)
    for name, steps, syncs, wall in (("a", 1000, 1000, 1000 * 0.05 + 1000 * 0.2), ("b", 1000, 100, 50 + 20.0)):
        d = tmp_path / name
        d.mkdir()
        (d / "config.json").write_text(json.dumps({"batch_size": 32}))
        (d / "summary.json").write_text(json.dumps({
            "model": "tiny", "world_size": 16, "steps_done": steps, "wall_s": wall + 3.0, "payload_bytes": 4096,
            "syncs": {"global": syncs, "block": 0}, "totals_mean": {"eval_s": 3.0}, "run_dir": str(d)}))
    fit = fit_runs(read_runs([tmp_path / "a", tmp_path / "b" / "summary.json"]), base)
    assert fit.step_s == pytest.approx(0.05) and fit.overhead_global_s == pytest.approx(0.2)
    topo = fitted_topology(base, fit, name="t", table="a b")
    assert topo.compute.kind == "fixed" and topo.compute.seconds_per_iter == pytest.approx((0.05,))


def test_bad_run_sets_say_what_is_wrong(tmp_path):
    base = load_topology("paper-8x2-10gbps")
    one = tmp_path / "one.csv"
    one.write_text("model,K,B,algorithm,H,epochs,wall_min\nresnet20,16,128,local,1,300,20\n")
    with pytest.raises(SimError, match="at least 2 measured runs, got 1"):
        fit_runs(read_runs([one]), base)
    same = tmp_path / "same.csv"
    same.write_text("model,K,B,algorithm,H,epochs,wall_min\nresnet20,16,128,local,1,300,20\n"
                    "resnet20,16,128,local,1,150,10\n")
    with pytest.raises(SimError, match="cannot separate the per-step from the per-sync cost"):
        fit_runs(read_runs([same]), base)
    bad = tmp_path / "bad.csv"
    bad.write_text("model,K,B,algorithm,H,epochs,wall_min\nresnet20,16,128,local,0,300,20\n")
    with pytest.raises(SimError, match="row 1: H must be an integer >= 1, got '0'"):
        read_runs([bad])
    with pytest.raises(SimError, match="cannot read runs file"):
        read_runs([tmp_path / "missing.csv"])
