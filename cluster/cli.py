"""Command line of the emulated cluster: check the machine, run a command across nodes, remove leftovers."""
from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from typing import Any

from .errors import ClusterError
from .launch import Cluster
from .netns import (
    DEFAULT_MTU,
    MAX_MTU,
    MIN_MTU,
    ClusterSpec,
    check_mtu,
    cleanup_stale,
    format_rate,
    parse_rate,
    unavailable_reason,
)

__all__ = ["main", "build_parser"]

EPILOG = """examples (as root):
  python -m cluster check
  python -m cluster run --nodes 4 --ranks-per-node 2 --rate 200mbit -- python -m comm bench --sizes 8M
  python -m cluster run --nodes 2 --ranks-per-node 2 --rate 1gbit --no-mpirun -- bash my_launch_script.sh
  python -m cluster run --nodes 4 --rate 500mbit --mtu 1500 -- python -m comm bench --sizes 8M   # standard frames
  python -m cluster cleanup            # remove what a killed run left behind
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m cluster", epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     description="A multi-node MPI cluster emulated on one Linux machine: each node "
                                                 "is a network + UTS namespace whose NIC is shaped to --rate in "
                                                 "each direction; ranks of one node share memory, nodes talk TCP.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("check", help="say whether this machine can host the emulation (exit 0) or why not (exit 2)")
    run = sub.add_parser("run", help="bring up the nodes, run a command across them, tear everything down")
    run.add_argument("--nodes", type=int, default=2, help="number of nodes (default 2)")
    run.add_argument("--ranks-per-node", "--ppn", type=int, default=1, dest="ranks_per_node",
                     help="MPI ranks per node (default 1)")
    run.add_argument("--rate", default="1gbit", help="each node's link rate per direction, e.g. 200mbit, 1gbit "
                                                     "(default 1gbit)")
    run.add_argument("--mtu", default=str(DEFAULT_MTU), metavar="BYTES",
                     help=f"MTU of every link, {MIN_MTU}-{MAX_MTU} (default {DEFAULT_MTU}, jumbo frames; 1500 for "
                          "standard Ethernet frames)")
    run.add_argument("--timeout", type=float, default=None, metavar="S",
                     help="stop the job after S seconds (exit 124)")
    run.add_argument("--no-mpirun", action="store_true",
                     help="run the command as it is (a launch script); `mpirun`/`mpiexec` on its PATH and "
                          "$HOSTFILE point at the cluster")
    run.add_argument("--json", action="store_true", help="print the run's summary (link bytes, times) as JSON")
    run.add_argument("cmd", nargs=argparse.REMAINDER, help="-- COMMAND ... (run under mpiexec across all ranks)")
    clean = sub.add_parser("cleanup", help="remove the namespaces, links and bridges of runs whose process is gone")
    clean.add_argument("--all", action="store_true", help="also those of runs still alive (stops them)")
    return parser


class _Stopped(KeyboardInterrupt):
    """SIGTERM (a batch system, `kill`): unwinds like Ctrl-C, so the cluster is torn down; exit 128 + signal."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"signal {signum}")
        self.signum = signum


def _terminate(signum: int, frame: Any) -> None:
    raise _Stopped(signum)


def _mtu(text: str) -> int:
    """--mtu as typed: an integer in range, else one error line that names the value and what is valid."""
    try:
        value = int(text)
    except ValueError:
        raise ClusterError(f"--mtu must be an integer from {MIN_MTU} to {MAX_MTU} bytes (1500: standard Ethernet, "
                           f"9000: jumbo frames); got {text!r}") from None
    try:
        return check_mtu(value)
    except ClusterError as exc:
        raise ClusterError(f"--{exc}") from None


def _run(args: argparse.Namespace) -> int:
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        raise ClusterError("run needs a command after --, e.g. -- python -m comm bench")
    if args.timeout is not None and not args.timeout > 0:
        raise ClusterError(f"--timeout must be a positive number of seconds; got {args.timeout}")
    spec = ClusterSpec(nodes=args.nodes, ranks_per_node=args.ranks_per_node, rate_bits=parse_rate(args.rate),
                       mtu=_mtu(args.mtu))
    reason = unavailable_reason()
    if reason:
        raise ClusterError(reason)
    signal.signal(signal.SIGTERM, _terminate)  # a batch system's SIGTERM tears the cluster down like Ctrl-C
    start = time.perf_counter()
    with Cluster(spec) as cluster:
        net = cluster.network
        assert net is not None
        up = time.perf_counter() - start
        print(f"cluster {net.run_id}: {spec.nodes} nodes x {spec.ranks_per_node} ranks, {format_rate(spec.rate_bits)} "
              f"per NIC direction, MTU {spec.mtu}, up in {up:.2f} s; hostfile {cluster.hostfile}", file=sys.stderr,
              flush=True)
        before = net.link_bytes()
        t0 = time.perf_counter()
        rc: int = cluster.run(cmd, mpi=not args.no_mpirun, timeout=args.timeout).returncode
        wall = time.perf_counter() - t0
        moved = [{k: a[k] - b[k] for k in a} for a, b in zip(net.link_bytes(), before)]
        summary = {"run_id": net.run_id, "nodes": spec.nodes, "ranks_per_node": spec.ranks_per_node,
                   "rate_bits": spec.rate_bits, "mtu": spec.mtu, "returncode": rc, "wall_s": round(wall, 3),
                   "links": moved}
    if args.json:
        print(json.dumps(summary), flush=True)
    sent = ", ".join(f"node{i} {m['sent'] / 1e6:.2f}/{m['received'] / 1e6:.2f}" for i, m in enumerate(moved))
    note = " (timed out)" if rc == 124 and args.timeout else ""
    print(f"cluster {summary['run_id']}: exit {rc}{note} after {wall:.2f} s; MB sent/received per node: {sent}; "
          f"torn down", file=sys.stderr, flush=True)
    return rc


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "check":
            reason = unavailable_reason()
            if reason:
                print(f"error: {reason}", file=sys.stderr)
                return 2
            print("ok: network namespaces, veth, bridge, tbf and UTS namespaces work here")
            return 0
        if args.command == "cleanup":
            cleaned = cleanup_stale(everything=args.all)
            print(f"removed the leftovers of {len(cleaned)} run(s){': ' + ', '.join(cleaned) if cleaned else ''}")
            return 0
        return _run(args)
    except ClusterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        signum = exc.signum if isinstance(exc, _Stopped) else signal.SIGINT
        print(f"cluster: stopped by {signal.Signals(signum).name}; torn down", file=sys.stderr)
        return 128 + signum
