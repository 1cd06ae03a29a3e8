"""The trainer across real (emulated) nodes: the documented hostfile launch runs unchanged, hierarchical local SGD
finds the nodes by itself, syncs as scheduled, and ends with bitwise identical models on every rank."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from cluster import Cluster, ClusterSpec
from tests.parallel.harness import REPO, mpi_env

TINY = ["--dataset", "synthetic", "--model", "resnet8", "--width", "4", "--synthetic-train", "512",
        "--synthetic-test", "128", "--synthetic-size", "8", "--batch-size", "8", "--epochs", "1", "--H", "2",
        "--Hb", "2", "--lr-warmup-epochs", "0.2", "--target-acc", "0.99", "--quiet"]


def _prediction_files(tmp_path: Path) -> list[str]:
    """A small machine file and a links file: the run's prediction must find its 2 nodes from the launcher."""
    from train.predict import MACHINE_SCHEMA
    lvl = {"latency_s": 2e-4, "bandwidth_GBps": 5.0, "overhead_s": 0.0, "gamma_s_per_byte": 1e-10}
    machine = {"schema": MACHINE_SCHEMA, "name": "m", "cpu_count": 2, "background_load": 0.5, "level_share": 1.25,
               "level": lvl, "step": {"model": "resnet8", "width": 4, "dataset": "synthetic", "batch_size": 8,
                                      "gflops_per_sample": 1e-5, "seconds_per_step": 0.005, "eval_s_per_sample": 2e-5}}
    net = {"name": "links", "nodes": 2, "gpus_per_node": 1, "intra": lvl, "compute": {"kind": "fixed",
           "seconds_per_iter": [0.01]}, "inter": {**lvl, "bandwidth_GBps": 0.125}}
    (tmp_path / "m.json").write_text(json.dumps(machine))
    (tmp_path / "net.json").write_text(json.dumps(net))
    return ["--predict-topology", str(tmp_path / "m.json"), "--predict-network", str(tmp_path / "net.json")]


def test_hostfile_example_runs_hierarchical_on_real_nodes(cluster_available, state_dir, tmp_path: Path) -> None:
    out = tmp_path / "run"
    with Cluster(ClusterSpec(nodes=2, ranks_per_node=2, rate_bits=1e9)) as cluster:
        before = cluster.network.link_bytes()
        res = cluster.run(["bash", str(REPO / "mpirun_examples" / "hostfile_multinode.sh"), *TINY,
                           *_prediction_files(tmp_path)], mpi=False,
                          timeout=150, capture=True, cwd=REPO,
                          env={"NP": "4", "PPN": "2", "PYTHON": sys.executable, "OUT": str(out)})
        sent = [a["sent"] - b["sent"] for a, b in zip(cluster.network.link_bytes(), before)]
    assert res.returncode == 0, res.stdout[-5000:]
    summary = json.loads((out / "summary.json").read_text())
    config = json.loads((out / "config.json").read_text())
    assert summary["status"] == "completed" and summary["world_size"] == 4
    assert config["topology"] == "2x2 (shared-memory nodes)", config["topology"]
    T = summary["total_steps"]
    assert summary["syncs"] == summary["expected_syncs"]
    assert summary["syncs"]["global"] == -(-T // 4) and summary["syncs"]["block"] == -(-T // 2) - -(-T // 4)
    assert min(sent) > 0, f"the global syncs did not cross the links: {sent}"
    pred = summary["prediction"]  # made by rank 0 before MPI started, with the nodes the launcher reported
    assert (pred["real_nodes"], pred["gpus_per_node"], pred["allreduce_global"]) == (2, 2, "hierarchical")
    assert pred["syncs_global"] == summary["syncs"]["global"] and pred["comm_inter_s"] > 0
    verify = subprocess.run([sys.executable, "-m", "train", "verify", str(out)], cwd=REPO, env=mpi_env(),
                            capture_output=True, text=True, timeout=120, check=False)
    assert verify.returncode == 0, verify.stdout + verify.stderr
