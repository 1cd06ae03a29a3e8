"""Launch MPI jobs from pytest: python -m mpi4py semantics, a hard timeout, and the job's output on failure."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

__all__ = ["REPO", "MPIRUN", "mpi_env", "mpirun", "run_checks", "WORLD_SIZES"]

REPO = Path(__file__).resolve().parents[2]
# The mpich wheel installs mpirun next to the interpreter of the virtual environment.
MPIRUN = str(Path(sys.executable).with_name("mpirun"))
# The world sizes every parallel test body must pass at (powers of two and not).
WORLD_SIZES = (1, 2, 3, 4, 5, 8, 16)


def mpi_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for ranks: one BLAS thread each, MPICH yielding while it waits, the repo importable."""
    env = dict(os.environ)
    env.update({
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "MPIR_CVAR_ENABLE_HEAVY_YIELD": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")])),
        "PYTHONUNBUFFERED": "1",
    })
    if extra:
        env.update(extra)
    return env


def mpirun(nprocs: int, args: list[str], *, timeout: float = 120.0, env: dict[str, str] | None = None,
           cwd: str | os.PathLike[str] | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run `mpirun -n NPROCS python -m mpi4py ARGS...`; an uncaught exception on any rank aborts the whole job.

    The job runs in its own process group, killed whole when `timeout` seconds pass, so a hang fails the test
    instead of the suite. With check=True a non-zero exit raises AssertionError carrying the output's tail.
    """
    cmd = [MPIRUN, "-n", str(nprocs), sys.executable, "-m", "mpi4py", *args]
    proc = subprocess.Popen(cmd, cwd=cwd or REPO, env=mpi_env(env), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        raise AssertionError(f"MPI job timed out after {timeout:.0f} s: {' '.join(cmd)}\n{out[-4000:]}") from None
    result = subprocess.CompletedProcess(cmd, proc.returncode, out, "")
    if check and proc.returncode != 0:
        raise AssertionError(f"MPI job failed with exit code {proc.returncode}: {' '.join(cmd)}\n{out[-6000:]}")
    return result


def run_checks(nprocs: int, module: str, names: list[str], *, timeout: float = 120.0,
               env: dict[str, str] | None = None) -> str:
    """Run check functions `module.name` on NPROCS ranks and assert that every one of them reported success."""
    specs = [f"{module}:{name}" for name in names]
    out = mpirun(nprocs, ["-m", "tests.parallel.runner", *specs], timeout=timeout, env=env).stdout
    for spec in specs:
        assert f"CHECK-PASSED {spec}" in out, f"{spec} did not report success on {nprocs} ranks:\n{out[-4000:]}"
    return out
