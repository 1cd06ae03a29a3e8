"""FlatTensors: a list of same-dtype torch tensors packed into one reused buffer (torch only, no MPI import)."""
from __future__ import annotations

from collections.abc import Sequence

import torch

from train.errors import TrainError

__all__ = ["FlatTensors"]


class FlatTensors:
    """Pack tensors (a model's parameters, their gradients) into `buffer` and unpack them again, in place.

    The buffer is allocated once. The tensors are kept by reference (a Parameter, not its `.data`), so a tensor
    whose storage is replaced (``p.data = ...``) is still read and written correctly. Same interface as
    comm.FlatBuffer for torch tensors, without importing comm (and so mpi4py).
    """

    def __init__(self, tensors: Sequence[torch.Tensor]) -> None:
        self.tensors = list(tensors)
        if not self.tensors:
            raise TrainError("FlatTensors needs at least one tensor; got an empty sequence")
        first = self.tensors[0]
        for i, t in enumerate(self.tensors):
            if t.dtype != first.dtype or t.device != first.device:
                raise TrainError(f"tensor {i} is {t.dtype} on {t.device}, tensor 0 {first.dtype} on {first.device};"
                                 " all parameters must share one dtype and device")
        self.offsets = [0]
        for t in self.tensors:
            self.offsets.append(self.offsets[-1] + int(t.numel()))
        self.buffer = first.detach().new_empty(self.offsets[-1])
        self._views = [self.buffer[a:b].view(t.shape) for t, a, b in zip(self.tensors, self.offsets, self.offsets[1:])]

    @property
    def numel(self) -> int:
        return self.offsets[-1]

    @property
    def nbytes(self) -> int:
        return self.numel * self.buffer.element_size()

    def views(self) -> list[torch.Tensor]:
        """Views into the buffer shaped like each tensor."""
        return list(self._views)

    def pack(self) -> torch.Tensor:
        """Copy the tensors' current values into the buffer and return it."""
        for view, t in zip(self._views, self.tensors):
            view.copy_(t.detach())
        return self.buffer

    def unpack(self) -> None:
        """Copy the buffer back into the tensors (in place, so parameters keep their identity)."""
        for view, t in zip(self._views, self.tensors):
            t.detach().copy_(view)
