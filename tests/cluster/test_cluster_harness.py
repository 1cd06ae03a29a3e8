"""The harness itself: input checks, shaped links that traffic really crosses, and teardown on every exit path."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cluster import Cluster, ClusterError, ClusterSpec, parse_rate
from cluster.netns import DEFAULT_MTU
from tests.parallel.harness import REPO, mpi_env

CLI = [sys.executable, "-m", "cluster"]


def _cli(*args: str, timeout: float = 60, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], cwd=REPO, env=mpi_env(env), capture_output=True, text=True, timeout=timeout,
                          check=False)


@pytest.mark.parametrize("text, bits", [("200mbit", 2e8), ("1gbit", 1e9), ("500Mbit/s", 5e8), ("100000000", 1e8),
                                        ("2.5gbit", 2.5e9)])
def test_parse_rate(text, bits):
    assert parse_rate(text) == bits


@pytest.mark.parametrize("text", ["fast", "-1mbit", "10bit", "200 mbps", "0"])
def test_parse_rate_rejects(text):
    with pytest.raises(ClusterError, match="rate"):
        parse_rate(text)


@pytest.mark.parametrize("kw, word", [({"nodes": 0}, "nodes"), ({"nodes": 2, "ranks_per_node": 0}, "ranks per node"),
                                      ({"nodes": True}, "nodes"), ({"nodes": 2, "mtu": 1279}, "mtu"),
                                      ({"nodes": 2, "mtu": 9217}, "mtu"), ({"nodes": 2, "mtu": "9000"}, "mtu"),
                                      ({"nodes": 2, "mtu": True}, "mtu")])
def test_spec_rejects(kw, word):
    with pytest.raises(ClusterError, match=word):
        ClusterSpec(**kw)


def test_cli_bad_input_is_one_line_exit_2():
    for args, needle in ((["run", "--rate", "fast", "--", "true"], "'fast'"), (["run", "--nodes", "0", "--", "true"],
                                                                            "nodes"), (["run"], "needs a command"),
                         (["run", "--mtu", "100", "--", "true"], "--mtu must be an integer from 1280 to 9216 bytes"),
                         (["run", "--mtu", "jumbo", "--", "true"], "got 'jumbo'"),
                         (["run", "--mtu", "9217", "--", "true"], "got 9217")):
        res = _cli(*args)
        assert res.returncode == 2, res
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], res.stderr


def test_links_are_shaped_and_really_crossed(cluster_available, state_dir):
    """A 4 MB native all-reduce between 2 one-rank nodes at 100 Mbit/s crosses the veths and cannot beat the rate."""
    spec = ClusterSpec(nodes=2, ranks_per_node=1, rate_bits=1e8)
    code = ("import numpy as np, time; from mpi4py import MPI; c = MPI.COMM_WORLD; x = np.ones(1_000_000, 'f4'); "
            "c.Barrier(); t = time.perf_counter(); c.Allreduce(MPI.IN_PLACE, x); t = time.perf_counter() - t; "
            "assert x[0] == 2; got = c.gather((MPI.Get_processor_name(), t), root=0); "
            "c.rank == 0 and print('TIMES', ' '.join(f'{h}={s}' for h, s in got), flush=True)")
    with Cluster(spec) as cluster:
        assert cluster.hostfile.read_text() == "node0:1\nnode1:1\n"
        before = cluster.network.link_bytes()
        res = cluster.run([sys.executable, "-c", code], timeout=60, capture=True)
        moved = [a["sent"] - b["sent"] for a, b in zip(cluster.network.link_bytes(), before)]
    assert res.returncode == 0, res.stdout[-3000:]
    # One line from rank 0 (two ranks printing at once can interleave their lines).
    line = next(ln for ln in res.stdout.splitlines() if ln.startswith("TIMES "))
    times = {h: float(t) for h, t in (pair.split("=") for pair in line.split()[1:])}
    assert set(times) == {"node0", "node1"}, res.stdout
    # Each node sends at least half of the 4 MB vector (recursive halving); over 100 Mbit/s that is >= 0.16 s.
    assert min(moved) >= 2e6, f"traffic did not cross the links: {moved} bytes"
    assert min(times.values()) >= 0.9 * 2e6 * 8 / 1e8, f"faster than the link allows: {times}"


def test_run_cli_reports_bytes_and_exit_code(cluster_available, state_dir):
    res = _cli("run", "--nodes", "2", "--rate", "1gbit", "--json", "--", sys.executable, "-c",
               "import sys; from mpi4py import MPI; sys.exit(3 if MPI.COMM_WORLD.rank == 1 else 0)")
    assert res.returncode != 0, res
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["nodes"] == 2 and summary["returncode"] == res.returncode and len(summary["links"]) == 2
    assert "torn down" in res.stderr


def _mtus(cluster: Cluster) -> dict[str, int]:
    net = cluster.network
    assert net is not None
    return {name: int(Path("/sys/class/net", name, "mtu").read_text()) for name in (net.bridge, net.veth(0),
                                                                                    net.veth(1))}


@pytest.mark.parametrize("mtu", [None, 1500])
def test_mtu_takes_effect(cluster_available, state_dir, mtu):
    """--mtu (default 9000, jumbo frames) is the MTU of each node's eth0 (read inside the node by every rank), of the
    host ends of the veths and of the bridge; a full-size frame crosses a link unfragmented."""
    want = DEFAULT_MTU if mtu is None else mtu
    flag = [] if mtu is None else ["--mtu", str(mtu)]
    res = _cli("run", "--nodes", "2", "--ranks-per-node", "2", "--json", *flag, "--", "cat", "/sys/class/net/eth0/mtu")
    assert res.returncode == 0, res
    lines = res.stdout.strip().splitlines()
    assert lines[:-1] == [str(want)] * 4, res.stdout
    assert json.loads(lines[-1])["mtu"] == want and f"MTU {want}," in res.stderr, res
    with Cluster(ClusterSpec(nodes=2, rate_bits=1e9, **({} if mtu is None else {"mtu": mtu}))) as cluster:
        assert set(_mtus(cluster).values()) == {want}
        # The largest IPv4 datagram the MTU allows, with fragmentation forbidden, crosses node0 -> node1 whole; one
        # byte more is refused at node0's eth0.
        net = cluster.network
        recv = ("import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(20); "
                f"s.bind(('{net.address(1)}', 9009)); print('ready', flush=True); print(len(s.recv(65536)))")
        send = ("import socket, sys; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
                "s.setsockopt(socket.IPPROTO_IP, 10, 2); "  # IP_MTU_DISCOVER = IP_PMTUDISC_DO: never fragment
                f"s.sendto(bytes(int(sys.argv[1])), ('{net.address(1)}', 9009))")
        receiver = subprocess.Popen(["ip", "netns", "exec", net.netns(1), sys.executable, "-c", recv],
                                    stdout=subprocess.PIPE, text=True)
        try:
            assert receiver.stdout is not None and receiver.stdout.readline().strip() == "ready"
            over = subprocess.run(["ip", "netns", "exec", net.netns(0), sys.executable, "-c", send, str(want - 27)],
                                  capture_output=True, text=True, timeout=30, check=False)
            assert over.returncode != 0 and "Message too long" in over.stderr, over
            sent = subprocess.run(["ip", "netns", "exec", net.netns(0), sys.executable, "-c", send, str(want - 28)],
                                  capture_output=True, text=True, timeout=30, check=False)
            assert sent.returncode == 0, sent
            out, _ = receiver.communicate(timeout=30)
        finally:
            receiver.kill()
            receiver.wait()
        assert receiver.returncode == 0 and out.strip() == str(want - 28), out


def _wait_for_state(state_dir: str, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        files = list(Path(state_dir).glob("*.json"))
        if files:
            state = json.loads(files[0].read_text())
            if len(state["created"]) == 1 + 2 * state["nodes"]:  # bridge + (netns, veth) per node
                return state
        time.sleep(0.1)
    raise AssertionError("the cluster did not come up")


def _exists(state: dict) -> list[str]:
    ns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout
    names = [i.split(":", 1)[1] for i in state["created"]]
    return [n for n in names if n in ns or Path("/sys/class/net", n).exists()]


@pytest.mark.parametrize("sig, rc", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_tears_down(cluster_available, state_dir, sig, rc):
    proc = subprocess.Popen([*CLI, "run", "--nodes", "2", "--", "sleep", "60"], cwd=REPO, env=mpi_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    state = _wait_for_state(state_dir)
    time.sleep(1.0)  # the job is running inside the nodes
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == rc, out
    assert f"stopped by {signal.Signals(sig).name}; torn down" in out, out
    assert not _exists(state), f"left behind: {_exists(state)}"
    assert not list(Path(state_dir).glob("*.json"))


def test_cleanup_removes_what_a_killed_harness_left(cluster_available, state_dir):
    proc = subprocess.Popen([*CLI, "run", "--nodes", "2", "--", "sleep", "60"], cwd=REPO, env=mpi_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    state = _wait_for_state(state_dir)
    os.killpg(proc.pid, signal.SIGKILL)  # no trap runs: the namespaces stay
    proc.wait(timeout=10)
    assert _exists(state), "expected leftovers after kill -9"
    res = _cli("cleanup", env={"LOCALSGD_CLUSTER_STATE": state_dir})
    assert res.returncode == 0 and state["run_id"] in res.stdout, res
    assert not _exists(state), f"cleanup left: {_exists(state)}"
