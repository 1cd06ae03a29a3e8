"""Signals before the run loop: recorded from process start, agreed on by the ranks during start-up (no MPI here)."""
from __future__ import annotations

import signal
import threading
from typing import Any

from train.errors import AgreedInterrupt

__all__ = ["EarlySignals", "EARLY", "STOP_SIGNALS", "interrupt_on_signal"]

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class EarlySignals:
    """From process start until a run's StopAgreement takes over, SIGINT/SIGTERM are only recorded (a second one
    raises KeyboardInterrupt): the ranks then agree on them at their next agreement step during start-up, so a
    Ctrl-C there ends every rank with one line from rank 0 instead of a traceback per rank and an MPI_Abort."""

    def __init__(self) -> None:
        self.seen = 0

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.seen:
            raise KeyboardInterrupt
        self.seen = signum


EARLY = EarlySignals()


def interrupt_on_signal(signum: int) -> None:
    """After a start-up agreement: stop every rank alike when any rank received SIGINT/SIGTERM (exit 128 + signal)."""
    if signum:
        raise AgreedInterrupt(f"interrupted by {signal.Signals(signum).name} during start-up, before the first "
                              f"training step: no checkpoint was taken; run the command again", signum)
