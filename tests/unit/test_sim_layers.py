"""The layer compute model: tables equal the torch models, the fit recovers known constants, presets regenerate."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from sim.compute import ComputeModel, get_model
from sim.errors import SimError
from sim.layermodel import DeviceConstants, StepPoint, fit_device, step_seconds
from sim.layers import Layer, LayerTable, layer_table
from sim.run import RunConfig, simulate
from sim.schedule import SyncSchedule
from sim.topology import PRESET_DIR, load_topology

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["resnet8", "resnet20", "densenet40-12", "wideresnet16-4", "resnet50"])
def test_layer_tables_equal_the_torch_models(name):
    torch = pytest.importorskip("torch")
    from torch.utils.flop_counter import FlopCounterMode

    from train.models import build_model
    table = layer_table(name)
    shape, classes = table.input_shape, 1000 if name == "resnet50" else 10
    model = build_model(name, input_shape=shape, num_classes=classes)
    model.eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, *shape))
    assert table.params == sum(p.numel() for p in model.parameters())
    assert table.tensors == len(list(model.parameters()))
    assert table.macs == counter.get_total_flops() / 2  # torch counts 2 FLOPs per multiply-accumulate


def test_layer_table_names_and_errors():
    assert layer_table("wrn28-10") == layer_table("wideresnet28-10")
    assert get_model("wrn28-10").params == 36_480_000  # the SPEC's figure stays for the named models
    assert get_model("resnet32").params == layer_table("resnet32").params
    with pytest.raises(SimError, match="for a layer table, got 'resnet21'"):
        layer_table("resnet21")
    with pytest.raises(SimError, match="model must be one of"):
        get_model("lstm9")


def test_step_seconds_by_hand():
    # one conv (compute-bound at B = 4) and one ReLU (memory-bound), on a device of 1 GFLOP/s and 1 GB/s
    t = LayerTable(model="toy", input_shape=(1, 1, 1), layers=(Layer("conv", 1e6, 100.0, 10, 1), Layer("relu", 0.0, 1e3)))
    dev = DeviceConstants(peak_flops=1e9, mem_bps=1e9, launch_s=1e-5, sample_s=1e-4, step_s=1e-3)
    conv = max(2 * 1e6 * 4 / 1e9, (100 * 4 + 40) / 1e9)
    relu = 4e3 / 1e9
    opt = 24 * 10 / 3 / 1e9
    launches = 2 + (2 + 1) + 5 * 1
    want = 1e-3 + 4 * 1e-4 + launches * 1e-5 + 3 * (conv + relu + opt)
    assert step_seconds(t, 4, dev) == pytest.approx(want, rel=1e-12)


def test_fit_recovers_known_constants_from_modelled_points():
    truth = DeviceConstants(peak_flops=3e11, mem_bps=2e10, launch_s=8e-6, sample_s=0.0, step_s=2e-3)
    pts = [StepPoint(layer_table(m), b, step_seconds(layer_table(m), b, truth))
           for m in ("resnet8", "wideresnet16-4", "densenet40-12") for b in (4, 16, 64)]
    fit = fit_device(pts, fixed={"sample_s": 0.0})
    for key in ("peak_flops", "mem_bps", "launch_s", "step_s"):
        assert getattr(fit.constants, key) == pytest.approx(getattr(truth, key), rel=1e-3), key
    assert max(abs(r["rel_error"]) for r in fit.rows) < 1e-6
    # with a spec the ratio of the rates is kept: one efficiency is fitted
    spec = fit_device(pts, spec=(6e11, 4e10), fixed={"sample_s": 0.0})
    assert spec.constants.peak_flops / spec.constants.mem_bps == pytest.approx(15.0)
    assert spec.constants.peak_flops == pytest.approx(3e11, rel=1e-3)


def test_layers_compute_model_sources_and_scaling():
    c = ComputeModel(kind="layers", device="d", tflops=10.0, mem_GBps=500.0, efficiency=0.3, launch_s=3e-5,
                     sample_s=1e-3, measured={"resnet20": {"batch": [32, 128], "seconds_per_iter": [0.05, 0.17]}})
    r20, wrn = get_model("resnet20"), get_model("wrn28-10")
    assert c.seconds(r20, 128) == 0.17 and c.provenance(r20, 128)[0] == "measured"
    assert c.seconds(r20, 64) == pytest.approx(0.09) and c.provenance(r20, 64)[0] == "measured-interpolated"
    assert c.provenance(wrn, 128)[0] == "layer-model" and "MODELLED" in c.provenance(wrn, 128)[1]
    assert c.seconds(wrn, 128) == pytest.approx(step_seconds(layer_table("wrn28-10"), 128, c.device_constants()))
    half = c.scaled(0.5, "h")
    assert half.seconds(wrn, 128) == pytest.approx(0.5 * c.seconds(wrn, 128), rel=1e-12)
    assert half.seconds(r20, 128) == pytest.approx(0.085)
    assert ComputeModel.from_json(c.to_json()) == c and hash(c) == hash(ComputeModel.from_json(c.to_json()))
    with pytest.raises(SimError, match="batch sizes must be strictly increasing"):
        ComputeModel(kind="layers", tflops=1, mem_GBps=1, measured={"m": {"batch": [4, 2], "seconds_per_iter": [1, 2]}})
    with pytest.raises(SimError, match="mem_GBps must be a finite number > 0, got 0"):
        ComputeModel(kind="layers", tflops=1, mem_GBps=0)


@pytest.mark.parametrize("preset, csv, args", [
    ("v100-8x4-10gbps", "v100-steps.csv", dict(device="v100", spec=(15.7, 900.0), eff=None, hold="step_s=0,sample_s=0")),
    ("paper-8x2-10gbps", "titan-xp-steps.csv", dict(device="titan-xp", spec=(12.15, 547.7), eff="v100-8x4-10gbps",
                                                    hold="step_s=0")),
])
def test_gpu_presets_regenerate_from_their_step_tables(monkeypatch, preset, csv, args):
    from sim.stepfit import fit_steps, layers_compute, parse_hold, read_steps
    monkeypatch.chdir(ROOT)
    rows = read_steps([f"sim/presets/{csv}"])
    eff = load_topology(args["eff"]).compute.efficiency if args["eff"] else None
    fit = fit_steps(rows, spec=args["spec"], efficiency=eff, hold=parse_hold(args["hold"]))
    shipped = json.loads((PRESET_DIR / f"{preset}.json").read_text())["compute"]
    got = layers_compute(fit, rows, device=args["device"], spec=args["spec"], how=shipped["fit"]).to_json()
    assert json.loads(json.dumps(got)) == shipped
    assert shipped["measured"]["resnet20"]["seconds_per_iter"][2] in (0.034, 0.175)  # the SPEC's B = 128


def _speedup(model: str, H: int) -> float:
    t = load_topology("paper-8x2-fitted")
    spec = get_model(model)
    cfg = RunConfig(topology=t, model=spec, K=16, B=128, N=300 * spec.train_samples,
                    schedule=SyncSchedule(algorithm="local", H=H))
    return simulate(cfg).to_json()["speedup"]


def test_fitted_preset_ranks_the_papers_models_by_their_bytes_per_compute():
    # the Table 7 layout (docs/README-sim.md): the fitted per-sync cost grows with the collective, so at H = 1 the
    # model with the most bytes per second of compute gains least, and gains most from a larger H
    s1 = {m: _speedup(m, 1) for m in ("resnet20", "densenet40-12", "wrn28-10")}
    assert s1["wrn28-10"] < s1["densenet40-12"] < s1["resnet20"]
    gain = {m: _speedup(m, 32) / s1[m] for m in s1}
    assert max(gain, key=gain.__getitem__) == "wrn28-10"
    assert math.isclose(s1["resnet20"], 7490.111 / 1204.2, rel_tol=1e-3)  # the fitted run itself: 20.07 min
