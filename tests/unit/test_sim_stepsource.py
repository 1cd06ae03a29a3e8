"""Where a predicted step time comes from: measured, a measured profile, the layer model, or FLOPs (train side)."""
from __future__ import annotations

import json

import pytest

from sim.compute import get_model
from sim.layermodel import DeviceConstants, step_seconds
from sim.layers import layer_table
from train.config import TrainConfig
from train.predict import MACHINE_SCHEMA, ModelProfile, predict

DEV = DeviceConstants(peak_flops=2e11, mem_bps=1e10, launch_s=7e-6, sample_s=0.0, step_s=2e-3)
PROFILE = ModelProfile(params=470_000, gflops_per_sample=0.069, n_train=8192, n_test=2048, bytes_per_param=4)


def _machine(path, profile: bool) -> str:
    compute = {"kind": "layers", "device": "cpu", "tflops": DEV.peak_flops / 1e12, "mem_GBps": DEV.mem_bps / 1e9,
               "efficiency": 1.0, "launch_s": DEV.launch_s, "sample_s": 0.0, "step_s": DEV.step_s,
               "measured": {"resnet20": {"batch": [8, 32], "seconds_per_iter": [0.03, 0.09]}}}
    obj = {"schema": MACHINE_SCHEMA, "name": "m", "cpu_count": 2, "background_load": 0.0, "level_share": 1.0,
           "level": {"latency_s": 1e-4, "bandwidth_GBps": None, "overhead_s": 0.0, "gamma_s_per_byte": 0.0},
           "step": {"model": "resnet20", "width": 16, "dataset": "synthetic", "batch_size": 32,
                    "gflops_per_sample": 0.041, "seconds_per_step": 0.12, "eval_s_per_sample": 1e-5}}
    if profile:
        obj["compute_profile"] = {"points": [], "fit": {"compute": compute}}
    path.write_text(json.dumps(obj))
    return str(path)


def _cfg(model: str, batch: int = 32) -> TrainConfig:
    return TrainConfig(model=model, width=16, dataset="synthetic", batch_size=batch, epochs=1, algorithm="local", H=4)


def test_calibrated_model_is_measured(tmp_path):
    p = predict(_cfg("resnet20"), 2, _machine(tmp_path / "m.json", True), profile=PROFILE, sample_load=False)
    assert p["compute_source"] == "measured" and p["step_s"] == pytest.approx(0.12)


def test_other_model_gets_the_calibrated_step_times_the_layer_models_ratio(tmp_path):
    p = predict(_cfg("resnet32"), 2, _machine(tmp_path / "m.json", True), profile=PROFILE, sample_load=False)
    ratio = step_seconds(layer_table("resnet32"), 32, DEV) / 0.09   # against the profile's measured resnet20
    assert p["compute_source"] == "layer-model"
    assert p["step_s"] == pytest.approx(0.12 * ratio, rel=1e-9)
    assert any("compute profile" in n for n in p["notes"])
    # another batch of the profiled model: its own measured steps, interpolated
    q = predict(_cfg("resnet20", 16), 2, _machine(tmp_path / "m.json", True), profile=PROFILE, sample_load=False)
    assert q["compute_source"] == "measured-interpolated"
    assert q["step_s"] == pytest.approx(0.12 * (0.03 + (0.09 - 0.03) * 8 / 24) / 0.09, rel=1e-9)


def test_without_a_profile_other_models_are_scaled_by_flops(tmp_path):
    p = predict(_cfg("resnet32"), 2, _machine(tmp_path / "m.json", False), profile=PROFILE, sample_load=False)
    assert p["compute_source"] == "extrapolated"
    assert p["step_s"] == pytest.approx(0.12 * 0.069 / 0.041, rel=1e-9)


def test_presets_mark_measured_and_modelled_steps():
    for model, source in (("resnet20", "measured"), ("densenet40-12", "layer-model")):
        spec = get_model(model)
        prof = ModelProfile(params=spec.params, gflops_per_sample=spec.gflops_per_sample, n_train=50_000,
                            n_test=10_000, bytes_per_param=4)
        cfg = TrainConfig(model=model, dataset="cifar10", data_dir="/nonexistent", batch_size=128, epochs=1,
                          algorithm="local", H=16)
        p = predict(cfg, 16, "paper-8x2-fitted", profile=prof)
        assert p["compute_source"] == source, model


def test_profile_measures_and_fits(monkeypatch):
    pytest.importorskip("torch")
    from train.stepprofile import PROFILE_SCHEMA, fit_profile, measure_steps, parse_points
    prof = measure_steps(parse_points(["resnet8", "wideresnet10-1"], [1, 2]), repeats=1, warmup=1)
    assert prof["schema"] == PROFILE_SCHEMA and len(prof["points"]) == 4
    assert all(p["seconds"] > 0 and len(p["cpu_samples_s"]) == 1 for p in prof["points"])
    fit = fit_profile(prof)
    assert fit["compute"]["kind"] == "layers" and set(fit["compute"]["measured"]) == {"resnet8", "wideresnet10-1"}
    assert fit["constants"]["sample_s"] == 0.0
