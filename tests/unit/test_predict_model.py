"""train.predict and train.calibrate's fits against closed forms, known values and SPEC figures (no MPI)."""
from __future__ import annotations

import json
import math

import pytest

from train.calibrate import fit_lambda, fit_share, fit_step, step_time, sync_rounds
from train.config import TrainConfig
from train.errors import TrainError
from train.plan import RunPlan
from train.predict import MACHINE_SCHEMA, ModelProfile, count_evals, cpu_share, predict, profile_model, scheduling_wait

PROFILE = ModelProfile(params=20_000, gflops_per_sample=0.001, n_train=8192, n_test=2048, bytes_per_param=4)


def _topology(path, *, gpus: int, nodes: int = 1, alpha: float = 1e-4, c: float = 0.01) -> str:
    lvl = {"latency_s": alpha, "bandwidth_GBps": None, "overhead_s": 0.0, "gamma_s_per_byte": 0.0}
    obj = {"name": "test", "nodes": nodes, "gpus_per_node": gpus, "intra": lvl, "inter": lvl,
           "compute": {"kind": "fixed", "seconds_per_iter": [c]}}
    path.write_text(json.dumps(obj))
    return str(path)


def _machine(path, *, t_alone: float, alpha: float, lam: float, load: float, level_share: float = 1.0,
             eval_per_sample: float = 1e-5) -> str:
    obj = {"schema": MACHINE_SCHEMA, "name": "m", "cpu_count": 2, "background_load": load, "level_share": level_share,
           "oversubscribed_latency_s": lam, "oversubscribed_form": "sqrt",
           "level": {"latency_s": alpha, "bandwidth_GBps": None, "overhead_s": 0.0, "gamma_s_per_byte": 0.0},
           "step": {"model": "resnet8", "width": 8, "dataset": "synthetic", "batch_size": 32,
                    "gflops_per_sample": 0.001, "seconds_per_step": t_alone, "eval_s_per_sample": eval_per_sample}}
    path.write_text(json.dumps(obj))
    return str(path)


def test_resnet20_profile_matches_spec_table():
    # SPEC section 3: ResNet-20 on CIFAR-10 has 0.27 M parameters and 0.041 GFLOPs per image (multiply-adds).
    prof = profile_model(TrainConfig(model="resnet20", width=16, dataset="cifar10", data_dir="/nonexistent"))
    assert prof.params == 272_474
    assert prof.gflops_per_sample == pytest.approx(0.041, rel=0.01)
    assert (prof.n_train, prof.n_test) == (50_000, 10_000)


def test_logreg_profile_is_one_matrix_product(w8a):
    cfg = TrainConfig(model="logreg", dataset="w8a", data_dir=str(w8a.parent))
    prof = profile_model(cfg)
    assert prof.params == 300 * 2 + 2            # w8a: 300 features, 2 classes
    assert prof.gflops_per_sample == pytest.approx(600 / 1e9)


def test_cpu_share_closed_form():
    assert cpu_share(1, 2) == 1.0
    assert cpu_share(2, 2) == 1.0
    assert cpu_share(16, 2) == 8.0
    assert cpu_share(2, 2, 1.0) == 1.5
    with pytest.raises(TrainError, match="cores must be >= 1"):
        cpu_share(4, 0)


@pytest.mark.parametrize("every,expected", [(1.0, 10), (100.0, 1), (3.0, 4), (0.5, 20)])
def test_count_evals(every, expected):
    plan = RunPlan.build(TrainConfig(algorithm="local", H=4, epochs=10), workers=4, n_train=8192)
    assert count_evals(plan, every) == expected


def test_sync_rounds_known_values():
    # dissemination barrier ceil(lg K) + recursive doubling lg p' (+2 for the fold when K is not a power of two)
    assert [sync_rounds(k) for k in (1, 2, 3, 4, 12, 16)] == [0, 2, 5, 4, 9, 8]


def test_fit_share_recovers_u_and_load():
    u, L = 0.003, 1.5
    pts = [(k, u * max(2, k + L)) for k in (1, 3, 6, 12)]
    fu, fL = fit_share(pts, 2)
    assert fL == pytest.approx(L, abs=0.005)
    assert fu == pytest.approx(u, rel=1e-6)
    with pytest.raises(TrainError, match="different rank counts"):
        fit_share([(3, 0.01)], 2)


def test_fit_step_with_measured_loads():
    u = 0.0025
    pts = [(1, u * 2, 0.0), (3, u * max(2, 3 + 1.0), 1.0), (12, u * (12 + 3.5), 3.5)]
    assert fit_step(pts, 2) == pytest.approx(u, rel=1e-12)
    noisy = [(k, t * f, ld) for (k, t, ld), f in zip(pts, (1.1, 1.0, 0.9))]
    assert 0.9 * u < fit_step(noisy, 2) < 1.1 * u
    with pytest.raises(TrainError, match="got \\(0, 0.1, 0.0\\)"):
        fit_step([(0, 0.1, 0.0)], 2)


@pytest.mark.parametrize("form", ["const", "sqrt", "linear"])
def test_fit_lambda_recovers_lam_and_its_shape(form):
    a2, lam, L = 2e-4, 3e-4, 0.5
    pts = []
    for k in (3, 6, 12):
        s = max(2, k + L) / 2
        g = (1 - 1 / s) * {"const": 1.0, "sqrt": math.sqrt(s), "linear": s}[form]
        pts.append((k, sync_rounds(k) * (a2 * s + lam * g), s))
    fl, ff = fit_lambda(pts, a2)
    assert ff == form and fl == pytest.approx(lam, rel=1e-9)


def test_scheduling_wait_values():
    assert scheduling_wait(1.0, 1e-3, "sqrt") == 0.0            # as many runnable ranks as cores: no wait
    assert scheduling_wait(1.01, 1e-3, "const") == pytest.approx(1e-3 * 0.01 / 1.01)   # continuous at s = 1
    assert scheduling_wait(4.0, 1e-3, "const") == pytest.approx(0.75e-3)
    assert scheduling_wait(4.0, 1e-3, "sqrt") == pytest.approx(0.75 * 2e-3)
    assert scheduling_wait(4.0, 1e-3, "linear") == pytest.approx(0.75 * 4e-3)
    with pytest.raises(TrainError, match="one of const, sqrt, linear, got 'cubic'"):
        scheduling_wait(2.0, 1e-3, "cubic")


def test_step_time_subtracts_eval_comm_and_wait():
    s = {"steps_done": 100, "wall_s": 2.0, "totals_mean": {"eval_s": 0.2, "comm_s_global": 0.3, "comm_s_block": 0.1,
                                                           "wait_s_global": 0.2, "wait_s_block": None}}
    assert step_time(s) == pytest.approx((2.0 - 0.8) / 100)


def test_local_prediction_on_a_fixed_topology_equals_closed_form(tmp_path):
    alpha, c, K, H = 1e-4, 0.01, 4, 4
    topo = _topology(tmp_path / "t.json", gpus=K, alpha=alpha, c=c)
    cfg = TrainConfig(algorithm="local", H=H, epochs=2, eval_every=1)
    p = predict(cfg, K, topo, profile=PROFILE)
    T = math.ceil(2 * (8192 // K) * K / (K * 32))          # N / (K B)
    syncs = math.ceil(T / H)
    sync = 2 * alpha + 2 * alpha                            # barrier (lg 4) + recursive doubling (lg 4)
    assert p["total_steps"] == T and p["syncs_global"] == syncs
    assert p["train_s"] == pytest.approx(T * c + syncs * sync, rel=1e-9)
    per_eval = (2048 // K) * c / 32 / 3 + 2 * alpha + 4 * 2 * alpha
    assert p["eval_s"] == pytest.approx(2 * per_eval, rel=1e-9)
    assert p["wall_s"] == pytest.approx(p["train_s"] + p["eval_s"])


def test_machine_prediction_scales_with_cpu_share(tmp_path):
    t, alpha, lam, K = 0.004, 2e-4, 3e-4, 16
    m = _machine(tmp_path / "m.json", t_alone=t, alpha=alpha, lam=lam, load=0.0)
    cfg = TrainConfig(algorithm="minibatch", epochs=1, eval_every=1, bucket_size=0)  # one all-reduce per step
    p = predict(cfg, K, m, profile=PROFILE)
    s = 8.0                                                 # 16 ranks on 2 cores, no background load
    a = alpha * s + lam * (1 - 1 / s) * math.sqrt(s)       # the bench's alpha at share s + the scheduling wait
    T = math.ceil((8192 // K) * K / (K * 32))
    assert p["cpu_share"] == s
    assert p["step_s"] == pytest.approx(t * s)
    assert p["train_s"] == pytest.approx(T * (t * s + 4 * a + 4 * a), rel=1e-9)
    p2 = predict(cfg, K, m, profile=PROFILE, load=2.0)   # two other runnable processes: share (16 + 2) / 2
    assert p2["cpu_share"] == 9.0


def test_paper_preset_hierarchical_counts_and_compute():
    cfg = TrainConfig(model="resnet20", width=16, dataset="cifar10", data_dir="/nonexistent", batch_size=128,
                      epochs=300, algorithm="hierarchical", H=2, Hb=4)
    prof = profile_model(cfg)
    p = predict(cfg, 16, "paper-8x2-10gbps", profile=prof)
    N = 300 * (50_000 // 16) * 16
    glob = math.ceil(N / (16 * 128 * 2 * 4))
    assert p["syncs_global"] == glob
    assert p["syncs_block"] == math.ceil(N / (16 * 128 * 2)) - glob
    # Titan Xp (SPEC section 3): 0.175 s at batch 128 for ResNet-20, measured; other models come from the layer model
    assert p["step_s"] == pytest.approx(0.175, rel=1e-12) and p["compute_source"] == "measured"
    assert p["compute_s"] == pytest.approx(p["total_steps"] * p["step_s"], rel=1e-9)
    assert (p["nodes"], p["gpus_per_node"]) == (8, 2)


@pytest.mark.parametrize("kwargs,K,source,match", [
    ({}, 0, "paper-8x2-10gbps", "workers must be an integer >= 1, got 0"),
    ({"algorithm": "hierarchical", "Hb": 2, "gpus_per_node": 4}, 16, "paper-8x2-10gbps", "gpus_per_node must match"),
    ({}, 16, "no-such-preset", "unknown preset or missing topology file 'no-such-preset'"),
    ({}, 17, "paper-8x2-10gbps", "K must be"),
])
def test_bad_input_is_one_line(kwargs, K, source, match):
    with pytest.raises(TrainError, match=match) as e:
        predict(TrainConfig(**kwargs), K, source, profile=PROFILE)
    assert "\n" not in str(e.value)


def test_lstm_profile_counts_the_recurrent_weights():
    # 3 layers x (W_ih, W_hh) of 4*650 x 650, one multiply-add per weight and token (bptt 30), plus the decoder
    prof = profile_model(TrainConfig(model="lstm", bptt=30, synthetic_classes=10))
    assert prof.gflops_per_sample == pytest.approx((6 * 2600 * 650 * 30 + 650 * 10 * 30) / 1e9, rel=1e-12)


@pytest.mark.parametrize("preset", ["paper-8x2-10gbps", "v100-2x8-10gbps", "v100-4x4-10gbps", "v100-8x4-10gbps"])
@pytest.mark.parametrize("kwargs", [{"algorithm": "minibatch"}, {"algorithm": "local", "H": 16},
                                    {"algorithm": "postlocal", "H": 4}, {"algorithm": "hierarchical", "H": 2, "Hb": 4}])
def test_every_preset_and_algorithm(preset, kwargs):
    p = predict(TrainConfig(**kwargs), 16, preset, profile=PROFILE)
    plan = RunPlan.build(TrainConfig(**kwargs), workers=16, n_train=PROFILE.n_train)
    counts = plan.schedule.counts(plan.total_steps)
    assert (p["syncs_global"], p["syncs_block"]) == (counts["global"], counts["block"])
    assert p["compute_s"] == pytest.approx(plan.total_steps * p["step_s"], rel=1e-9)
    assert p["wall_s"] > p["compute_s"] > 0


def _network(path, *, alpha: float, o_global: float, bandwidth=None) -> str:
    lvl = {"latency_s": alpha, "bandwidth_GBps": bandwidth, "overhead_s": 0.0, "gamma_s_per_byte": 0.0}
    obj = {"name": "links", "nodes": 4, "gpus_per_node": 1, "intra": lvl, "inter": lvl,
           "compute": {"kind": "fixed", "seconds_per_iter": [0.01]},
           "sync_overhead_s": {"global": o_global, "block": 0.0}}
    path.write_text(json.dumps(obj))
    return str(path)


def test_machine_prediction_across_nodes_charges_the_network_level(tmp_path):
    # 4 nodes x 1 rank: every message crosses the links. Recursive doubling (80 KB) takes lg 4 rounds of the
    # network's alpha (TCP: no scheduling wait); the barrier's lg 4 rounds of empty messages also wait for the
    # partner to be scheduled; each sync pays the per-call overhead.
    t, alpha, lam, a_net, o_net = 0.004, 2e-4, 3e-4, 5e-3, 1e-3
    m = _machine(tmp_path / "m.json", t_alone=t, alpha=alpha, lam=lam, load=0.0)
    net = _network(tmp_path / "n.json", alpha=a_net, o_global=o_net)
    cfg = TrainConfig(algorithm="minibatch", epochs=1, eval_every=1, bucket_size=0)
    p = predict(cfg, 4, m, profile=PROFILE, nodes=4, network=net)
    s = 2.0
    a = a_net
    T = math.ceil((8192 // 4) * 4 / (4 * 32))
    assert (p["real_nodes"], p["nodes"], p["gpus_per_node"], p["allreduce_global"]) == (4, 4, 1, "recursive_doubling")
    wait = lam * (1 - 1 / s) * math.sqrt(s)
    assert p["train_s"] == pytest.approx(T * (t * s + 2 * (a + wait) + 2 * a + o_net), rel=1e-9)
    assert p["comm_intra_s"] == 0.0 and p["comm_inter_s"] > 0
    # the same ranks on one node: the machine's level, no overhead
    one = predict(cfg, 4, m, profile=PROFILE)
    assert one["real_nodes"] == 1 and one["comm_inter_s"] == 0.0 and one["train_s"] < p["train_s"]
    # the launcher's node count is used for machine files when nodes is not given
    assert predict(cfg, 4, m, profile=PROFILE, launcher_nodes=4, network=net)["train_s"] == p["train_s"]


def test_machine_prediction_across_nodes_of_two_picks_comms_multinode_rule(tmp_path):
    m = _machine(tmp_path / "m.json", t_alone=0.004, alpha=2e-4, lam=3e-4, load=0.0)
    net = _network(tmp_path / "n.json", alpha=5e-3, o_global=0.0, bandwidth=0.0125)
    big = ModelProfile(params=300_000, gflops_per_sample=0.001, n_train=8192, n_test=2048, bytes_per_param=4)
    cfg = TrainConfig(algorithm="local", H=4, epochs=1, eval_every=1)
    assert predict(cfg, 8, m, profile=big, nodes=4, network=net)["allreduce_global"] == "rail"
    assert predict(cfg, 8, m, profile=PROFILE, nodes=4, network=net)["allreduce_global"] == "ring"
    hier = predict(TrainConfig(algorithm="hierarchical", H=2, Hb=2, epochs=1), 8, m, profile=big, nodes=4,
                   network=net)
    assert (hier["allreduce_global"], hier["nodes"], hier["gpus_per_node"]) == ("hierarchical", 4, 2)


@pytest.mark.parametrize("kwargs,match", [
    ({"nodes": 3}, "nodes must be an integer >= 1 that divides the 8 workers, got 3"),
    ({"nodes": 4, "network": "no-such-file"}, "--predict-network: unknown preset or missing topology file"),
])
def test_bad_nodes_or_network_is_one_line(tmp_path, kwargs, match):
    m = _machine(tmp_path / "m.json", t_alone=0.004, alpha=2e-4, lam=3e-4, load=0.0)
    with pytest.raises(TrainError, match=match) as e:
        predict(TrainConfig(), 8, m, profile=PROFILE, **kwargs)
    assert "\n" not in str(e.value)
    with pytest.raises(TrainError, match="apply to machine files"):
        predict(TrainConfig(), 16, "paper-8x2-10gbps", profile=PROFILE, nodes=8)
