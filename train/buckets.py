"""GradientBuckets: each bucket's gradient all-reduce starts as backward produces it, all are waited before the step."""
# DDP's overlap (torch/csrc/distributed/c10d/reducer.cpp), written for our comm: parameters are taken in reverse
# registration order (roughly the order backward produces their gradients) and cut into buckets of at most
# `bucket_bytes`, the first one smaller (`first_bucket_bytes`) so that communication starts early. A
# post-accumulate-grad hook copies each gradient into its bucket; when a bucket is full its all-reduce (mean) is
# started at once, and buckets are always started in index order, so every rank starts the same all-reduces in the
# same order even where a gradient comes late or never (an unused parameter: wait() sends zeros for it, as the
# unbucketed path does). wait() starts what is left, waits for all, and copies the means back into the gradients.
# Under "auto" every bucket runs the algorithm the whole gradient would get (comm.auto_choice of the total bytes):
# chosen per bucket size, small buckets would get recursive doubling, which sends lg p whole buckets through each
# link (measured: 0.70 s of comm per step against 0.52 s at 25 Mbit/s, ResNet-20, 4 nodes). Element-wise sums do
# not depend on where an element sits in a message for recursive doubling and Rabenseifner (with the fold), or
# comm's hierarchical all-reduce over them: there the result is bitwise the unbucketed one (tested). The ring and
# the rail sum in an order that depends on the element's chunk, and native MPI picks its own algorithm per size,
# so there bucketing changes the rounding (never the agreement between ranks).
from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from train.errors import TrainError

__all__ = ["DEFAULT_BUCKET_BYTES", "DEFAULT_FIRST_BUCKET_BYTES", "plan_buckets", "GradientBuckets"]

#: Bucket sizes: DDP's defaults are 25 MiB and 1 MiB, made for models of tens of MB on fast links. Ours are smaller:
#: on the slow links where overlap matters the message time dominates a bucket's fixed cost, and the small models of
#: the emulated cluster (ResNet-20: 1.09 MB) would otherwise fit in the first bucket and overlap nothing
#: (docs/README-overlap.md, the bucket-size sweep).
DEFAULT_BUCKET_BYTES = 256 * 1024
DEFAULT_FIRST_BUCKET_BYTES = 64 * 1024


def plan_buckets(nbytes: Sequence[int], bucket_bytes: int, first_bucket_bytes: int) -> list[list[int]]:
    """Cut tensors of `nbytes` (in the order they are taken: reverse registration) into buckets: consecutive runs of
    indices, each closed once it holds at least its cap (first_bucket_bytes for the first, bucket_bytes after); a
    tensor larger than the cap is a bucket of its own. Pure: the simulator's predictions use it too."""
    for name, v in (("bucket_bytes", bucket_bytes), ("first_bucket_bytes", first_bucket_bytes)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise TrainError(f"{name} must be an integer >= 1, got {v!r}")
    buckets: list[list[int]] = []
    cur: list[int] = []
    size = 0
    for i, n in enumerate(nbytes):
        cur.append(i)
        size += n
        if size >= (first_bucket_bytes if not buckets else bucket_bytes):
            buckets.append(cur)
            cur, size = [], 0
    if cur:
        buckets.append(cur)
    return buckets


class _Bucket:
    def __init__(self, params: list[torch.nn.Parameter]) -> None:
        self.params = params
        first = params[0]
        self.buffer = first.detach().new_empty(sum(p.numel() for p in params))
        self.views: dict[int, torch.Tensor] = {}
        off = 0
        for p in params:
            self.views[id(p)] = self.buffer[off:off + p.numel()].view(p.shape)
            off += p.numel()
        self.ready: set[int] = set()
        self.handle: Any = None


class GradientBuckets:
    """Average gradients over all ranks in buckets that are all-reduced while backward still runs.

    ``buckets = GradientBuckets(model)``, then every step: ``loss.backward()`` (the all-reduces start from its hooks),
    ``buckets.wait()`` (every gradient is now the mean over the ranks), ``optimizer.step()``. `params`: a model, its
    parameters or an optimiser's parameter groups (those that require grad take part); `backend`: "mpi" (default,
    comm's nonblocking all-reduce with `algorithm` and `progress`), "torch" (torch.distributed's async all_reduce), or
    a backend object with ``iallreduce_mean(buf, level)``. `when`: a callable asked at each gradient whether this
    backward is to be averaged (LocalSGD passes its mini-batch phases; default: always); while it answers False the
    hooks do nothing and wait() returns False. One backward per wait(): accumulate over several backward passes
    inside ``no_sync()``. `hooks`: the trainer's timer (``overlapped_sync``), optional; `delay_s`: an emulated
    network delay, the last bucket completing that much after its communication.
    """

    def __init__(self, params: Any, *, bucket_bytes: int = DEFAULT_BUCKET_BYTES,
                 first_bucket_bytes: int = DEFAULT_FIRST_BUCKET_BYTES, backend: Any = None, algorithm: str = "auto",
                 progress: str = "thread", level: str = "global", when: Callable[[], bool] | None = None,
                 hooks: Any = None, delay_s: float = 0.0) -> None:
        from train.averager import _params_of
        from train.backend import make_backend

        ps = [p for p in _params_of(params) if p.requires_grad]
        if not ps:
            raise TrainError("GradientBuckets needs at least one parameter that requires grad; got none")
        order = ps[::-1]
        plan = plan_buckets([p.numel() * p.element_size() for p in order], bucket_bytes, first_bucket_bytes)
        self.buckets = [_Bucket([order[i] for i in idx]) for idx in plan]
        self._where = {id(p): b for b in self.buckets for p in b.params}
        self.backend = make_backend(backend, algorithm=algorithm, progress=progress) \
            if backend is None or isinstance(backend, str) else backend
        if not hasattr(self.backend, "iallreduce_mean"):
            raise TrainError(f"backend {type(self.backend).__name__} has no iallreduce_mean(buf, level); use 'mpi', "
                             "'torch' or train.average_gradients (blocking)")
        self.level, self.when, self.hooks, self.delay_s = level, when, hooks, float(delay_s)
        self._as_bytes = "as_bytes" in inspect.signature(self.backend.iallreduce_mean).parameters
        self.nbytes = sum(int(b.buffer.numel() * b.buffer.element_size()) for b in self.buckets)
        self._next = 0          # the next bucket to start: buckets start in index order only
        self._first: float | None = None  # perf_counter() when this step's first bucket started
        self._active = False    # a backward of an averaged step is under way
        self._sync_off = False
        self._handles = [p.register_post_accumulate_grad_hook(self._on_grad) for p in ps]

    @property
    def bucket_sizes(self) -> list[int]:
        """Bytes per bucket, in the order they are started."""
        return [int(b.buffer.numel() * b.buffer.element_size()) for b in self.buckets]

    # -- backward --------------------------------------------------------------------------------------------
    def _on_grad(self, p: torch.Tensor) -> None:
        if self._sync_off:
            return
        if not self._active:
            if self.when is not None and not self.when():
                return
            self._active = True
        b = self._where[id(p)]
        assert p.grad is not None
        b.views[id(p)].copy_(p.grad)
        b.ready.add(id(p))
        self._start_ready()
        self._poll()

    def _start_ready(self) -> None:
        while self._next < len(self.buckets) and len(self.buckets[self._next].ready) == \
                len(self.buckets[self._next].params):
            self._start(self.buckets[self._next])
            self._next += 1

    def _start(self, b: _Bucket) -> None:
        if b.buffer.is_cuda:  # comm reads the buffer from another thread: the copies into it must be done
            torch.cuda.current_stream(b.buffer.device).synchronize()
        if self._first is None:
            self._first = time.perf_counter()
        # every bucket with the algorithm the whole gradient would get (see the top of this module)
        kw = {"as_bytes": self.nbytes} if self._as_bytes else {}
        b.handle = self.backend.iallreduce_mean(b.buffer, self.level, **kw)

    def _poll(self) -> None:
        """Give "poll" progress a chance: test the oldest request in flight (a no-op for the helper thread)."""
        for b in self.buckets[:self._next]:
            if b.handle is not None and not b.handle.test():
                return

    # -- the step ----------------------------------------------------------------------------------------------
    def wait(self) -> bool:
        """Start the buckets that are left (a missing gradient counts as 0), wait for all, write the means into the
        gradients. Returns whether this step was averaged (False while `when` says no)."""
        if not self._active:
            if self.when is not None and not self.when():
                return False
            self._active = True
        t0 = time.perf_counter()
        for b in self.buckets[self._next:]:
            for p in b.params:
                if id(p) not in b.ready:
                    if p.grad is None:
                        b.views[id(p)].zero_()
                    else:  # a gradient produced outside the hooks (e.g. set by hand)
                        b.views[id(p)].copy_(p.grad)
            b.ready = {id(p) for p in b.params}
        self._start_ready()
        if self.delay_s > 0:
            from train.backend import Delayed
            last = self.buckets[-1]
            last.handle = Delayed(last.handle, self.delay_s)
        for b in self.buckets:
            b.handle.wait()
        end = time.perf_counter()
        exposed, inflight = end - t0, end - (self._first if self._first is not None else t0)
        for b in self.buckets:
            for p in b.params:
                view = b.views[id(p)]
                if p.grad is None:
                    p.grad = view.clone()
                else:
                    p.grad.copy_(view)
            b.ready = set()
            b.handle = None
        self._next, self._active, self._first = 0, False, None
        if self.hooks is not None:
            self.hooks.overlapped_sync(self.level, self.nbytes, self.nbytes, exposed_s=exposed, inflight_s=inflight,
                                       delay_s=self.delay_s)
        return True

    def no_sync(self) -> Any:
        """Context manager: backward passes inside it only accumulate gradients (nothing is started); the backward
        after it starts the buckets with the accumulated sums, as DDP's no_sync()."""
        outer = self

        class _NoSync:
            def __enter__(self) -> None:
                outer._sync_off = True

            def __exit__(self, *exc: object) -> None:
                outer._sync_off = False

        return _NoSync()

    def remove(self) -> None:
        """Remove the hooks (the buckets stop following backward)."""
        for h in self._handles:
            h.remove()
        self._handles = []
