"""Turn any contiguous buffer into a 1-D work array that the algorithms reduce in place, and back again.

Host memory (numpy, torch CPU tensors, DLPack, the buffer protocol) becomes a numpy view with no copy. float16
and bfloat16 are widened into a reused float32 work buffer (bfloat16 by bit shifts, so comm needs no torch) and
narrowed back with round-to-nearest-even. CUDA tensors are reduced on the device with torch operations when MPI
is CUDA-aware, or staged through a reused pinned host buffer when it is not. The caller must have synchronised
the stream that produced a CUDA buffer before calling (comm synchronises the streams of its own kernels).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.lib.array_utils import byte_bounds

from .cuda import cuda_aware
from .errors import CommError

__all__ = ["DTYPES", "Work", "adapt", "NumpyOps", "TorchOps", "Scratch", "DEFAULT_SCRATCH", "HOST_SCRATCH",
           "memory_span"]

DTYPES = ("float16", "bfloat16", "float32", "float64", "int32", "int64")
_NARROW = ("float16", "bfloat16")
_REDUCERS = {"sum": np.add, "mean": np.add, "max": np.maximum, "min": np.minimum}


class _ScratchPool:
    """Reused work buffers keyed by role and dtype; they grow to the largest size asked for and never shrink,
    so no message-sized allocation happens after the first call of a size."""

    def __init__(self, alloc: Callable[[int, Any], Any]) -> None:
        self._alloc = alloc
        self._bufs: dict[tuple[str, Any], Any] = {}
        self.allocations = 0  # counted so that tests can prove reuse

    def get(self, role: str, dtype: Any, n: int) -> Any:
        key = (role, dtype)
        buf = self._bufs.get(key)
        if buf is None or len(buf) < n:
            buf = self._alloc(max(n, 1), dtype)
            self._bufs[key] = buf
            self.allocations += 1
        return buf[:n]

    def clear(self) -> None:
        self._bufs.clear()


class Scratch:
    """One set of reused work buffers: host arrays, device tensors per device, pinned staging buffers per device and
    dtype. The blocking all-reduces share DEFAULT_SCRATCH; every request of a nonblocking all-reduce that is in
    flight has a set of its own (comm.nonblocking), so two of them never write the same scratch."""

    def __init__(self) -> None:
        self.host = _ScratchPool(lambda n, dtype: np.empty(n, dtype=dtype))
        self.device: dict[str, _ScratchPool] = {}
        self.pinned: dict[tuple[str, str], Any] = {}
        self.host_ops = NumpyOps(self.host)

    def clear(self) -> None:
        self.host.clear()
        self.device.clear()
        self.pinned.clear()


class NumpyOps:
    """Reductions of numpy arrays into their first operand; scratch buffers from one pool."""

    def __init__(self, pool: _ScratchPool) -> None:
        self._pool = pool

    @staticmethod
    def reduce(dst: np.ndarray, src: np.ndarray, op: str) -> None:
        _REDUCERS[op](dst, src, out=dst)

    def scratch(self, role: str, like: np.ndarray, n: int) -> np.ndarray:
        out: np.ndarray = self._pool.get(role, like.dtype, n)
        return out

    @staticmethod
    def sync() -> None:
        pass

    @staticmethod
    def divide(arr: np.ndarray, p: int) -> None:
        np.divide(arr, p, out=arr)


class TorchOps:
    """Reductions of (CUDA) torch tensors on their device; sync() waits for the queued kernels before MPI reads."""

    def __init__(self, device: Any, scratch: Scratch | None = None) -> None:
        import torch

        self._torch = torch
        self._device = device
        pools = (scratch or DEFAULT_SCRATCH).device
        self._pool = pools.setdefault(str(device), _ScratchPool(
            lambda n, dtype: torch.empty(n, dtype=dtype, device=device)))

    def reduce(self, dst: Any, src: Any, op: str) -> None:
        if op in ("sum", "mean"):
            dst.add_(src)
        elif op == "max":
            self._torch.maximum(dst, src, out=dst)
        else:
            self._torch.minimum(dst, src, out=dst)

    def scratch(self, role: str, like: Any, n: int) -> Any:
        return self._pool.get(role, like.dtype, n)

    def sync(self) -> None:
        if self._device.type == "cuda":
            self._torch.cuda.current_stream(self._device).synchronize()

    @staticmethod
    def divide(arr: Any, p: int) -> None:
        arr.div_(p)


DEFAULT_SCRATCH = Scratch()
HOST_SCRATCH = DEFAULT_SCRATCH.host


@dataclass
class Work:
    """What an algorithm reduces: `array` (1-D, contiguous), its `ops`, and `finish()` to write results back.

    `span` is the caller's memory: (device, first byte address, one past the last), which the nonblocking
    all-reduce keeps while a request is in flight so that a second use of the same memory is refused.
    """

    array: Any
    ops: Any
    dtype: str
    count: int
    finish: Callable[[], None]
    span: tuple[str, int, int] = ("cpu", 0, 0)


def _is_torch(buf: Any) -> bool:
    return type(buf).__module__.split(".")[0] == "torch" and hasattr(buf, "is_cuda")


def _numpy_dtype_name(arr: np.ndarray) -> str:
    name = arr.dtype.name
    if name not in DTYPES or name == "bfloat16":
        raise CommError(f"unsupported dtype {name!r}; comm reduces one of {', '.join(DTYPES)}")
    return name


def _flat_host(arr: np.ndarray) -> np.ndarray:
    if not (arr.flags.c_contiguous or arr.flags.f_contiguous):
        raise CommError(f"buffer of shape {arr.shape} with strides {arr.strides} is not contiguous; "
                        "pass a contiguous array (e.g. numpy.ascontiguousarray or tensor.contiguous())")
    if not arr.flags.writeable:
        raise CommError("buffer is read-only; the all-reduce works in place and needs a writable buffer")
    return arr.reshape(-1, order="F" if not arr.flags.c_contiguous else "C")


def memory_span(arr: np.ndarray) -> tuple[str, int, int]:
    """("cpu", lo, hi): the bytes a host array covers."""
    lo, hi = byte_bounds(arr)
    return ("cpu", int(lo), int(hi))


def _widen_host(flat: np.ndarray, dtype: str, scratch: Scratch) -> Work:
    """float16/bfloat16 host data: reduce in a reused float32 buffer, then narrow back (round to nearest even)."""
    n = len(flat)
    pool = scratch.host
    work = pool.get("widen", np.dtype(np.float32), n)
    if dtype == "float16":
        np.copyto(work, flat)

        def finish() -> None:
            np.copyto(flat, work, casting="unsafe")
    else:  # bfloat16 held as raw uint16 bits: the top half of a float32
        bits = work.view(np.uint32)
        np.copyto(bits, flat)
        np.left_shift(bits, 16, out=bits)

        def finish() -> None:
            tmp = pool.get("narrow", np.dtype(np.uint32), n)
            np.right_shift(bits, 16, out=tmp)
            np.bitwise_and(tmp, 1, out=tmp)
            np.add(tmp, 0x7FFF, out=tmp)
            np.add(bits, tmp, out=bits)
            np.right_shift(bits, 16, out=bits)
            np.copyto(flat, bits, casting="unsafe")
    return Work(work, scratch.host_ops, dtype, n, finish, memory_span(flat))


def _host_work(flat: np.ndarray, dtype: str, scratch: Scratch) -> Work:
    if dtype in _NARROW:
        return _widen_host(flat, dtype, scratch)
    return Work(flat, scratch.host_ops, dtype, len(flat), lambda: None, memory_span(flat))


def _torch_work(t: Any, scratch: Scratch) -> Work:
    t = t.detach()
    if not t.is_contiguous():
        raise CommError(f"tensor of shape {tuple(t.shape)} with stride {t.stride()} is not contiguous; "
                        "pass tensor.contiguous()")
    dtype = str(t.dtype).removeprefix("torch.")
    if dtype not in DTYPES:
        raise CommError(f"unsupported dtype {dtype!r}; comm reduces one of {', '.join(DTYPES)}")
    flat = t.view(-1)
    if flat.device.type == "cpu":
        return _host_work(_host_view(flat, dtype), dtype, scratch)
    if flat.device.type != "cuda":
        raise CommError(f"tensor on device {flat.device} is not supported; use a CPU or CUDA tensor")
    span = (str(flat.device), int(flat.data_ptr()), int(flat.data_ptr()) + flat.numel() * flat.element_size())
    if cuda_aware():
        ops = TorchOps(flat.device, scratch)
        if dtype in _NARROW:
            import torch

            work = ops.scratch("widen", flat.new_empty(0, dtype=torch.float32), flat.numel())
            work.copy_(flat)
            return Work(work, ops, dtype, flat.numel(), lambda: flat.copy_(work), span)
        return Work(flat, ops, dtype, flat.numel(), lambda: None, span)
    staged = _staged_work(flat, dtype, scratch)
    staged.span = span
    return staged


def _host_view(flat: Any, dtype: str) -> np.ndarray:
    """A numpy view of a CPU tensor; bfloat16 (which numpy lacks) is viewed as its raw uint16 bits."""
    if dtype == "bfloat16":
        import torch

        bits: np.ndarray = flat.view(torch.int16).numpy().view(np.uint16)
        return bits
    view: np.ndarray = flat.numpy()
    return view


def _staged_work(flat: Any, dtype: str, scratch: Scratch) -> Work:
    """MPI is not CUDA-aware: copy into a reused pinned host buffer, reduce there, copy back to the device."""
    import torch

    key = (str(flat.device), dtype)
    host = scratch.pinned.get(key)
    if host is None or host.numel() < flat.numel():
        host = torch.empty(max(flat.numel(), 1), dtype=flat.dtype, pin_memory=True)
        scratch.pinned[key] = host
    host = host[: flat.numel()]
    host.copy_(flat)  # synchronous device-to-host copy on the current stream
    inner = _host_work(_host_view(host, dtype), dtype, scratch)

    def finish() -> None:
        inner.finish()
        flat.copy_(host)

    return Work(inner.array, scratch.host_ops, dtype, flat.numel(), finish)


def adapt(buf: Any, scratch: Scratch | None = None) -> Work:
    """Validate `buf` and return the work array the algorithms reduce; CommError names what is wrong.

    `scratch`: the work buffers to use (DEFAULT_SCRATCH for the blocking calls)."""
    sc = scratch or DEFAULT_SCRATCH
    if isinstance(buf, np.ndarray):
        return _host_work(_flat_host(buf), _numpy_dtype_name(buf), sc)
    if _is_torch(buf):
        return _torch_work(buf, sc)
    if hasattr(buf, "__cuda_array_interface__") or (
            hasattr(buf, "__dlpack_device__") and buf.__dlpack_device__()[0] == 2):  # kDLCUDA
        import torch

        return _torch_work(torch.as_tensor(buf, device="cuda") if hasattr(buf, "__cuda_array_interface__")
                           else torch.utils.dlpack.from_dlpack(buf), sc)
    if hasattr(buf, "__dlpack__"):
        arr = np.from_dlpack(buf)
        return _host_work(_flat_host(arr), _numpy_dtype_name(arr), sc)
    try:
        view = memoryview(buf)
    except TypeError:
        raise CommError(f"cannot all-reduce an object of type {type(buf).__name__}; pass a numpy array, a torch "
                        "tensor, or an object with DLPack, __cuda_array_interface__ or the buffer protocol") from None
    arr = np.asarray(view)
    return _host_work(_flat_host(arr), _numpy_dtype_name(arr), sc)
