"""Topology files, presets and the compute model: known values and one-line errors for bad input."""
from __future__ import annotations

import json

import pytest

from sim.compute import MODELS, ComputeModel, get_model
from sim.errors import SimError
from sim.topology import Level, load_topology, preset_names, save_topology, topology_from_json

RESNET = MODELS["resnet20"]


def test_presets_exist_and_carry_spec_figures():
    names = preset_names()
    for want in ("paper-8x2-10gbps", "v100-4x4-10gbps", "v100-2x8-10gbps", "v100-8x4-10gbps"):
        assert want in names
    paper = load_topology("paper-8x2-10gbps")
    assert (paper.nodes, paper.gpus_per_node) == (8, 2)
    assert paper.inter.bandwidth_GBps == pytest.approx(10 / 8)  # 10 Gbps
    assert paper.compute.seconds(RESNET, 128) == pytest.approx(0.175)  # SPEC section 3, Titan Xp
    v100 = load_topology("v100-8x4-10gbps")
    assert (v100.nodes, v100.gpus_per_node) == (8, 4)
    assert v100.compute.seconds(RESNET, 1024) == pytest.approx(0.124)


def test_compute_table_interpolates_and_scales_by_flops():
    titan = load_topology("paper-8x2-10gbps").compute  # its measured ResNet-20 steps, interpolated
    assert titan.seconds(RESNET, 96) == pytest.approx((0.100 + 0.175) / 2)
    # Beyond the table: the last segment extended.
    assert titan.seconds(RESNET, 8192) == pytest.approx(4.983 + (4.983 - 2.698) / 2048 * 4096)
    table = ComputeModel(kind="table", batch=(64, 128), seconds_per_iter=(0.1, 0.175))  # an old-style table
    dense = get_model("densenet40-12")
    assert table.seconds(dense, 128) == pytest.approx(0.175 * 0.28 / 0.041)
    flops = ComputeModel(kind="flops", tflops=10.0, efficiency=0.5, overhead_s=0.002)
    assert flops.seconds(RESNET, 100) == pytest.approx(0.002 + 3 * 0.041 * 100 / (10e3 * 0.5))


def test_model_sizes_from_spec():
    assert MODELS["resnet20"].bytes == 270_000 * 4
    assert MODELS["wrn28-10"].params == 36_480_000
    with pytest.raises(SimError, match="model must be one of .*got 'vgg'"):
        get_model("vgg")


def test_level_alpha_beta_gamma():
    lv = Level(latency_s=1e-5, bandwidth_GBps=2.0, overhead_s=2e-6, gamma_s_per_byte=1e-11)
    assert lv.cost.alpha == pytest.approx(1.2e-5) and lv.cost.beta == pytest.approx(5e-10)
    assert lv.message_s(1e6) == pytest.approx(1.2e-5 + 5e-4)
    assert Level(latency_s=0.1, bandwidth_GBps=None).beta == 0.0


def test_save_load_roundtrip(tmp_path):
    topo = load_topology("v100-4x4-10gbps")
    path = tmp_path / "t.json"
    save_topology(topo, path)
    assert load_topology(str(path)) == topo
    assert [p.name for p in tmp_path.iterdir()] == ["t.json"]  # no temp file left behind


def _obj():
    return json.loads(json.dumps(load_topology("paper-8x2-10gbps").to_json()))


@pytest.mark.parametrize("mutate, fragment", [
    (lambda o: o["inter"].update(latency_s=-1e-6), "latency_s must be a finite number >= 0, got -1e-06"),
    (lambda o: o["intra"].update(bandwidth_GBps=0), "bandwidth_GBps must be a finite number > 0, got 0"),
    (lambda o: o.update(nodes=0), "nodes must be an integer >= 1, got 0"),
    (lambda o: o.pop("inter"), "missing key 'inter'"),
    (lambda o: o.update(gpus=4), "unknown key 'gpus'"),
    (lambda o: o["intra"].update(latency=1), "unknown key 'latency' in 'intra'"),
    (lambda o: o["compute"].update(kind="magic"), "compute kind must be one of table, flops, fixed, layers, got 'magic'"),
    (lambda o: o["compute"]["measured"]["resnet20"].update(batch=[64, 32] + o["compute"]["measured"]["resnet20"][
        "batch"][2:]), "strictly increasing"),
])
def test_bad_topology_values(tmp_path, mutate, fragment):
    obj = _obj()
    mutate(obj)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(obj))
    with pytest.raises(SimError) as exc:
        load_topology(str(path))
    msg = str(exc.value)
    assert fragment in msg and "bad.json" in msg and "\n" not in msg


def test_malformed_and_unknown(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"name": "x", "nodes": 2,')
    with pytest.raises(SimError, match=r"broken.json' is not valid JSON: .* line 1 column"):
        load_topology(str(path))
    with pytest.raises(SimError, match="unknown preset or missing topology file 'paper-99'; valid presets: paper-8x2"):
        load_topology("paper-99")
    with pytest.raises(SimError, match="must be a JSON object"):
        topology_from_json([1, 2])


def test_workers_must_fit_the_layout():
    topo = load_topology("v100-4x4-10gbps")
    assert topo.check_workers(8) == 2
    with pytest.raises(SimError, match="K must be a multiple of gpus_per_node=4 on topology 'v100-4x4-10gbps', got 6"):
        topo.check_workers(6)
    with pytest.raises(SimError, match="K must be at most 16"):
        topo.check_workers(20)
