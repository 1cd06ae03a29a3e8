"""LocalSGD: local SGD in your own training loop, called after optimizer.step() (torch's averager style)."""
from __future__ import annotations

from typing import Any, Protocol

import torch

from sim.schedule import SyncSchedule
from train.buckets import DEFAULT_FIRST_BUCKET_BYTES, GradientBuckets
from train.compress import SCHEMES, SignCompressor
from train.errors import TrainError
from train.flat import FlatTensors
from train.outer import make_outer
from train.overlap import Overlap, install_polls

__all__ = ["LocalSGD", "SyncHooks", "average_gradients", "VARIANTS", "BUFFER_POLICIES"]

#: local: plain model averaging; global / hybrid: global momentum m_g at global syncs (global: the base optimiser
#: has no momentum; hybrid: it has); slowmo: slow momentum with slow learning rate alpha (Wang et al. 2020).
VARIANTS = ("local", "global", "hybrid", "slowmo")
#: What SlowMo does with the base optimiser's momentum buffers at a global sync.
BUFFER_POLICIES = ("keep", "reset", "average")


class SyncHooks(Protocol):
    """Optional observer of every sync (the trainer's timer): called right before and after the communication."""

    def before_sync(self, level: str) -> None: ...
    def after_sync(self, level: str, sent: int, recv: int) -> None: ...


def _params_of(params: Any) -> list[torch.nn.Parameter]:
    if isinstance(params, torch.nn.Module):
        params = params.parameters()
    out: list[torch.nn.Parameter] = []
    for p in params:
        out.extend(p["params"] if isinstance(p, dict) else [p])  # an optimiser's parameter groups work too
    if not out:
        raise TrainError("LocalSGD needs at least one parameter; got none")
    return out


def _make_backend(backend: Any, hierarchical: bool, block_size: int | None) -> Any:
    """"mpi" (or None): MPIBackend; "torch": TorchBackend; anything else is taken as a backend object."""
    from train.backend import make_backend
    return make_backend(backend, hierarchical=hierarchical, block_size=block_size)


def _reduce_grads(params: list[torch.nn.Parameter], buf: torch.Tensor, backend: Any) -> None:
    grads, views, off = [], [], 0
    for p in params:
        if p.grad is None:  # a parameter without gradient (unused, or zero_grad(set_to_none=True)) counts as 0
            p.grad = torch.zeros_like(p)
        n = p.numel()
        view = buf[off:off + n].view(p.shape)
        view.copy_(p.grad)
        grads.append(p.grad)
        views.append(view)
        off += n
    backend.allreduce_mean(buf, "global")
    for g, view in zip(grads, views):
        g.copy_(view)


def average_gradients(params: Any, backend: Any = None) -> None:
    """Mini-batch SGD: replace every gradient by its mean over all ranks (one all-reduce of one flat buffer).

    `params`: a model, its parameters or an optimiser's parameter groups; `backend`: MPIBackend() by default.
    Call between ``loss.backward()`` and ``optimizer.step()``.
    """
    ps = _params_of(params)
    buf = torch.empty(sum(p.numel() for p in ps), dtype=ps[0].dtype, device=ps[0].device)
    _reduce_grads(ps, buf, _make_backend(backend, False, None))


class LocalSGD:
    """Averages the workers' models on a sync schedule; call ``step()`` once after every ``optimizer.step()``.

    Schedule: ``LocalSGD(model, H=4)`` (local SGD), ``switch_step=S`` (post-local: mini-batch steps before S, call
    ``average_gradients()`` before the optimiser step), ``Hb=2`` (hierarchical: block syncs, every Hb-th sync
    global), ``warmup="linear", warmup_steps=W``; or any ``schedule=sim.schedule.SyncSchedule(...)``, the one
    definition of when a run syncs that the simulator uses too. ``total_steps=T`` adds the schedule's final sync
    after step T - 1 (a partial last round); without it the run is unbounded, like torch's averagers.

    Backend: ``"mpi"`` / ``MPIBackend()`` (our comm over mpi4py, default) or ``"torch"`` / ``TorchBackend()`` (an
    initialised torch.distributed group); ``block_size=G`` makes blocks of G consecutive ranks for hierarchical
    schedules (default with "mpi": the real shared-memory nodes). The constructor is collective: it broadcasts
    rank 0's parameters (``broadcast=True``) so every worker starts from the same model.

    Momentum at global syncs (SPEC section 2), with base learning rate gamma (``lr``, else the optimiser's):
    with x_bar = mean_k x_k, ``u = beta u + (x_anchor - x_bar) / gamma; x_anchor = x_anchor - alpha gamma u`` and
    every worker restarts from x_anchor. ``global`` / ``hybrid``: beta = global_momentum, alpha = 1 (the base
    optimiser has no / its own momentum); ``slowmo``: beta = slow_momentum, alpha = slow_lr, and the base
    optimiser's momentum buffers are kept, reset or averaged (``buffers``; needs ``optimizer``). Block syncs are
    plain averages.

    Compression ``sign`` / ``ef-sign``: every sync all-gathers the packed signs of each rank's model change
    (train/compress.py) instead of all-reducing the model; mini-batch steps then sync the model too (H = 1).

    Outer optimizer (DiLoCo): ``outer_optimizer="nesterov"`` (or "sgd", or a factory ``f(params) -> Optimizer``)
    with ``outer_lr`` and ``outer_momentum`` takes, at every global sync, a step on the pseudo-gradient
    ``x_anchor - x_bar`` from x_anchor (needs momentum_variant local). SlowMo(alpha, beta) is outer "sgd" with lr
    alpha and momentum beta for a constant base learning rate.

    Overlap: ``overlap=True`` starts each sync's all-reduce without waiting and applies it ``overlap_steps`` (tau)
    steps later as ``x <- x + (g - x_t)`` (train/overlap.py has the rule and its sources); the last sync of a run
    (``total_steps``) blocks. ``bucket_bytes=N`` makes mini-batch steps average their gradients in buckets that are
    all-reduced while backward runs (train/buckets.py; ``first_bucket_bytes`` the first); ``progress`` is comm's
    ("thread", "poll") for both.

    No barrier and no timing inside: pass ``hooks`` (``before_sync(level)``, ``after_sync(level, sent, recv)``;
    ``overlapped_sync(level, sent, recv, exposed_s=, inflight_s=, delay_s=)`` for overlapped ones, and an optional
    ``delay(level)``: seconds of emulated network delay an overlapped sync completes later) to measure. Works with
    ``zero_grad(set_to_none=True)``. BatchNorm buffers are not averaged.
    """

    def __init__(self, params: Any, *, H: int | None = None, Hb: int | None = None, switch_step: int | None = None,
                 warmup: str = "constant", warmup_steps: int = 0, schedule: SyncSchedule | None = None,
                 total_steps: int | None = None, backend: Any = None, block_size: int | None = None,
                 momentum_variant: str = "local",
                 global_momentum: float = 0.0, slow_lr: float = 1.0, slow_momentum: float = 0.0,
                 buffers: str = "keep", optimizer: torch.optim.Optimizer | None = None, lr: float | None = None,
                 compress: str = "none", sign_scale: float = 1.0, hooks: SyncHooks | None = None,
                 broadcast: bool = True, outer_optimizer: Any = None, outer_lr: float = 0.7,
                 outer_momentum: float = 0.9, overlap: bool = False, overlap_steps: int = 1,
                 bucket_bytes: int | None = None, first_bucket_bytes: int | None = None,
                 progress: str = "thread") -> None:
        self.params = _params_of(params)
        self.schedule = self._schedule(schedule, H, Hb, switch_step, warmup, warmup_steps)
        if total_steps is not None and (isinstance(total_steps, bool) or not isinstance(total_steps, int)
                                        or total_steps < 1):
            raise TrainError(f"total_steps must be an integer >= 1 or None, got {total_steps!r}")
        self.total_steps = total_steps
        if momentum_variant not in VARIANTS:
            raise TrainError(f"momentum_variant must be one of {', '.join(VARIANTS)}, got {momentum_variant!r}")
        if buffers not in BUFFER_POLICIES:
            raise TrainError(f"buffers must be one of {', '.join(BUFFER_POLICIES)}, got {buffers!r}")
        for name, v, hi in (("global_momentum", global_momentum, 0.999), ("slow_momentum", slow_momentum, 0.999),
                            ("slow_lr", slow_lr, 100.0)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= hi \
                    or (name == "slow_lr" and v == 0):
                raise TrainError(f"{name} must be a number in {'(0' if name == 'slow_lr' else '[0'}, {hi}], "
                                 f"got {v!r}")
        if compress not in SCHEMES:
            raise TrainError(f"compress must be one of {', '.join(SCHEMES)}, got {compress!r}")
        if compress != "none" and momentum_variant != "local":
            raise TrainError(f"compress {compress!r} needs momentum_variant local, got {momentum_variant!r}")
        if momentum_variant == "slowmo" and buffers != "keep" and optimizer is None:
            raise TrainError(f"buffers {buffers!r} acts on the base optimiser's momentum: pass optimizer=")
        if momentum_variant == "global" and optimizer is not None and \
                any(g.get("momentum", 0.0) for g in optimizer.param_groups):
            raise TrainError("momentum_variant 'global' expects a base optimiser without momentum; "
                             "use 'hybrid' (or 'slowmo') to keep its momentum")
        if outer_optimizer is not None and (momentum_variant != "local" or compress != "none"):
            raise TrainError(f"outer_optimizer replaces the momentum variants and needs momentum_variant local and "
                             f"compress none, got {momentum_variant!r} and {compress!r}")
        if overlap and compress != "none":
            raise TrainError(f"overlap cannot go with compress {compress!r}: the compressed sync is an all-gather "
                             f"that blocks")
        for name, size in (("overlap_steps", overlap_steps), ("bucket_bytes", bucket_bytes),
                           ("first_bucket_bytes", first_bucket_bytes)):
            if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
                raise TrainError(f"{name} must be an integer >= 1{'' if name == 'overlap_steps' else ' or None'}, "
                                 f"got {size!r}")
        self.variant, self.buffers, self.optimizer, self.lr, self.hooks = \
            momentum_variant, buffers, optimizer, lr, hooks
        self.beta = float(slow_momentum if momentum_variant == "slowmo" else global_momentum)
        self.alpha = float(slow_lr if momentum_variant == "slowmo" else 1.0)
        if isinstance(backend, str) or backend is None:
            from train.backend import make_backend
            self.backend = make_backend(backend, hierarchical=self.schedule.algorithm == "hierarchical",
                                        block_size=block_size, progress=progress)
        else:
            self.backend = _make_backend(backend, False, block_size)
        if self.schedule.algorithm == "hierarchical" and not self.backend.has_blocks:
            raise TrainError("a hierarchical schedule needs a backend with blocks: MPIBackend(hierarchical=True, "
                             "gpus_per_node=G) or TorchBackend(block_size=G)")
        self.flat = FlatTensors(self.params)
        self._grad_buf: torch.Tensor | None = None
        # A backend may hold several workers' replicas of every parameter, stacked along dim 0 (train/virtual.py):
        # its collectives combine the replicas, and it builds the per-replica compressor.
        self.replicas = int(getattr(self.backend, "replicas", 1))
        make_compressor = getattr(self.backend, "make_compressor", None) or SignCompressor
        self.compressor = None if compress == "none" else \
            make_compressor(compress, self.flat.numel // self.replicas, dtype=self.params[0].dtype,
                            sign_scale=sign_scale)
        self.steps = 0  # optimiser steps taken so far (the step counter of torch's averagers)
        if broadcast:
            self.backend.broadcast(self.flat.pack(), 0)
            self.flat.unpack()
        if self.compressor is not None:
            self.compressor.set_anchor(self.flat.pack().detach().cpu().numpy())
        self.anchor: torch.Tensor | None = None
        self.momentum_buf: torch.Tensor | None = None
        self.outer: torch.optim.Optimizer | None = None
        if momentum_variant != "local":
            self.anchor = self.flat.pack().clone()
            self.momentum_buf = torch.zeros_like(self.anchor)
        elif outer_optimizer is not None:
            self.anchor = self.flat.pack().clone()
            self.outer = make_outer(outer_optimizer, self.anchor, outer_lr, outer_momentum)
        self.overlap: Overlap | None = None
        if overlap:
            self.overlap = Overlap(self.flat, overlap_steps, self._start_allreduce, self._global_model, self.nbytes,
                                   hooks)
            if getattr(self.backend, "progress", "thread") == "poll":  # backward drives a pending sync
                install_polls(self.poll, params=self.params)
        self.buckets: GradientBuckets | None = None
        if bucket_bytes is not None:
            self.buckets = GradientBuckets(self.params, bucket_bytes=bucket_bytes, first_bucket_bytes=(
                DEFAULT_FIRST_BUCKET_BYTES if first_bucket_bytes is None else first_bucket_bytes),
                backend=self.backend, when=lambda: self.grad_phase and self.compressor is None, hooks=hooks,
                delay_s=self._delay("global"))

    @staticmethod
    def _schedule(schedule: SyncSchedule | None, H: int | None, Hb: int | None, switch_step: int | None,
                  warmup: str, warmup_steps: int) -> SyncSchedule:
        if schedule is not None:
            if H is not None or Hb is not None or switch_step is not None or warmup_steps:
                raise TrainError("give either schedule= or H / Hb / switch_step / warmup_steps, not both")
            if not isinstance(schedule, SyncSchedule):
                raise TrainError(f"schedule must be a sim.schedule.SyncSchedule, got {type(schedule).__name__}")
            return schedule
        if H is None:
            raise TrainError("LocalSGD needs H (local steps between syncs) or a schedule=SyncSchedule(...)")
        algorithm = "postlocal" if switch_step is not None else "hierarchical" if Hb is not None else "local"
        from sim.errors import SimError
        try:
            return SyncSchedule(algorithm=algorithm, H=H, Hb=1 if Hb is None else Hb,
                                switch_step=0 if switch_step is None else switch_step,
                                warmup=warmup, warmup_steps=warmup_steps)
        except SimError as e:
            raise TrainError(str(e)) from None

    # -- what the schedule says about the step in progress ------------------------------------------------
    @property
    def grad_phase(self) -> bool:
        """Whether the step in progress is a mini-batch step (gradients averaged before the optimiser step)."""
        alg = self.schedule.algorithm
        return alg == "minibatch" or (alg == "postlocal" and self.steps < self.schedule.switch_step)

    @property
    def model_nbytes(self) -> int:
        """Bytes of one worker's flat model (or gradients), uncompressed."""
        return int(self.flat.nbytes) // self.replicas

    @property
    def nbytes(self) -> int:
        """Bytes one rank sends per sync: the flat model (or gradients), or its compressed payload."""
        return self.model_nbytes if self.compressor is None else int(self.compressor.nbytes)

    def _lr(self, lr: float | None) -> float:
        if lr is None:
            lr = self.lr
        if lr is None and self.optimizer is not None:
            lr = self.optimizer.param_groups[0]["lr"]
        if lr is None or not lr > 0:
            raise TrainError(f"this sync needs the base learning rate gamma > 0: pass lr= to LocalSGD or step(), "
                             f"or optimizer=; got {lr!r}")
        return float(lr)

    # -- the calls of a training loop ---------------------------------------------------------------------
    def average_gradients(self) -> bool:
        """In a mini-batch step: average the gradients over all ranks (call before ``optimizer.step()``).

        Returns whether it did. Local steps, and every step under compression, leave the gradients alone.
        """
        if not self.grad_phase or self.compressor is not None:
            return False
        if self.buckets is not None:
            return self.buckets.wait()
        if self._grad_buf is None:
            self._grad_buf = self.flat.buffer.new_empty(self.flat.numel)
        if self.hooks is not None:
            self.hooks.before_sync("global")
        _reduce_grads(self.params, self._grad_buf, self.backend)
        if self.hooks is not None:
            self.hooks.after_sync("global", self.nbytes, self.nbytes)
        return True

    def step(self, lr: float | None = None) -> str | None:
        """After ``optimizer.step()``: sync if the schedule says so; returns the level ("block", "global") or None.

        In a mini-batch step the schedule's sync is the gradient average (``average_gradients()``), so the model
        is not averaged again (unless compressed).
        """
        t = self.steps
        level = self.schedule.sync_after(t, self.total_steps)
        if self.overlap is not None:
            self.overlap.apply_due(t)
        if level is not None and (self.compressor is not None or not self.grad_phase):
            final = self.total_steps is not None and t == self.total_steps - 1
            if self.overlap is not None and not final:
                self.overlap.drain()  # a round shorter than tau (warm-up): the earlier sync goes first
                needs_lr = level == "global" and self.anchor is not None and self.outer is None
                self.overlap.start(level, t, self._lr(lr) if needs_lr else 0.0)
            else:
                self.drain()
                self.sync(level, lr)
        self.steps = t + 1
        if self.anchor is not None and self.schedule.algorithm == "postlocal" \
                and self.steps == self.schedule.switch_step:
            self.reset_anchor()  # post-local: the momentum's anchor is the model at the switch
        return level

    def sync(self, level: str = "global", lr: float | None = None) -> None:
        """Average the models now at `level`, then apply the momentum variant (collective; the schedule aside). A
        pending overlapped sync is applied first."""
        if level not in ("block", "global"):
            raise TrainError(f"sync level must be block or global, got {level!r}")
        self.drain()
        needs_lr = self.compressor is not None or (level == "global" and self.anchor is not None
                                                   and self.outer is None)
        gamma = self._lr(lr) if needs_lr else 0.0
        if self.hooks is not None:
            self.hooks.before_sync(level)
        buf = self.flat.pack()
        sent = recv = self.nbytes
        if self.compressor is not None:
            sent, recv = self.compressor.sync(level, buf, backend=self.backend, lr=gamma)
        else:
            self.backend.allreduce_mean(buf, level)
            extra = self._global_model(buf, level, gamma)
            sent, recv = sent + extra, recv + extra
        self.flat.unpack()
        if self.hooks is not None:
            self.hooks.after_sync(level, sent, recv)

    def _global_model(self, buf: torch.Tensor, level: str, gamma: float) -> int:
        """Turn the average `buf` into the global model in place: the momentum variant's or the outer optimizer's
        step from the anchor at global syncs (block syncs are plain averages). Returns extra bytes communicated."""
        if level != "global" or self.anchor is None:
            return 0
        if self.outer is not None:
            self.anchor.grad = self.anchor - buf  # DiLoCo's pseudo-gradient: anchor - avg(x)
            self.outer.step()
            self.anchor.grad = None
            buf.copy_(self.anchor)
            return 0
        assert self.momentum_buf is not None
        self.momentum_buf.mul_(self.beta).add_(self.anchor - buf, alpha=1.0 / gamma)
        torch.sub(self.anchor, self.momentum_buf, alpha=self.alpha * gamma, out=buf)
        self.anchor.copy_(buf)
        if self.variant == "slowmo" and self.buffers != "keep":
            return self._base_buffers(level)
        return 0

    def _delay(self, level: str) -> float:
        get = getattr(self.hooks, "delay", None)
        return float(get(level)) if callable(get) else 0.0

    def _start_allreduce(self, buf: torch.Tensor, level: str) -> Any:
        """The nonblocking average of an overlapped sync, completing after the hooks' emulated delay, if any."""
        from train.backend import Delayed
        if not hasattr(self.backend, "iallreduce_mean"):
            raise TrainError(f"overlap needs a backend with iallreduce_mean(buf, level); "
                             f"{type(self.backend).__name__} has none")
        handle = self.backend.iallreduce_mean(buf, level)
        delay = self._delay(level)
        return Delayed(handle, delay) if delay > 0 else handle

    def poll(self) -> None:
        """Let "poll" progress advance a pending overlapped sync (call it now and then inside a step, if you like)."""
        if self.overlap is not None:
            self.overlap.poll()

    def poll_in(self, module: torch.nn.Module) -> None:
        """progress "poll": advance a pending overlapped sync before every forward of `module`'s submodules too (the
        gradients' hooks already poll during backward). Nothing to do for the helper thread."""
        if self.overlap is not None and getattr(self.backend, "progress", "thread") == "poll":
            install_polls(self.poll, module=module)

    def drain(self) -> None:
        """Apply a pending overlapped sync now (e.g. before reading the model at the end of your own loop)."""
        if self.overlap is not None:
            self.overlap.drain()

    def _base_buffers(self, level: str) -> int:
        """SlowMo's policy for the base optimiser's momentum buffers; returns the bytes it communicated."""
        assert self.optimizer is not None
        bufs = [self.optimizer.state.get(p, {}).get("momentum_buffer") for p in self.params]
        bufs = [b for b in bufs if b is not None]
        if not bufs:
            return 0
        if self.buffers == "reset":
            for b in bufs:
                b.zero_()
            return 0
        fb = FlatTensors(bufs)
        self.backend.allreduce_mean(fb.pack(), level)
        fb.unpack()
        return int(fb.nbytes)

    def reset_anchor(self) -> None:
        """Take the current (synchronised) model as x_anchor of global momentum / SlowMo / the outer optimizer."""
        if self.anchor is not None:
            self.anchor.copy_(self.flat.pack())

    # -- checkpoints ----------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "anchor": None if self.anchor is None else self.anchor.clone(),
                "momentum_buf": None if self.momentum_buf is None else self.momentum_buf.clone(),
                "compressor": None if self.compressor is None else self.compressor.state_dict(),
                "outer": None if self.outer is None else self.outer.state_dict(),
                "pending": None if self.overlap is None else self.overlap.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.compressor is not None:
            if state.get("compressor") is None:
                raise TrainError("checkpoint has no compression state (anchor, error-feedback memory); "
                                 "resume it without --compress")
            self.compressor.load_state_dict(state["compressor"])
        for name in ("anchor", "momentum_buf"):
            mine = getattr(self, name)
            if (state.get(name) is None) != (mine is None):
                raise TrainError(f"checkpoint {'lacks' if mine is not None else 'has'} the {name} of global "
                                 f"momentum; resume with the momentum variant it was written with")
            if mine is not None:
                mine.copy_(state[name])
        if self.outer is not None:
            if state.get("outer") is None:
                raise TrainError("checkpoint lacks the outer optimizer's state; resume with the outer optimizer "
                                 "it was written with")
            self.outer.load_state_dict(state["outer"])
        self.steps = int(state["steps"])
        pending = state.get("pending")
        if pending is not None and self.overlap is None:
            raise TrainError("checkpoint holds an overlapped sync in flight; resume it with overlap")
        if self.overlap is not None:
            self.overlap.load_state_dict(pending)  # collective: a pending sync's all-reduce starts again
