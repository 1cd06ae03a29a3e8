"""`python -m train --predict` and the prediction in summary.json, through real subprocesses."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from train.predict import MACHINE_SCHEMA

ROOT = Path(__file__).resolve().parents[2]
ENV = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
for _k in ("PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "SLURM_PROCID", "SLURM_NTASKS",
           "MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE", "SLURM_NTASKS_PER_NODE"):
    ENV.pop(_k, None)


def _train(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "train", *args], cwd=ROOT, env=ENV, capture_output=True, text=True,
                          timeout=timeout, check=False)


def _machine(path: Path) -> str:
    obj = {"schema": MACHINE_SCHEMA, "name": "m", "cpu_count": 2, "background_load": 0.5, "level_share": 1.25,
           "oversubscribed_latency_s": 3e-4,
           "level": {"latency_s": 2e-4, "bandwidth_GBps": 5.0, "overhead_s": 0.0, "gamma_s_per_byte": 1e-10},
           "step": {"model": "resnet8", "width": 8, "dataset": "synthetic", "batch_size": 32,
                    "gflops_per_sample": 0.000809, "seconds_per_step": 0.005, "eval_s_per_sample": 2e-5}}
    path.write_text(json.dumps(obj))
    return str(path)


@pytest.mark.parametrize("flags", [
    ["--algorithm", "minibatch"],
    ["--algorithm", "local", "--H", "16"],
    ["--algorithm", "postlocal", "--H", "8", "--local-warmup", "linear", "--local-warmup-steps", "20"],
    ["--algorithm", "hierarchical", "--H", "2", "--Hb", "4", "--global-sync-delay", "1"],
])
def test_predict_on_paper_preset_every_algorithm(flags, capsys):
    # 16 workers of the paper's 8x2 10 Gbps cluster, predicted from one plain process (no mpirun, no MPI): the
    # first case as a real subprocess, the others through the same main() in this process (no torch import each)
    args = ["--predict", "--predict-topology", "paper-8x2-10gbps", "--predict-workers", "16", "--json", *flags]
    if flags[1] == "minibatch":
        r = _train(*args)
        assert r.returncode == 0, r.stderr
        assert "mpi4py" not in r.stderr
        stdout = r.stdout
    else:
        from train.cli import main
        assert main(args) == 0
        stdout = capsys.readouterr().out
    p = json.loads(stdout)
    T = p["total_steps"]
    assert math.ceil(10 * (8192 // 16) * 16 / (16 * 32)) == T
    if flags[1] == "minibatch":
        assert (p["syncs_global"], p["syncs_block"]) == (T, 0)
    if flags[1] == "local":
        assert (p["syncs_global"], p["syncs_block"]) == (math.ceil(T / 16), 0)
    if flags[1] == "hierarchical":
        glob = math.ceil(T / 8)
        assert (p["syncs_global"], p["syncs_block"]) == (glob, math.ceil(T / 2) - glob)
        assert p["delay_s"] == pytest.approx(glob * 1.0)
        assert p["allreduce_global"] == "hierarchical"
    parts = p["compute_s"] + p["comm_intra_s"] + p["comm_inter_s"] + p["wait_s"] + p["barrier_s"] + p["delay_s"]
    # per-worker means add up to the mean finish time, which the slowest worker (the wall time) bounds from above
    assert parts <= p["train_s"] * (1 + 1e-9) and p["train_s"] - parts < 0.01 * p["train_s"]


def test_predict_human_table_and_missing_topology():
    r = _train("--predict", "--predict-topology", "v100-8x4-10gbps", "--predict-workers", "32")
    assert r.returncode == 0, r.stderr
    assert "K=32 on v100-8x4-10gbps" in r.stdout and "wall time" in r.stdout
    r = _train("--predict")
    assert r.returncode == 2
    assert r.stderr.strip().startswith("error: --predict needs --predict-topology") and r.stderr.count("\n") == 1


def test_summary_records_the_prediction_of_predict(tmp_path):
    m = _machine(tmp_path / "machine.json")
    flags = ["--algorithm", "local", "--H", "4", "--epochs", "0.2", "--predict-topology", m]
    r = _train("--predict", "--json", *flags)
    assert r.returncode == 0, r.stderr
    pred = json.loads(r.stdout)
    out = tmp_path / "run"
    r = _train("--quiet", "--out-dir", str(out), *flags)
    assert r.returncode == 0, r.stderr
    s = json.loads((out / "summary.json").read_text())
    # the staleness warnings name the background load sampled at each call, which moves between the two calls
    assert s["prediction"].pop("warnings") and pred.pop("warnings")
    assert s["prediction"] == pred
    assert s["prediction"]["wall_s"] > 0 and s["wall_s"] > 0


def test_comm_auto_rule_matches_comm():
    # one node, and nodes of 1, 2 and 3 ranks (the multi-node rule: ring, then rail where ranks share a NIC)
    code = ("from comm.allreduce import auto_algorithm as a; from comm.nodes import NodeLayout as L; "
            "from train.predict import comm_auto_algorithm as b; import sys; "
            "sizes=[0, 2048, 256*1024, 256*1024+1, 512*1024, 512*1024+1, 4<<20]; "
            "lays=[(4, 1), (4, 2), (2, 3), (1, 4)]; "
            "ok = all(a(n) == b(n) for n in sizes) and all(a(n, L(node=None, rail=None, leaders=None, n_nodes=k, "
            "ranks_per_node=(q,) * k)) == b(n, k, q) for n in sizes for k, q in lays); sys.exit(0 if ok else 1)")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0, r.stderr


def test_calibrate_bad_probe_ranks_exits_2(tmp_path):
    r = _train("calibrate", "--out", str(tmp_path / "m.json"), "--probe-ranks", "1")
    assert r.returncode == 2
    assert r.stderr.strip() == "error: --probe-ranks must be integers >= 2 like 3,6, got [1]"


def test_predict_across_nodes_and_a_bad_network_file(tmp_path):
    m = _machine(tmp_path / "m.json")
    lvl = {"latency_s": 1e-4, "bandwidth_GBps": 0.0125, "overhead_s": 0.0, "gamma_s_per_byte": 0.0}
    net = tmp_path / "net.json"
    net.write_text(json.dumps({"name": "links", "nodes": 4, "gpus_per_node": 1, "intra": lvl, "inter": lvl,
                               "compute": {"kind": "fixed", "seconds_per_iter": [0.01]}}))
    r = _train("--predict", "--predict-topology", m, "--predict-workers", "8", "--predict-nodes", "4",
               "--predict-network", str(net), "--width", "16", "--json")
    assert r.returncode == 0, r.stderr
    p = json.loads(r.stdout)
    assert (p["real_nodes"], p["gpus_per_node"], p["allreduce_global"]) == (4, 2, "rail")
    assert p["comm_inter_s"] > p["comm_intra_s"] > 0
    # a real run checks the files on every rank before MPI starts: one line naming the flag, exit 2
    r = _train("--predict-topology", m, "--predict-network", str(tmp_path / "nosuch.json"), "--out-dir",
               str(tmp_path / "run"))
    assert r.returncode == 2
    assert r.stderr.strip().startswith("error: --predict-network: unknown preset or missing topology file")
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "run").exists()
