"""Overlapped syncs of local SGD: the average of the models at step t is applied tau steps later, with a correction."""
# At a sync after step t every worker snapshots its model x_t, starts the all-reduce of the snapshot (nonblocking)
# and goes on stepping. After step t + tau it waits for the average (usually long done) and applies
#
#     x <- x + (g - x_t),      g = avg_k(x_t^k), or the outer step taken from it (momentum variants, outer optimizer)
#
# i.e. the global model replaces the worker's snapshot and the worker keeps the tau local steps it made meanwhile.
# This is the delayed-averaging rule of CoCoD-SGD (Shen et al., IJCAI 2019: x_{t+tau}^k = avg(x_t) + x_{t+tau}^k -
# x_t^k) and of DaSGD (Zhou et al. 2020); Overlap Local-SGD (Wang, Liang, Joshi, ICASSP 2020) pulls towards a one
# round stale anchor instead, CO2 (Sun et al., ICLR 2024) adds a staleness penalty, and streaming DiLoCo (Douillard
# et al. 2025) applies the outer step tau inner steps late and mixes it in with a factor alpha (alpha = 0 there is
# this rule). The worker models then differ by at most tau local steps between syncs; the run's final sync is
# blocking, so every run ends with bitwise identical models. Checkpoints keep the pending sync (the snapshot, its
# level, due step and learning rate) and a resume starts its all-reduce again: results do not depend on where a
# run was paused.
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from train.errors import TrainError

__all__ = ["PendingSync", "Overlap", "install_polls"]


def install_polls(poll: Callable[[], None], *, params: Any = (), module: torch.nn.Module | None = None) -> None:
    """progress "poll": call `poll` after each parameter's gradient is accumulated and before each forward of
    `module`'s submodules, so that training drives a pending all-reduce."""
    for p in params:
        if p.requires_grad:
            p.register_post_accumulate_grad_hook(lambda _p: poll())
    if module is not None:
        for m in module.modules():
            m.register_forward_pre_hook(lambda _m, _x: poll())


@dataclass
class PendingSync:
    """A sync in flight: its level, the step after which it is applied, the base lr of its step, the handle."""

    level: str
    due: int
    lr: float
    handle: Any


class Overlap:
    """The pending sync of one LocalSGD: start(), apply_due(), drain(), and its part of the checkpoint.

    `start_allreduce(buf, level)` returns a handle (test(), wait()); `apply(avg, level, lr)` turns the average into
    the global model g in place (momentum, outer optimizer) and returns the extra bytes it communicated; `hooks`
    gets ``overlapped_sync(level, sent, recv, exposed_s=, inflight_s=, delay_s=)``.
    """

    def __init__(self, flat: Any, tau: int, start_allreduce: Callable[[torch.Tensor, str], Any],
                 apply: Callable[[torch.Tensor, str, float], int], nbytes: int, hooks: Any = None) -> None:
        if isinstance(tau, bool) or not isinstance(tau, int) or tau < 1:
            raise TrainError(f"overlap_steps must be an integer >= 1, got {tau!r}")
        self.flat, self.tau, self.hooks, self.nbytes = flat, tau, hooks, nbytes
        self._start_allreduce, self._apply = start_allreduce, apply
        self.sent = flat.buffer.new_empty(flat.numel)      # x_t: this worker's snapshot
        self.inflight = flat.buffer.new_empty(flat.numel)  # reduced in place into avg(x_t)
        self.pending: PendingSync | None = None

    def start(self, level: str, step: int, lr: float) -> None:
        """After step `step`: snapshot the model and start its average; it is applied after step + tau."""
        if self.pending is not None:
            raise TrainError("internal: a sync is still pending; drain() it first")
        self.sent.copy_(self.flat.pack())
        self._post(level, step + self.tau, lr)

    def _post(self, level: str, due: int, lr: float) -> None:
        self.inflight.copy_(self.sent)
        self.pending = PendingSync(level=level, due=due, lr=lr, handle=self._start_allreduce(self.inflight, level))

    def poll(self) -> None:
        if self.pending is not None:
            self.pending.handle.test()

    def apply_due(self, step: int) -> None:
        """After step `step`: apply the pending sync if it is due."""
        if self.pending is not None and step >= self.pending.due:
            self.drain()

    def drain(self) -> None:
        """Wait for the pending sync (if any) and apply it now: x <- x + (g - x_t)."""
        p = self.pending
        if p is None:
            return
        t0 = time.perf_counter()
        p.handle.wait()
        exposed = time.perf_counter() - t0
        end = getattr(p.handle, "completed_at", None) or time.perf_counter()
        self.pending = None
        extra = self._apply(self.inflight, p.level, p.lr)        # inflight is now g
        x = self.flat.pack()
        x.add_(self.inflight.sub_(self.sent))                     # x + (g - x_t): the small difference first
        self.flat.unpack()
        if self.hooks is not None:
            delay = getattr(p.handle, "delay_s", 0.0)
            self.hooks.overlapped_sync(p.level, self.nbytes + extra, self.nbytes + extra, exposed_s=exposed,
                                       inflight_s=end - p.handle.started_at, delay_s=delay)

    # -- checkpoints: the pending sync is saved and started again on load ----------------------------------------
    def state_dict(self) -> dict[str, Any] | None:
        p = self.pending
        if p is None:
            return None
        return {"level": p.level, "due": p.due, "lr": p.lr, "sent": self.sent.clone()}

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """Collective when `state` holds a pending sync: its all-reduce is started again on every rank."""
        self.pending = None
        if state is None:
            return
        self.sent.copy_(state["sent"])
        self._post(state["level"], int(state["due"]), float(state["lr"]))
