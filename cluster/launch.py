"""Run MPI jobs across the emulated nodes: a hostfile, Hydra's ssh launcher aimed at the namespaces, the tcp netmod."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Self

from .errors import ClusterError
from .netns import ClusterSpec, Network

__all__ = ["Cluster", "NETWORK_ENV", "find_mpiexec"]

# Without these MPICH would see that every "node" shares this machine's memory and never use the network: the
# OFI netmod with libfabric's tcp provider on the node's eth0 carries every inter-node message. Inside one node
# MPICH still uses shared memory, as on a real cluster.
NETWORK_ENV = {"MPICH_CH4_NETMOD": "ofi", "FI_PROVIDER": "tcp", "FI_TCP_IFACE": "eth0"}
# Ranks on an oversubscribed box: one BLAS thread each, and MPICH yields the CPU while it polls.
RANK_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
            "MPIR_CVAR_ENABLE_HEAVY_YIELD": "1"}

_LAUNCHER = """#!/bin/sh
# Hydra's ssh launcher runs: THIS [-x] HOST 'COMMAND ...'. Start COMMAND inside HOST's network namespace, in a UTS
# namespace of its own whose hostname is HOST (MPICH tells nodes apart by hostname), as ssh would: through sh.
while [ "${{1#-}}" != "$1" ]; do shift; done
host="$1"; shift
case "$host" in
  node[0-9]*) ;;
  *) echo "cluster {run_id}: unknown host '$host' (this cluster has node0..node{last})" >&2; exit 1 ;;
esac
exec ip netns exec "{prefix}n${{host#node}}" unshare --uts sh -c "hostname $host && exec $*"
"""

_WRAPPER = """#!/bin/sh
# mpiexec for cluster {run_id}: ranks start inside the emulated nodes and talk over their shaped links.
{exports}
exec "{mpiexec}" -launcher ssh -launcher-exec "{launcher}" -iface {bridge} "$@"
"""


def find_mpiexec() -> str:
    """The Hydra mpiexec beside this interpreter (the mpich wheel's), else the first on PATH."""
    beside = Path(sys.executable).with_name("mpiexec")
    if beside.exists():
        return str(beside)
    found = shutil.which("mpiexec")
    if found is None:
        raise ClusterError("no mpiexec found beside the interpreter or on PATH (pip install mpich)")
    return found


class Cluster:
    """Context manager: `with Cluster(ClusterSpec(nodes=4, ranks_per_node=2, rate_bits=2e8)) as c: c.run([...])`.

    On entry it builds the nodes and writes, in a private folder, the hostfile (`node0:R` per line, the format
    `mpirun -f` takes on a real cluster), the launcher and an `mpiexec`/`mpirun` pair that use them. On exit (also
    on an exception or Ctrl-C) it kills what still runs in the nodes and removes everything it made.
    """

    def __init__(self, spec: ClusterSpec) -> None:
        self.spec = spec
        self.network: Network | None = None
        self.folder: Path | None = None

    def __enter__(self) -> Self:
        try:
            self.network = Network.create(self.spec)
            self.folder = Path(tempfile.mkdtemp(prefix=f"localsgd-cluster-{self.network.run_id}-"))
            self._write_files()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.network is not None:
            self.network.destroy()
            self.network = None
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None

    # --- files ----------------------------------------------------------------------------------------------
    def _net(self) -> Network:
        if self.network is None or self.folder is None:
            raise ClusterError("the cluster is not up (use it inside `with Cluster(spec) as cluster:`)")
        return self.network

    @property
    def hostfile(self) -> Path:
        self._net()
        assert self.folder is not None
        return self.folder / "hostfile"

    @property
    def bin_dir(self) -> Path:
        self._net()
        assert self.folder is not None
        return self.folder / "bin"

    def _write_files(self) -> None:
        net = self._net()
        self.hostfile.write_text("".join(f"{net.hostname(i)}:{self.spec.ranks_per_node}\n"
                                         for i in range(self.spec.nodes)))
        launcher = self.bin_dir.parent / "launch-node"
        self.bin_dir.mkdir()
        launcher.write_text(_LAUNCHER.format(run_id=net.run_id, prefix=f"{net.bridge[:-1]}",
                                             last=self.spec.nodes - 1))
        launcher.chmod(0o755)
        exported = {**NETWORK_ENV, "HYDRA_HOST_FILE": str(self.hostfile)}
        exports = "\n".join(f"export {k}={v}" for k, v in exported.items())
        wrapper = _WRAPPER.format(run_id=net.run_id, exports=exports, mpiexec=find_mpiexec(), launcher=launcher,
                                  bridge=net.bridge)
        for name in ("mpiexec", "mpirun"):
            path = self.bin_dir / name
            path.write_text(wrapper)
            path.chmod(0o755)

    # --- running --------------------------------------------------------------------------------------------
    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """The environment for a command that launches MPI on this cluster (our mpirun first on PATH)."""
        env = dict(os.environ)
        for key, value in RANK_ENV.items():
            env.setdefault(key, value)
        env.update(NETWORK_ENV)
        env["PATH"] = os.pathsep.join([str(self.bin_dir), env.get("PATH", "")])
        env["HOSTFILE"] = env["HYDRA_HOST_FILE"] = str(self.hostfile)
        env["LOCALSGD_CLUSTER_NODES"] = str(self.spec.nodes)
        env["LOCALSGD_CLUSTER_RANKS_PER_NODE"] = str(self.spec.ranks_per_node)
        if extra:
            env.update(extra)
        return env

    def mpiexec(self, nprocs: int | None = None) -> list[str]:
        """The command prefix that starts `nprocs` ranks (default: all) across the nodes, node0's first."""
        n = self.spec.size if nprocs is None else nprocs
        return [str(self.bin_dir / "mpiexec"), "-f", str(self.hostfile), "-n", str(n)]

    def run(self, cmd: list[str], *, mpi: bool = True, nprocs: int | None = None, timeout: float | None = None,
            env: dict[str, str] | None = None, capture: bool = False,
            cwd: str | os.PathLike[str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run `cmd` under our mpiexec (mpi=True) or as it is with our mpirun on PATH (mpi=False, for scripts).

        The job runs in its own process group: a timeout, Ctrl-C or SIGTERM stops the whole group (the ranks
        inside the nodes die with the namespaces' teardown). Returns the exit code and, with capture=True, the
        output (stdout and stderr merged).
        """
        full = [*self.mpiexec(nprocs), *cmd] if mpi else list(cmd)
        out = subprocess.PIPE if capture else None
        proc = subprocess.Popen(full, env=self.env(env), cwd=cwd, stdout=out,
                                stderr=subprocess.STDOUT if capture else None, text=True, start_new_session=True)
        try:
            text, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _stop_group(proc)
            text, _ = proc.communicate()
            return subprocess.CompletedProcess(full, 124, text, "")
        except BaseException:
            _stop_group(proc, signal.SIGINT)
            raise
        return subprocess.CompletedProcess(full, proc.returncode, text, "")


def _stop_group(proc: subprocess.Popen[str], first: int = signal.SIGTERM) -> None:
    """Ask the job's process group to stop, then kill it if it has not within 5 s."""
    for sig, wait in ((first, 5.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue
