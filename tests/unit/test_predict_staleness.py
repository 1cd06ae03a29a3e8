"""--predict on a machine file: warnings for other calibration code or another load; measured step jitter is used."""
from __future__ import annotations

import json
import logging

import pytest

from train.calibrate import step_samples
from train.config import TrainConfig
from train.predict import LOAD_WARN, MACHINE_SCHEMA, ModelProfile, calibration_code_version, machine_warnings, predict

PROFILE = ModelProfile(params=20_000, gflops_per_sample=0.001, n_train=8192, n_test=2048, bytes_per_param=4)


def _machine(path, **extra) -> str:
    obj = {"schema": MACHINE_SCHEMA, "name": "m", "cpu_count": 2, "background_load": 0.5, "level_share": 1.0,
           "oversubscribed_latency_s": 0.0, "oversubscribed_form": "const",
           "level": {"latency_s": 1e-4, "bandwidth_GBps": None, "overhead_s": 0.0, "gamma_s_per_byte": 0.0},
           "step": {"model": "resnet8", "width": 8, "dataset": "synthetic", "batch_size": 32,
                    "gflops_per_sample": 0.001, "seconds_per_step": 0.004, "eval_s_per_sample": 1e-5}}
    for key, value in extra.items():
        if key.startswith("step_"):
            obj["step"][key[5:]] = value
        else:
            obj[key] = value
    path.write_text(json.dumps(obj))
    return str(path)


def test_current_code_and_load_give_no_warning(tmp_path, caplog):
    m = _machine(tmp_path / "m.json", code_version=calibration_code_version())
    with caplog.at_level(logging.WARNING):
        p = predict(TrainConfig(algorithm="local", H=4, epochs=1), 4, m, profile=PROFILE, load_now=0.5 + LOAD_WARN)
    assert p["warnings"] == [] and not caplog.records


def test_other_code_and_other_load_warn_one_line_each(tmp_path, caplog):
    old = _machine(tmp_path / "old.json")  # written before machine files carried a code version
    with caplog.at_level(logging.WARNING):
        p = predict(TrainConfig(algorithm="local", H=4, epochs=1), 4, old, profile=PROFILE, load_now=3.0)
    assert len(p["warnings"]) == 2 and len(caplog.records) == 2
    assert all("\n" not in w for w in p["warnings"])
    assert "no code_version" in p["warnings"][0] and "rerun python -m train calibrate" in p["warnings"][0]
    assert "background load now 3.00 runnable processes, the prediction assumes 0.50" in p["warnings"][1]
    assert "--predict-load 3.0" in p["warnings"][1]
    # --predict-load says which load to assume: then the load now matches it and only the code warning stays
    p = predict(TrainConfig(algorithm="local", H=4, epochs=1), 4, old, profile=PROFILE, load=3.0, load_now=3.0)
    assert len(p["warnings"]) == 1
    other = machine_warnings({"code_version": "0123456789abcdef"}, "x.json", 0.0, None)
    assert other and "was written by code 0123456789abcdef, this is " + calibration_code_version() in other[0]


def test_measured_step_times_make_ranks_wait(tmp_path):
    cfg = TrainConfig(algorithm="local", H=4, epochs=1)
    v = calibration_code_version()
    steady = predict(cfg, 2, _machine(tmp_path / "a.json", code_version=v), profile=PROFILE, load_now=0.5)
    noisy_m = _machine(tmp_path / "b.json", code_version=v, step_samples_s=[0.003, 0.004, 0.005, 0.008], step_cv=0.35)
    noisy = predict(cfg, 2, noisy_m, profile=PROFILE, load_now=0.5)
    assert steady["wait_s"] == 0 and noisy["wait_s"] > 0 and noisy["wall_s"] > steady["wall_s"]
    assert noisy["jitter"]["kind"] == "empirical" and any("resampled from 4 measured" in n for n in noisy["notes"])
    assert noisy["compute_s"] == pytest.approx(steady["compute_s"], rel=0.1)  # the draws have mean 1


def test_step_samples_are_differences_of_consecutive_step_records(tmp_path):
    f = tmp_path / "metrics.jsonl"
    walls = [0.5, 0.6, 0.7, 0.85, 0.95, 1.0, 1.2, 1.25]
    recs = [{"kind": "step", "step": i, "wall_s": w} for i, w in enumerate(walls)]
    recs.insert(3, {"kind": "epoch", "step": 2, "wall_s": 0.8})
    f.write_text("".join(json.dumps(r) + "\n" for r in recs))
    assert step_samples(f, skip=5) == pytest.approx([0.05, 0.2, 0.05])
    assert step_samples(f, skip=1) == pytest.approx([0.1, 0.1, 0.15, 0.1, 0.05, 0.2, 0.05])


def test_modelled_and_extrapolated_compute_are_marked_on_a_preset():
    """A model with a layer table gets the layer model's step time, marked MODELLED; one without (logistic
    regression) is scaled by FLOPs from the measured model, marked EXTRAPOLATED."""
    p = predict(TrainConfig(model="resnet8", width=8, dataset="synthetic", algorithm="local", H=4, epochs=1), 16,
                "paper-8x2-10gbps", profile=PROFILE)
    assert p["compute_source"] == "layer-model"
    assert any("MODELLED from resnet8's layers" in n for n in p["notes"])
    logreg = ModelProfile(params=300, gflops_per_sample=3e-7, n_train=8192, n_test=2048, bytes_per_param=4)
    p = predict(TrainConfig(model="logreg", dataset="synthetic", algorithm="local", H=4, epochs=1), 16,
                "paper-8x2-10gbps", profile=logreg)
    assert p["compute_source"] == "extrapolated"
    assert any("EXTRAPOLATED by FLOPs" in n for n in p["notes"])
