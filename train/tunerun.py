"""The tuner's statistical runs: which engine runs them, their commands, their state on disk, one launch."""
from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from train.errors import TrainError

__all__ = ["ENGINES", "RunState", "run_state", "virtual_available", "pick_engine", "run_command", "launch",
           "mpirun_path"]

log = logging.getLogger(__name__)

ENGINES = ("auto", "mpi", "virtual")


def mpirun_path(given: str | None = None) -> str:
    """The mpirun to launch with (train.calibrate's rule: --mpirun, beside this Python, or on PATH)."""
    from train.calibrate import mpirun_path as find
    return find(given)


def virtual_available() -> bool:
    """Whether this trainer has the virtual-worker engine (`python -m train --engine virtual --workers K`)."""
    import importlib.util
    try:
        return importlib.util.find_spec("train.virtual") is not None
    except (ImportError, ValueError):
        return False


def pick_engine(choice: str) -> str:
    """The engine a run starts on: mpi, or virtual when asked for (or, with auto, when the trainer has it)."""
    if choice not in ENGINES:
        raise TrainError(f"engine must be one of {', '.join(ENGINES)}, got {choice!r}")
    if choice == "virtual" and not virtual_available():
        raise TrainError("engine virtual: this trainer has no virtual-worker engine (train.virtual); use --engine "
                         "mpi or auto")
    if choice == "auto":
        return "virtual" if virtual_available() else "mpi"
    return choice


@dataclass(kw_only=True, frozen=True)
class RunState:
    """A run folder as the tuner finds it: "absent", "started" (no summary yet), or summary.json's status."""

    status: str
    epochs_done: float = 0.0
    engine: str | None = None

    def reached(self, epochs: float, total: float) -> bool:
        """Whether the run has trained to `epochs` (of `total`): paused there or later, or complete."""
        if self.status == "completed":
            return True
        return self.status == "paused" and self.epochs_done + 1e-9 >= min(epochs, total)


def run_state(run_dir: Path) -> RunState:
    """Read the state of a run folder (a summary that cannot be read counts as none yet)."""
    if not (run_dir / "config.json").is_file():
        return RunState(status="absent")
    try:
        s = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
        return RunState(status=str(s.get("status")), epochs_done=float(s.get("epochs_done") or 0.0),
                        engine=s.get("engine"))
    except (OSError, ValueError, TypeError):
        return RunState(status="started")


def run_command(*, engine: str, K: int, flags: list[str], run_dir: Path, resume: bool, stop_at: float | None,
                mpirun: str) -> list[str]:
    """The argv of one statistical run (fresh, or a resume of `run_dir`), paused at `stop_at` epochs if given."""
    tail = ["--quiet", "--no-progress"] + ([] if stop_at is None else ["--stop-at-epoch", f"{stop_at:.10g}"])
    body = ["--resume", str(run_dir)] if resume else [*flags, "--out-dir", str(run_dir)]
    if engine == "virtual":
        return [sys.executable, "-m", "train", "--engine", "virtual", "--workers", str(K), *body, *tail]
    return [mpirun, "-n", str(K), sys.executable, "-m", "train", *body, *tail]


def _die_with_parent() -> None:
    """In the child: receive SIGTERM when the tuner dies (even by SIGKILL), so no run is left behind (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)   # PR_SET_PDEATHSIG


def launch(cmd: list[str], log_path: Path) -> tuple[int, float]:
    """Run `cmd` with its output in `log_path`; (exit status, seconds). A SIGTERM to the tuner is passed on to it,
    so the run checkpoints and stops as it would alone; Ctrl-C reaches it from the terminal."""
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("MPIR_CVAR_ENABLE_HEAVY_YIELD", "1")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(log_path, "ab") as out:
        out.write(f"$ {' '.join(cmd)}\n".encode())
        out.flush()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, preexec_fn=_die_with_parent)
        previous = signal.getsignal(signal.SIGTERM)

        def forward(signum: int, frame: Any) -> None:
            proc.send_signal(signum)

        signal.signal(signal.SIGTERM, forward)
        try:
            rc = proc.wait()
        except KeyboardInterrupt:  # Ctrl-C: the run got it too (same process group); let it checkpoint, then stop
            proc.wait()
            raise
        finally:
            signal.signal(signal.SIGTERM, previous)
    return rc, time.perf_counter() - t0


def last_lines(log_path: Path, n: int = 3) -> str:
    """The last lines of a run's log, for an error message."""
    try:
        lines = [x for x in log_path.read_text(errors="replace").splitlines() if x.strip()]
    except OSError:
        return "(no log)"
    return " | ".join(lines[-n:]) or "(no output)"
