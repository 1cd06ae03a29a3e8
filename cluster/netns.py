"""Emulated nodes: one network + UTS namespace per node, veth pairs into one bridge, tbf-shaped links."""
from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ClusterError

__all__ = ["ClusterSpec", "Network", "parse_rate", "check_mtu", "format_rate", "state_dir", "unavailable_reason",
           "cleanup_stale", "PREFIX", "DEFAULT_MTU", "MIN_MTU", "MAX_MTU"]

# Every object a run creates is named PREFIX + a 5-hex-digit run id + a role letter (+ node index), e.g.
# lsgd3fa21b (bridge), lsgd3fa21v0 (host end of node 0's veth), lsgd3fa21n0 (node 0's network namespace).
PREFIX = "lsgd"
_NAME = re.compile(rf"^{PREFIX}[0-9a-f]{{5}}[bvn]\d*$")
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(bit|kbit|mbit|gbit|tbit)?(?:/s)?\s*$", re.IGNORECASE)
# Link MTU: 1280 is IPv6's minimum, 9216 the largest common jumbo frame; a frame then always fits in the tbf
# bucket (at least 32 KiB), which drops any packet larger than its burst.
MIN_MTU, MAX_MTU = 1280, 9216
# Jumbo frames by default: with 8 ranks and every node's TCP work on a few cores, the kernel's per-packet work
# and 1500-byte frames' headers (5 % of the wire) kept large messages well below the shaped rate (bench-cluster at
# >= 8 MiB: 73-88 % at 1500, 80-97 % at 9000, where headers are 1 %; docs/README-cluster.md). tbf sets the rate
# either way.
DEFAULT_MTU = 9000
_UNITS = {"bit": 1.0, "kbit": 1e3, "mbit": 1e6, "gbit": 1e9, "tbit": 1e12}


def parse_rate(text: str | float) -> float:
    """A link rate in bit/s from '200mbit', '1gbit', '500Mbit/s' or a plain number of bit/s."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
    else:
        match = _RATE.match(str(text))
        if not match:
            raise ClusterError(f"rate must look like 200mbit, 1gbit or 500000000 (bit/s); got {text!r}")
        value = float(match.group(1)) * _UNITS[(match.group(2) or "bit").lower()]
    if not 1e5 <= value <= 1e11:
        raise ClusterError(f"rate must be between 100kbit and 100gbit; got {text!r}")
    return value


def check_mtu(mtu: object) -> int:
    """The link MTU in bytes: an integer from MIN_MTU (IPv6's minimum) to MAX_MTU (the largest jumbo frame)."""
    if isinstance(mtu, bool) or not isinstance(mtu, int) or not MIN_MTU <= mtu <= MAX_MTU:
        raise ClusterError(f"mtu must be an integer from {MIN_MTU} to {MAX_MTU} bytes (1500: standard Ethernet, "
                           f"9000: jumbo frames); got {mtu!r}")
    return mtu


def format_rate(bits: float) -> str:
    for unit, scale in (("gbit", 1e9), ("mbit", 1e6), ("kbit", 1e3)):
        if bits >= scale:
            return f"{bits / scale:g}{unit}"
    return f"{bits:g}bit"


@dataclass(kw_only=True, frozen=True)
class ClusterSpec:
    """What to build: `nodes` nodes of `ranks_per_node` ranks, each node's NIC shaped to `rate_bits` per direction,
    every link (veth ends and bridge) with an MTU of `mtu` bytes."""

    nodes: int
    ranks_per_node: int = 1
    rate_bits: float = 1e9
    mtu: int = DEFAULT_MTU

    def __post_init__(self) -> None:
        if isinstance(self.nodes, bool) or not isinstance(self.nodes, int) or not 1 <= self.nodes <= 64:
            raise ClusterError(f"nodes must be an integer from 1 to 64; got {self.nodes!r}")
        rpn = self.ranks_per_node
        if isinstance(rpn, bool) or not isinstance(rpn, int) or not 1 <= rpn <= 64:
            raise ClusterError(f"ranks per node must be an integer from 1 to 64; got {rpn!r}")
        parse_rate(self.rate_bits)
        check_mtu(self.mtu)

    @property
    def size(self) -> int:
        return self.nodes * self.ranks_per_node


def state_dir() -> Path:
    """Where each run records what it created (so a crashed run's leftovers can be removed by name)."""
    return Path(os.environ.get("LOCALSGD_CLUSTER_STATE", "/run/localsgd-cluster"))


def _sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(args), check=False, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise ClusterError(f"'{' '.join(args)}' failed: {(proc.stderr or proc.stdout).strip().splitlines()[-1:]}")
    return proc


def unavailable_reason() -> str | None:
    """None when this machine can build a cluster, else one line saying why not (not root, no netns, no tbf)."""
    missing = [t for t in ("ip", "tc", "unshare") if shutil.which(t) is None]
    if missing:
        return f"the emulated cluster needs {', '.join(missing)} (iproute2, util-linux) on PATH"
    if os.geteuid() != 0:
        return "the emulated cluster needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN for network and UTS namespaces)"
    probe = f"{PREFIX}{secrets.token_hex(3)[:5]}n0"
    try:
        made = _sh("ip", "netns", "add", probe, check=False)
        if made.returncode != 0:
            return f"cannot create a network namespace: {made.stderr.strip() or made.stdout.strip()}"
        _sh("ip", "-n", probe, "link", "set", "lo", "up", check=False)
        tbf = _sh("tc", "-n", probe, "qdisc", "add", "dev", "lo", "root", "tbf", "rate", "100mbit", "burst", "32kb",
                  "latency", "50ms", check=False)
        if tbf.returncode != 0:
            return f"tc cannot add a tbf qdisc (kernel without sch_tbf?): {tbf.stderr.strip()}"
        uts = _sh("unshare", "--uts", "true", check=False)
        if uts.returncode != 0:
            return f"cannot create a UTS namespace: {uts.stderr.strip()}"
    finally:
        _sh("ip", "netns", "del", probe, check=False)
    return None


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat), None if it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _owner_alive(pid: int, start: str | None) -> bool:
    """True while the process that made a run still exists (the same process: pids are reused)."""
    now = _start_time(pid)
    return now is not None and (start is None or now == start)


@dataclass(kw_only=True)
class Network:
    """The namespaces, veths and bridge of one run. Create with `Network.create(spec)`, remove with `destroy()`."""

    spec: ClusterSpec
    run_id: str
    subnet: str                       # e.g. "10.213.7" (a /24 of which .1.. are nodes, .254 the bridge)
    created: list[str] = field(default_factory=list)   # "netns:NAME" / "link:NAME", in creation order

    @property
    def bridge(self) -> str:
        return f"{PREFIX}{self.run_id}b"

    def netns(self, i: int) -> str:
        return f"{PREFIX}{self.run_id}n{i}"

    def veth(self, i: int) -> str:
        return f"{PREFIX}{self.run_id}v{i}"

    @staticmethod
    def hostname(i: int) -> str:
        return f"node{i}"

    def address(self, i: int) -> str:
        return f"{self.subnet}.{i + 1}"

    @property
    def state_file(self) -> Path:
        return state_dir() / f"{self.run_id}.json"

    # --- creation -------------------------------------------------------------------------------------------
    @classmethod
    def create(cls, spec: ClusterSpec) -> Network:
        """Build the cluster; on any failure remove what was made and raise ClusterError."""
        cleanup_stale()
        net = cls(spec=spec, run_id=secrets.token_hex(3)[:5], subnet=_free_subnet())
        try:
            net._build()
        except BaseException:
            net.destroy()
            raise
        return net

    def _record(self, item: str) -> None:
        """Write down an object *before* creating it, so that a crash in between still leaves its name behind."""
        self.created.append(item)
        state = {"run_id": self.run_id, "pid": os.getpid(), "pid_start": _start_time(os.getpid()),
                 "subnet": self.subnet, "created": self.created, "nodes": self.spec.nodes,
                 "ranks_per_node": self.spec.ranks_per_node, "rate_bits": self.spec.rate_bits, "mtu": self.spec.mtu}
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        os.replace(tmp, self.state_file)

    def _build(self) -> None:
        rate = f"{int(self.spec.rate_bits)}bit"
        # Queue of ~50 ms at the link rate (at least 64 KiB): TCP keeps the link busy without long stalls.
        burst = max(32 * 1024, int(self.spec.rate_bits / 8 / 1000))
        tbf = ["tbf", "rate", rate, "burst", str(burst), "latency", "50ms"]
        self._record(f"link:{self.bridge}")
        mtu = str(self.spec.mtu)
        _sh("ip", "link", "add", self.bridge, "mtu", mtu, "type", "bridge")
        _sh("ip", "addr", "add", f"{self.subnet}.254/24", "dev", self.bridge)
        _sh("ip", "link", "set", self.bridge, "up")
        for i in range(self.spec.nodes):
            ns, veth = self.netns(i), self.veth(i)
            self._record(f"netns:{ns}")
            _sh("ip", "netns", "add", ns)
            self._record(f"link:{veth}")
            _sh("ip", "link", "add", veth, "mtu", mtu, "type", "veth", "peer", "name", "eth0", "mtu", mtu, "netns", ns)
            _sh("ip", "link", "set", veth, "master", self.bridge, "up")
            _sh("ip", "-n", ns, "addr", "add", f"{self.address(i)}/24", "dev", "eth0")
            _sh("ip", "-n", ns, "link", "set", "eth0", "up")
            _sh("ip", "-n", ns, "link", "set", "lo", "up")
            # Both ends shaped: the host end limits what the node receives, eth0 what it sends (full duplex).
            _sh("tc", "qdisc", "add", "dev", veth, "root", *tbf)
            _sh("tc", "-n", ns, "qdisc", "add", "dev", "eth0", "root", *tbf)

    # --- accounting -----------------------------------------------------------------------------------------
    def link_bytes(self) -> list[dict[str, int]]:
        """Bytes each node's NIC has sent and received so far (read from the host end of its veth)."""
        out = []
        for i in range(self.spec.nodes):
            stats = Path("/sys/class/net") / self.veth(i) / "statistics"
            # The host end's rx is what the node sent; its tx is what the node received.
            out.append({"sent": int((stats / "rx_bytes").read_text()),
                        "received": int((stats / "tx_bytes").read_text())})
        return out

    # --- removal --------------------------------------------------------------------------------------------
    def destroy(self) -> None:
        """Kill what still runs in our namespaces, delete every object we recorded, then the state file."""
        _destroy(self.created)
        self.state_file.unlink(missing_ok=True)


def _destroy(created: list[str]) -> None:
    for item in reversed(created):
        kind, name = item.split(":", 1)
        if not _NAME.match(name):  # never touch a name we could not have made
            continue
        if kind == "netns":
            pids = _sh("ip", "netns", "pids", name, check=False).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), 9)
            _sh("ip", "netns", "del", name, check=False)
        else:
            _sh("ip", "link", "del", name, check=False)
    # Namespace teardown is asynchronous in the kernel: wait (briefly) until none of our links is left.
    links = [i.split(":", 1)[1] for i in created if i.startswith("link:")]
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and any(Path("/sys/class/net", n).exists() for n in links):
        time.sleep(0.05)


def _free_subnet() -> str:
    """A 10.213.X /24 that no route on this machine uses and no other live run holds."""
    routes = _sh("ip", "-4", "route", "show", "table", "all", check=False).stdout
    taken = set(re.findall(r"\b10\.213\.(\d+)\.", routes))
    for path in state_dir().glob("*.json"):
        try:
            taken.add(json.loads(path.read_text())["subnet"].rsplit(".", 1)[1])
        except (OSError, ValueError, KeyError, IndexError):
            continue
    for x in range(1, 255):
        if str(x) not in taken:
            return f"10.213.{x}"
    raise ClusterError("no free 10.213.X.0/24 subnet for the emulated cluster (254 in use)")


def cleanup_stale(*, everything: bool = False) -> list[str]:
    """Remove the objects of runs whose process is gone (or of every recorded run with everything=True).

    Returns the run ids cleaned. Only names recorded in a state file, and matching our naming pattern, are touched.
    """
    cleaned = []
    for path in sorted(state_dir().glob("*.json")):
        try:
            state: dict[str, Any] = json.loads(path.read_text())
            pid, created = int(state["pid"]), list(state["created"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if everything or not _owner_alive(pid, state.get("pid_start")):
            _destroy(created)
            path.unlink(missing_ok=True)
            cleaned.append(path.stem)
    return cleaned
