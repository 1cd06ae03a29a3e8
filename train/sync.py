"""Synchronisation of the K workers through comm: one flat buffer, one all-reduce per sync, timed per level."""
from __future__ import annotations

import time
from typing import Any

import torch

import comm
from train.compress import SignCompressor
from train.errors import TrainError

__all__ = ["LEVELS", "Synchronizer", "device_sync"]

LEVELS = ("block", "global")


def device_sync(device: torch.device) -> None:
    """Wait for queued CUDA work so that wall-clock timers measure it (no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Synchronizer:
    """Averages gradients (mini-batch phases) or models (local phases) at a level, and keeps the counters.

    * ``sync_grads()``: all-reduce (mean) of the gradients over the world, before the optimiser step.
    * ``sync_models(level, lr)``: all-reduce (mean) of the parameters inside the block ("block") or over the world
      ("global"; hierarchically for hierarchical runs). With global or hybrid momentum a global sync then applies
      u = m_g u + d / lr, w = w_anchor - lr u with d = w_anchor - mean_k w_k (SPEC section 2), where w_anchor is
      the model after the previous global sync.
    * with ``compress`` "sign" or "ef-sign" every model sync (either level) instead all-gathers the packed signs of
      each rank's model change (train/compress.py); gradients are then never all-reduced (the trainer takes the
      local step first and syncs the model, so a mini-batch phase is H = 1 local SGD with compression).

    Before each all-reduce a barrier on the same communicator separates waiting (for slower workers) from
    communicating. BatchNorm buffers are never synchronised here: statistics stay per worker.
    """

    def __init__(self, params: list[torch.nn.Parameter], *, world: Any, topology: Any | None, hierarchical: bool,
                 allreduce: str = "auto", variant: str = "local", global_momentum: float = 0.0,
                 delays: dict[str, float] | None = None, compress: str = "none", sign_scale: float = 1.0) -> None:
        if hierarchical and topology is None:
            raise TrainError("hierarchical synchronisation needs a comm.Topology, got None")
        self.params = params
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        self.world, self.topology, self.hierarchical = world, topology, hierarchical
        self.allreduce, self.variant, self.m_g = allreduce, variant, global_momentum
        self.delays = {lvl: float((delays or {}).get(lvl, 0.0)) for lvl in LEVELS}
        self.model_fb = comm.FlatBuffer([p.data for p in params])
        self._grads = [p.grad for p in params]
        self.grad_fb = comm.FlatBuffer(self._grads)
        self.anchor: torch.Tensor | None = None
        self.momentum_buf: torch.Tensor | None = None
        if variant != "local":
            self.reset_anchor()
            self.momentum_buf = torch.zeros_like(self.anchor)
        self.compressor: SignCompressor | None = None
        if compress != "none":
            if variant != "local":
                raise TrainError(f"compression needs momentum_variant local, got {variant!r}")
            self.compressor = SignCompressor(compress, self.model_fb.numel, dtype=params[0].dtype,
                                             sign_scale=sign_scale)
        # bytes: handed to the collective per sync by this rank (send buffer); bytes_recv: written into this rank's
        # buffer by the collective from the others (all-gather: (p-1) blocks; all-reduce: the reduced payload)
        self.stats = {lvl: {"syncs": 0, "bytes": 0, "bytes_recv": 0, "comm_s": 0.0, "wait_s": 0.0, "delay_s": 0.0}
                      for lvl in LEVELS}

    @property
    def nbytes(self) -> int:
        """Bytes of one sync's payload per rank: the model (or the gradients), or its compressed size."""
        return int(self.model_fb.nbytes) if self.compressor is None else self.compressor.nbytes

    def reset_compress_anchor(self) -> None:
        """Take the current (synchronised) model as the anchor of compressed syncs at both levels."""
        if self.compressor is not None:
            self.compressor.set_anchor(self.model_fb.pack().detach().cpu().numpy())

    def reset_anchor(self) -> None:
        """Take the current (synchronised) model as w_anchor of global momentum."""
        self.anchor = self.model_fb.pack().clone()

    # -- the two kinds of sync -------------------------------------------------------------------
    def _wait(self, level: str) -> None:
        t0 = time.perf_counter()
        (self.topology.node_comm if level == "block" else self.world).Barrier()
        self.stats[level]["wait_s"] += time.perf_counter() - t0

    def _reduce(self, buf: Any, level: str) -> None:
        if buf.is_cuda:  # comm reads the buffer directly: the copies queued by pack() must be done
            torch.cuda.synchronize(buf.device)
        if level == "block":
            comm.block_allreduce(buf, self.topology, op="mean", algorithm=self.allreduce)
        elif self.hierarchical:
            comm.hierarchical_allreduce(buf, self.topology, op="mean", algorithm=self.allreduce)
        else:
            comm.allreduce(buf, op="mean", algorithm=self.allreduce, comm=self.world)

    def _finish(self, level: str, t0: float, sent: int | None = None, recv: int | None = None) -> None:
        delay = self.delays[level]
        if delay > 0:
            time.sleep(delay)
        st = self.stats[level]
        st["delay_s"] += delay
        st["comm_s"] += time.perf_counter() - t0
        st["syncs"] += 1
        st["bytes"] += self.nbytes if sent is None else sent
        st["bytes_recv"] += self.nbytes if recv is None else recv

    def sync_grads(self) -> None:
        """Mini-batch SGD: average the gradients over all workers (one global all-reduce)."""
        if any(p.grad is not g for p, g in zip(self.params, self._grads)):
            raise TrainError("gradient tensors were replaced; call zero_grad(set_to_none=False)")
        self._wait("global")
        t0 = time.perf_counter()
        buf = self.grad_fb.pack()
        self._reduce(buf, "global")
        self.grad_fb.unpack()
        self._finish("global", t0)

    def sync_models(self, level: str, lr: float) -> None:
        """Local SGD: average the models at `level` ("block" or "global"), then apply global momentum if used."""
        if level not in LEVELS:
            raise TrainError(f"sync level must be one of {', '.join(LEVELS)}, got {level!r}")
        self._wait(level)
        t0 = time.perf_counter()
        buf = self.model_fb.pack()
        if self.compressor is not None:
            group = self.topology.node_comm if level == "block" else self.world
            sent, recv = self.compressor.sync(level, buf, group=group, lr=lr)
            self.model_fb.unpack()
            self._finish(level, t0, sent, recv)
            return
        self._reduce(buf, level)
        if level == "global" and self.variant != "local":
            assert self.anchor is not None and self.momentum_buf is not None
            d = self.anchor - buf
            self.momentum_buf.mul_(self.m_g).add_(d, alpha=1.0 / lr)
            torch.sub(self.anchor, self.momentum_buf, alpha=lr, out=buf)
            self.anchor.copy_(buf)
        self.model_fb.unpack()
        self._finish(level, t0)

    # -- checkpoints -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"stats": {k: dict(v) for k, v in self.stats.items()},
                "anchor": None if self.anchor is None else self.anchor.clone(),
                "momentum_buf": None if self.momentum_buf is None else self.momentum_buf.clone(),
                "compressor": None if self.compressor is None else self.compressor.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.stats = {k: {"bytes_recv": 0, **v} for k, v in state["stats"].items()}
        if self.compressor is not None:
            if state.get("compressor") is None:
                raise TrainError("checkpoint has no compression state (anchor, error-feedback memory); "
                                 "resume it without --compress")
            self.compressor.load_state_dict(state["compressor"])
        for name in ("anchor", "momentum_buf"):
            if state[name] is not None:
                getattr(self, name).copy_(state[name])
