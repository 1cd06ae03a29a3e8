"""`python -m sim` end to end: cost against an independent eq. (6), run/whatif/calibrate outputs, bad input."""
from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from sim.cli import main

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


def sim(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sim", *args], capture_output=True, text=True, cwd=ROOT, env=ENV,
                          timeout=120, check=False)


def eq6_independent(K, S, N, B, H, Hb, C1, C2):
    g = math.ceil(N / (K * B * H * Hb))
    return (math.ceil(N / (K * B * H)) - g) * C1 * S * math.log2(K / S) + g * C2 * math.log2(K), \
        math.ceil(N / (K * B * H)) - g, g


def random_cost_args(rng: random.Random) -> tuple[list[str], tuple]:
    S = rng.choice([1, 2, 4, 5, 8])
    K = S * rng.choice([1, 2, 3, 4])
    N, B, H, Hb = rng.randint(1, 10**7), rng.randint(1, 512), rng.randint(1, 32), rng.randint(1, 8)
    C1, C2 = rng.uniform(1e-5, 1e-2), rng.uniform(1e-3, 1.0)
    args = ["cost", "--K", str(K), "--servers", str(S), "--N", str(N), "--batch-size", str(B), "--H", str(H),
            "--Hb", str(Hb), "--C1", repr(C1), "--C2", repr(C2), "--json"]
    return args, eq6_independent(K, S, N, B, H, Hb, C1, C2)


def test_cost_json_subprocess_matches_independent_eq6():
    rng = random.Random(2024)
    for _ in range(3):
        args, (want, blk, glob) = random_cost_args(rng)
        out = sim(*args)
        assert out.returncode == 0, out.stderr
        obj = json.loads(out.stdout)
        assert obj["eq6"] == pytest.approx(want, rel=1e-12)
        assert (obj["intra_syncs"], obj["global_syncs"]) == (blk, glob)


def test_cost_json_in_process_many_random_sets(capsys):
    rng = random.Random(7)
    for _ in range(300):
        args, (want, blk, glob) = random_cost_args(rng)
        assert main(args) == 0
        obj = json.loads(capsys.readouterr().out)
        assert obj["eq6"] == pytest.approx(want, rel=1e-12)
        assert (obj["intra_syncs"], obj["global_syncs"]) == (blk, glob)


def test_run_json_is_consistent(capsys):
    assert main(["run", "--preset", "v100-4x4-10gbps", "--K", "8", "--algorithm", "hierarchical", "--H", "2",
                 "--Hb", "4", "--epochs", "2", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    T = math.ceil(2 * 50000 / (8 * 128))
    assert r["total_steps"] == T and r["nodes"] == 2
    assert r["syncs_global"] == math.ceil(T / 8) and r["syncs_block"] == math.ceil(T / 2) - math.ceil(T / 8)
    assert r["compute_s"] == pytest.approx(T * 0.034)  # V100 table at B=128
    want, _, _ = eq6_independent(8, 2, r["N"], 128, 2, 4, r["eq6_C1_s"], r["eq6_C2_s"])
    assert r["eq6_s"] == pytest.approx(want, rel=1e-12)
    parts = r["compute_s"] + r["comm_intra_s"] + r["comm_inter_s"] + r["wait_s"] + r["delay_s"]
    assert parts <= r["wall_s"] * (1 + 1e-12) and parts == pytest.approx(r["wall_s"], rel=1e-3)
    assert r["speedup"] == pytest.approx(r["single_worker_s"] / r["wall_s"])


def test_run_human_output_and_event_engine(capsys):
    assert main(["run", "--K", "4", "--H", "4", "--epochs", "0.5", "--engine", "event",
                 "--straggler", "random:0.2:2", "--seed", "3", "--global-sync-delay", "0.1"]) == 0
    out = capsys.readouterr().out
    assert "wall time" in out and "speedup" in out and "(event engine)" in out


@pytest.mark.parametrize("args, fragment", [
    (["run", "--K", "3"], "error: --K must be a multiple of gpus_per_node=2"),
    (["run", "--H", "0"], "error: --H must be an integer >= 1, got 0"),
    (["run", "--preset", "nowhere"], "error: unknown preset or missing topology file 'nowhere'"),
    (["run", "--straggler", "slow"], "error: --straggler must be 'none'"),
    (["cost", "--K", "6", "--servers", "4", "--N", "10", "--batch-size", "1", "--H", "1", "--C1", "1", "--C2", "1"],
     "error: --K must be a multiple of --servers=4, got --K=6"),
    (["run", "--jitter", "gauss:0.1"], "error: --jitter must be 'none', 'lognormal:CV'"),
    (["run", "--jitter", "lognormal:-1"], "error: --jitter cv must be a finite number >= 0, got -1.0"),
    (["calibrate", "--runs", "nowhere.csv"], "error: cannot read runs file 'nowhere.csv'"),
    (["calibrate"], ("error: calibrate needs --runs FILE..., --steps FILE..., --bench FILE, or at least one "
                     "--intra FILE or --inter FILE")),
])
def test_bad_input_exits_2_with_one_line(args, fragment):
    out = sim(*args)
    assert out.returncode == 2
    assert out.stderr.startswith(fragment) and out.stderr.count("\n") == 1, out.stderr


def test_malformed_topology_file(tmp_path):
    bad = tmp_path / "topo.json"
    bad.write_text("{\"nodes\": ")
    out = sim("run", "--topology", str(bad))
    assert out.returncode == 2 and "is not valid JSON" in out.stderr and out.stderr.count("\n") == 1


def test_whatif_writes_jsonl_and_table(tmp_path, capsys):
    out = tmp_path / "sweep.jsonl"
    assert main(["whatif", "--topologies", "paper-8x2-10gbps,v100-4x4-10gbps", "--K", "4,8,16", "--H", "1,4",
                 "--Hb", "1,2", "--algorithms", "minibatch,local,hierarchical", "--epochs", "1", "--out", str(out),
                 "--quiet"]) == 0
    text = capsys.readouterr().out
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    # K=4 on the 4x4 topology and every K on 8x2: minibatch 1 + local 2 + hierarchical 4 per (topology, K).
    assert len(rows) == 6 * 7
    assert {(r["topology"], r["K"]) for r in rows} == {(t, k) for t in ("paper-8x2-10gbps", "v100-4x4-10gbps")
                                                      for k in (4, 8, 16)}
    for r in rows:
        T = r["total_steps"]
        assert r["syncs_global"] == math.ceil(T / (r["H"] * r["Hb"]))
    assert "wall_s" in text and f"wrote {len(rows)} rows" in text
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_calibrate_writes_topology_that_run_accepts(tmp_path, capsys):
    alpha, beta, gamma = 5e-6, 2e-10, 5e-11
    lines = []
    for p in (2, 4, 8):
        for n in (64, 4096, 1 << 20):
            for alg in ("recursive_doubling", "rabenseifner", "ring"):
                lg = math.log2(p)
                t = {"recursive_doubling": lg * (alpha + n * beta + n * gamma),
                     "rabenseifner": 2 * lg * alpha + (p - 1) / p * n * (2 * beta + gamma),
                     "ring": 2 * (p - 1) * alpha + (p - 1) / p * n * (2 * beta + gamma)}[alg]
                lines.append(json.dumps({"library": "localsgd", "p": p, "gpus_per_node": None, "bytes": n,
                                         "dtype": "float32", "algorithm": alg, "t_median_s": t, "t_min_s": t,
                                         "t_max_s": t, "algbw_GBps": n / t / 1e9, "busbw_GBps": 0.0,
                                         "correct": True}))
    bench = tmp_path / "intra.jsonl"
    bench.write_text("\n".join(lines) + "\n")
    topo = tmp_path / "cal.json"
    assert main(["calibrate", "--intra", str(bench), "--nodes", "2", "--gpus-per-node", "4", "--out", str(topo),
                 "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)["levels"]["intra"]
    assert rep["alpha_s"] == pytest.approx(alpha, rel=1e-6) and rep["r2"] == pytest.approx(1.0)
    saved = json.loads(topo.read_text())
    assert saved["intra"]["latency_s"] == pytest.approx(alpha, rel=1e-6) and saved["nodes"] == 2
    assert main(["run", "--topology", str(topo), "--K", "8", "--epochs", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["topology"] == "calibrated"


def test_convex_subcommand_is_registered():
    out = sim("convex", "--help")
    assert out.returncode == 0 and "fstar" in out.stdout


def test_postlocal_switch_defaults_to_first_lr_decay(capsys):
    assert main(["run", "--algorithm", "postlocal", "--H", "16", "--K", "16", "--epochs", "3", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    T = math.ceil(3 * 50000 / (16 * 128))
    s = math.ceil(0.5 * T)  # train/ decays the learning rate first at ceil(0.5 T)
    assert r["switch_step"] == s and r["syncs_global"] == s + math.ceil((T - s) / 16)
    assert main(["run", "--algorithm", "postlocal", "--H", "16", "--K", "16", "--epochs", "3", "--switch-epoch", "1",
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["switch_step"] == math.ceil(50000 / (16 * 128))


@pytest.mark.parametrize("H,minutes", [(1, 20.07), (16, 8.57), (1024, None)])
def test_fitted_paper_preset_gives_a_wall_time_for_every_H(H, minutes):
    out = sim("run", "--preset", "paper-8x2-fitted", "--K", "16", "--algorithm", "local", "--model", "resnet20",
              "--H", str(H), "--json")
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert r["H"] == H and r["wall_s"] > 0 and r["link_sharing"] == "fair" and r["compute_source"] == "measured"
    if minutes is not None:
        assert r["wall_s"] / 60 == pytest.approx(minutes, rel=1e-9)
    else:  # 7325 steps and 8 syncs: compute plus eight fitted sync costs, below the H = 16 figure
        assert r["syncs_global"] == 8 and r["compute_s"] < r["wall_s"] < 8.57 * 60


def test_link_sharing_flag_and_jitter_reach_the_run():
    base = ["run", "--K", "16", "--allreduce", "recursive_doubling", "--N", "204800", "--json"]
    fair, fifo = (json.loads(sim(*base, "--link-sharing", m).stdout) for m in ("fair", "fifo"))
    assert fair["link_sharing"] == "fair" and fifo["link_sharing"] == "fifo"
    assert fair["comm_inter_s"] > fifo["comm_inter_s"]  # two ranks per node share each NIC: fifo is optimistic
    jit = json.loads(sim(*base, "--jitter", "lognormal:0.2", "--seed", "3").stdout)
    assert jit["jitter"] == {"kind": "lognormal", "cv": 0.2, "samples": 0, "seed": 3} and jit["wait_s"] > 0
    assert fair["wait_s"] == 0
    wrn = json.loads(sim("run", "--model", "wrn28-10", "--N", "20480", "--json").stdout)
    assert wrn["compute_source"] == "layer-model" and "MODELLED from wrn28-10's layers" in wrn["compute_note"]
