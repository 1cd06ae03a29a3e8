"""FlatBuffer: many tensors (a model's parameters) packed into one reused contiguous buffer, so a sync is one
all-reduce rather than one per tensor."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .errors import CommError

__all__ = ["FlatBuffer"]


def _is_torch(x: Any) -> bool:
    return type(x).__module__.split(".")[0] == "torch" and hasattr(x, "is_cuda")


class FlatBuffer:
    """Pack numpy arrays or torch tensors (one dtype, one device) into `buffer` and unpack them again.

    The buffer is allocated once; pack() and unpack() copy without allocating. For torch inputs the buffer is a
    torch tensor on the same device, for numpy inputs a numpy array.
    """

    def __init__(self, tensors: Sequence[Any]) -> None:
        self.tensors = list(tensors)
        if not self.tensors:
            raise CommError("FlatBuffer needs at least one tensor; got an empty sequence")
        first = self.tensors[0]
        self.is_torch = _is_torch(first)
        for i, t in enumerate(self.tensors):
            if _is_torch(t) != self.is_torch:
                raise CommError(f"FlatBuffer tensor {i} is a {type(t).__name__}, tensor 0 a "
                                f"{type(first).__name__}; mix neither numpy and torch nor devices")
            if t.dtype != first.dtype:
                raise CommError(f"FlatBuffer tensor {i} has dtype {t.dtype}, tensor 0 has {first.dtype}; "
                                "use one FlatBuffer per dtype")
            if self.is_torch and t.device != first.device:
                raise CommError(f"FlatBuffer tensor {i} is on {t.device}, tensor 0 on {first.device}")
        sizes = [int(t.numel()) if self.is_torch else int(t.size) for t in self.tensors]
        self.offsets = [0]
        for n in sizes:
            self.offsets.append(self.offsets[-1] + n)
        total = self.offsets[-1]
        if self.is_torch:
            self.buffer = first.detach().new_empty(total)
        else:
            self.buffer = np.empty(total, dtype=first.dtype)
        self._views = [self.buffer[a:b].view(t.shape) if self.is_torch else self.buffer[a:b].reshape(t.shape)
                       for t, a, b in zip(self.tensors, self.offsets, self.offsets[1:])]

    @property
    def numel(self) -> int:
        return self.offsets[-1]

    @property
    def nbytes(self) -> int:
        itemsize = self.buffer.element_size() if self.is_torch else self.buffer.itemsize
        return int(self.numel * itemsize)

    def views(self) -> list[Any]:
        """Views into the buffer shaped like each tensor."""
        return list(self._views)

    def pack(self) -> Any:
        """Copy the tensors' current values into the buffer and return it."""
        for view, t in zip(self._views, self.tensors):
            if self.is_torch:
                view.copy_(t.detach())
            else:
                np.copyto(view, t)
        return self.buffer

    def unpack(self) -> None:
        """Copy the buffer back into the tensors (in place, so parameters keep their identity)."""
        for view, t in zip(self._views, self.tensors):
            if self.is_torch:
                t.detach().copy_(view)
            else:
                np.copyto(t, view)
