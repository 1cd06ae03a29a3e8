"""The averager's backend for K workers in one process: syncs are means over the leading K dim of stacked tensors."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from train.backend import LEVELS
from train.compress import SignCompressor
from train.errors import TrainError

__all__ = ["VirtualBackend", "StackedCompressor"]


class VirtualBackend:
    """LocalSGD's backend when every parameter is a stacked tensor [K, ...] holding the K workers' copies.

    LocalSGD packs its parameters into one flat buffer (train/flat.py) in order, so parameter i of n_i numbers per
    worker fills K n_i consecutive numbers, worker-major: ``buf[K o_i : K (o_i + n_i)].view(K, n_i)`` (o_i: the
    offset of parameter i in one worker's flat model). A global "all-reduce" replaces every row of every segment by
    the mean of the K rows; a block one by the mean of the G rows of its block (workers kG .. kG + G - 1, as an MPI
    run's virtual blocks of `gpus_per_node` consecutive ranks). The gradients' buffer and SlowMo's momentum buffers
    have the same layout. `replicas` and `make_compressor` tell LocalSGD that the buffer holds K workers.
    """

    def __init__(self, shapes: Sequence[Sequence[int]], *, workers: int, block: int | None = None) -> None:
        if workers < 1:
            raise TrainError(f"workers must be an integer >= 1, got {workers!r}")
        if block is not None and (block < 1 or workers % block):
            raise TrainError(f"the block size (gpus_per_node) must divide the workers {workers}, got {block}")
        self.rank, self.size, self.replicas = 0, workers, workers
        self.block = block
        self.has_blocks = block is not None
        self.segments: list[tuple[int, int]] = []  # (offset o_i, numbers n_i) per parameter, for one worker
        off = 0
        for shape in shapes:
            if not shape or shape[0] != workers:
                raise TrainError(f"a stacked parameter must have {workers} rows (its leading dim), got shape "
                                 f"{tuple(shape)}")
            n = int(np.prod(shape[1:], dtype=np.int64))
            self.segments.append((off, n))
            off += n
        self.numel = off  # of one worker's flat model

    def _check(self, buf: torch.Tensor, level: str) -> None:
        if level not in LEVELS:
            raise TrainError(f"sync level must be one of {', '.join(LEVELS)}, got {level!r}")
        if level == "block" and not self.has_blocks:
            raise TrainError("a block sync needs blocks: VirtualBackend(block=G)")
        if buf.numel() != self.size * self.numel:
            raise TrainError(f"internal: a buffer of {buf.numel()} numbers is not {self.size} workers' flat model "
                             f"of {self.numel}")

    def group_size(self, level: str) -> int:
        return self.block if level == "block" and self.block is not None else self.size

    def groups(self, level: str) -> list[list[int]]:
        """The workers that average together at `level`, each group in worker order."""
        g = self.group_size(level)
        return [list(range(a, a + g)) for a in range(0, self.size, g)]

    def barrier(self, level: str) -> None:
        """Nothing to wait for: the workers step in lock-step."""

    def _rows(self, buf: torch.Tensor) -> list[torch.Tensor]:
        """Each parameter's segment of `buf` as a [K, n_i] view."""
        K = self.size
        return [buf[K * o:K * (o + n)].view(K, n) for o, n in self.segments]

    def allreduce_mean(self, buf: torch.Tensor, level: str) -> None:
        self._check(buf, level)
        g = self.group_size(level)
        for rows in self._rows(buf):
            grouped = rows.view(self.size // g, g, rows.shape[1])
            grouped.copy_(grouped.mean(dim=1, keepdim=True).expand_as(grouped))

    def broadcast(self, buf: torch.Tensor, root: int = 0) -> None:
        self._check(buf, "global")
        for rows in self._rows(buf):
            rows.copy_(rows[root:root + 1].expand_as(rows))

    def allgather_bytes(self, send: np.ndarray, level: str) -> np.ndarray:
        raise TrainError("internal: the virtual backend gathers compressed payloads in StackedCompressor")

    # -- the workers' flat models as rows ----------------------------------------------------------------
    def per_worker(self, buf: torch.Tensor) -> torch.Tensor:
        """[K, numel]: row k is worker k's flat model (a copy)."""
        return torch.cat(self._rows(buf), dim=1)

    def set_per_worker(self, buf: torch.Tensor, rows: torch.Tensor) -> None:
        """Write row k of `rows` ([K, numel]) back as worker k's part of `buf`."""
        for seg, (o, n) in zip(self._rows(buf), self.segments):
            seg.copy_(rows[:, o:o + n])

    def make_compressor(self, scheme: str, d: int, *, dtype: torch.dtype, sign_scale: float = 1.0
                        ) -> StackedCompressor:
        return StackedCompressor(self, scheme, d, dtype=dtype, sign_scale=sign_scale)


class StackedCompressor:
    """Sign compression of K workers' model changes: one train.compress.SignCompressor per worker.

    At a sync each worker encodes its payload (its own anchor and error-feedback memory), the payloads of a group
    are concatenated in worker order (what an all-gather delivers), and the group's new model is decoded once and
    taken by each member as its new anchor: the same arithmetic as K MPI ranks, in the same order.
    """

    def __init__(self, backend: VirtualBackend, scheme: str, d: int, *, dtype: torch.dtype,
                 sign_scale: float = 1.0) -> None:
        if d != backend.numel:
            raise TrainError(f"internal: a compressor of {d} numbers for workers of {backend.numel}")
        self.backend = backend
        self.parts = [SignCompressor(scheme, d, dtype=dtype, sign_scale=sign_scale) for _ in range(backend.size)]
        self.scheme, self.nbytes = scheme, self.parts[0].nbytes

    def _rows(self, w: Any) -> np.ndarray:
        flat = torch.as_tensor(np.asarray(w)).reshape(-1)
        return self.backend.per_worker(flat).numpy()

    def set_anchor(self, w: Any, level: str | None = None) -> None:
        """`w`: the K workers' stacked flat buffer (numpy); each worker takes its row."""
        for part, row in zip(self.parts, self._rows(w)):
            part.set_anchor(row, level)

    def sync(self, level: str, w: torch.Tensor, *, backend: Any, lr: float) -> tuple[int, int]:
        """Compressed sync of every worker (`w`: the stacked flat buffer, in place); one worker's bytes sent and
        received, as an MPI rank counts them."""
        rows = self.backend.per_worker(w.detach()).cpu().numpy()
        sends = [part.encode(level, row) for part, row in zip(self.parts, rows)]
        new = np.empty_like(rows)
        groups = self.backend.groups(level)
        for group in groups:
            gathered = np.concatenate([sends[k] for k in group])
            first = self.parts[group[0]]
            new_model = first.decode(level, gathered, len(group), lr)
            for k in group:
                if k != group[0]:  # decode() made it the anchor(s) of the first member; the others take it too
                    self.parts[k].set_anchor(new_model, "block")
                    if level == "global":
                        self.parts[k].set_anchor(new_model, "global")
                new[k] = new_model
        self.backend.set_per_worker(w, torch.from_numpy(new).to(w.device))
        size = len(groups[0])
        return int(sends[0].nbytes), int((size - 1) * sends[0].nbytes)

    def state_dict(self) -> dict[str, Any]:
        return {"scheme": self.scheme, "workers": [p.state_dict() for p in self.parts]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        parts = state.get("workers")
        if not isinstance(parts, list) or len(parts) != len(self.parts):
            raise TrainError(f"checkpoint holds no compression state of {len(self.parts)} virtual workers "
                             f"(written by another engine or worker count)")
        for p, st in zip(self.parts, parts):
            p.load_state_dict(st)
