"""comm.iallreduce: nonblocking all-reduce requests, progressed by a napping helper thread or by the caller's polls."""
# Our algorithms run as schedules (comm.schedules): each step posts nonblocking sends and receives and yields them.
# MPICH progresses them only inside MPI calls (MPIR_CVAR_ASYNC_PROGRESS=1 adds a progress thread per rank that
# busy-polls, which takes the cores from the training when ranks share them). Two drivers, measured across emulated
# nodes in docs/README-overlap.md:
#  * "thread" (default): a helper thread per communicator runs the requests one after another, in the order they were
#    started, on its own duplicates of the communicators (its messages never meet the caller's). It tests the step's
#    requests and sleeps between tests (20 us doubling to LOCALSGD_IALLREDUCE_NAP_S, default 0.5 ms), so it holds
#    no core while the network works. mpi4py releases the GIL in MPI calls and sleeps. Needs MPI_THREAD_MULTIPLE
#    (mpi4py's default thread level, "multiple").
#  * "poll": no thread; the request advances inside the caller's test() (e.g. from backward hooks) and wait().
from __future__ import annotations

import atexit
import collections
import os
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from mpi4py import MPI

from .allreduce import check_args, check_work, resolve_comm
from .buffers import Scratch, Work, adapt
from .errors import CommError
from .schedules import Schedule, advance, hierarchical_schedule, run_napping, schedule_on

__all__ = ["PROGRESS", "NAP_S", "Request", "iallreduce", "ihierarchical_allreduce", "iblock_allreduce",
           "refuse_in_flight", "in_flight"]

PROGRESS = ("thread", "poll")


def _nap_from_env(default: float = 5e-4) -> float:
    text = os.environ.get("LOCALSGD_IALLREDUCE_NAP_S", "")
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise CommError(f"LOCALSGD_IALLREDUCE_NAP_S must be seconds in [0, 1] (0: spin in MPI_Waitall); got {text!r}")
    return value


#: The longest sleep of the helper thread between two tests of a step's requests (0: it spins in MPI_Waitall).
NAP_S = _nap_from_env()

_SPANS: dict[int, tuple[str, int, int]] = {}   # id(work) -> the caller's memory a request holds
_SPANS_LOCK = threading.Lock()


def in_flight() -> int:
    """How many requests of this process have not completed yet."""
    with _SPANS_LOCK:
        return len(_SPANS)


def refuse_in_flight(span: tuple[str, int, int]) -> None:
    """CommError when `span` (device, first byte, one past the last) overlaps memory of a request in flight."""
    if not _SPANS or span[1] == span[2]:
        return
    with _SPANS_LOCK:
        for other in _SPANS.values():
            if other[0] == span[0] and span[1] < other[2] and other[1] < span[2]:
                raise CommError(f"buffer at {span[1]:#x}..{span[2]:#x} ({span[0]}) overlaps a buffer still in flight "
                                f"in an iallreduce started earlier ({other[1]:#x}..{other[2]:#x}); call wait() on "
                                f"that request first, or use another buffer")


class Request:
    """One nonblocking all-reduce. The buffer holds the result once test() returns True or wait() returns; until
    then neither read nor write it (a second all-reduce of the same memory is refused with CommError)."""

    def __init__(self, buf: Any, lane: _Lane, make: Callable[[], Schedule], finish: Callable[[], None],
                 release: Callable[[], None]) -> None:
        self.buffer = buf
        self.started_at = time.perf_counter()
        self.completed_at: float | None = None  # perf_counter() when the result was in the buffer
        self._lane, self._make, self._finish, self._release = lane, make, finish, release
        self._done = threading.Event()
        self._error: BaseException | None = None

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def test(self) -> bool:
        """Whether the result is in the buffer (re-raises the request's error). Under "poll" progress this is where
        the requests of the communicator advance."""
        if not self._done.is_set():
            self._lane.poll()
        if self._done.is_set():
            self._raise()
            return True
        return False

    def wait(self, timeout: float | None = None) -> Any:
        """Block until the result is in the buffer and return the buffer; TimeoutError after `timeout` seconds."""
        if not self._done.is_set():
            self._lane.drive(self, timeout)
        if not self._done.wait(timeout):
            raise TimeoutError(f"iallreduce not complete after {timeout} s")
        self._raise()
        return self.buffer

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def _complete(self, error: BaseException | None = None) -> None:
        if error is None:
            try:
                self._finish()
            except BaseException as e:
                error = e
        self._error = error
        self.completed_at = time.perf_counter()
        self._release()
        self._done.set()


class _Lane:
    """The requests of one communicator and one progress kind, run one after another in the order they were
    started: its own duplicates of the communicators, a scratch set per request in flight (slots, reused: no
    allocation per call once the sizes have been seen), and a helper thread ("thread") or the caller's polls."""

    def __init__(self, progress: str) -> None:
        self.progress = progress
        self._jobs: queue.SimpleQueue[Request | None] = queue.SimpleQueue()   # "thread"
        self._polled: collections.deque[Request] = collections.deque()       # "poll"
        self._head: tuple[Schedule, list[Any]] | None = None
        self._thread: threading.Thread | None = None
        self._free: list[int] = []
        self._scratch: list[Scratch] = []
        self._lock = threading.RLock()

    def shadow(self, comm: Any) -> Any:
        """This progress kind's own duplicate of `comm`, cached on `comm` as an MPI attribute and freed with it
        (collective over `comm` the first time: every rank asks at the same request, as requests are started in
        the same order everywhere)."""
        kv = _keyval(f"shadow-{self.progress}", _free_shadow)
        dup = comm.Get_attr(kv)
        if dup is None:
            dup = comm.Dup()
            comm.Set_attr(kv, dup)
        return dup

    def slot(self) -> tuple[int, Scratch]:
        with self._lock:
            if self._free:
                i = self._free.pop()
            else:
                i = len(self._scratch)
                self._scratch.append(Scratch())
            return i, self._scratch[i]

    def free(self, i: int) -> None:
        with self._lock:
            self._free.append(i)

    def submit(self, req: Request) -> None:
        if self.progress == "poll":
            with self._lock:
                self._polled.append(req)
            self.poll()
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="comm-iallreduce", daemon=True)
            self._thread.start()
        self._jobs.put(req)

    def _run(self) -> None:
        while True:
            req = self._jobs.get()
            if req is None:
                return
            try:
                run_napping(req._make(), NAP_S)
            except BaseException as e:  # handed to the caller's wait() / test()
                req._complete(e)
            else:
                req._complete()

    def poll(self, block: bool = False) -> None:
        """"poll" lanes: advance the head request as far as its messages allow (block: wait for its next step)."""
        if self.progress != "poll":
            return
        with self._lock:
            while self._polled:
                req = self._polled[0]
                try:
                    if self._head is None:
                        self._head = (req._make(), [])
                    sched, pending = self._head
                    if block:
                        MPI.Request.Waitall(pending)
                    left = advance(sched, pending)
                except BaseException as e:
                    self._head = None
                    self._polled.popleft()
                    req._complete(e)
                    continue
                if left is not None:
                    self._head = (sched, left)
                    return
                self._head = None
                self._polled.popleft()
                req._complete()

    def drive(self, req: Request, timeout: float | None) -> None:
        """wait() of a "poll" request: advance the lane, blocking in MPI, until `req` is done."""
        if self.progress != "poll":
            return
        end = None if timeout is None else time.perf_counter() + timeout
        while not req.done and (end is None or time.perf_counter() < end):
            self.poll(block=end is None)
            if end is not None and not req.done:
                time.sleep(1e-4)

    def close(self, timeout: float = 30.0) -> None:
        """Stop the helper thread once the requests queued before have run."""
        if self._thread is not None and self._thread.is_alive():
            self._jobs.put(None)
            self._thread.join(timeout)
        self._thread = None


_KEYVALS: dict[str, int] = {}
_LANES: list[_Lane] = []   # every lane of this process, closed at exit before MPI_Finalize
_LANES_LOCK = threading.Lock()


def _keyval(name: str, delete: Any) -> int:
    with _LANES_LOCK:
        if name not in _KEYVALS:
            _KEYVALS[name] = MPI.Comm.Create_keyval(delete_fn=delete)
        return _KEYVALS[name]


def _free_shadow(comm: Any, keyval: int, dup: Any) -> None:
    if dup is not None and dup != MPI.COMM_NULL and not MPI.Is_finalized():
        dup.Free()


def _close_lane(comm: Any, keyval: int, lane: Any) -> None:
    if lane is not None:
        lane.close()


def _lane(comm: Any, progress: str) -> _Lane:
    """The lane of `comm` for `progress`, kept on `comm` as an MPI attribute (closed when `comm` is freed)."""
    if progress not in PROGRESS:
        raise CommError(f"progress must be one of {', '.join(PROGRESS)}; got {progress!r}")
    kv = _keyval(f"lane-{progress}", _close_lane)
    lane: _Lane | None = comm.Get_attr(kv)
    if lane is None:
        lane = _Lane(progress)
        comm.Set_attr(kv, lane)
        with _LANES_LOCK:
            _LANES.append(lane)
    return lane


@atexit.register
def _close_lanes() -> None:  # registered after mpi4py's own exit handler, so it runs before MPI_Finalize
    with _LANES_LOCK:
        lanes = list(_LANES)
        _LANES.clear()
    for lane in lanes:
        lane.close()


def _check_thread_level() -> None:
    level = MPI.Query_thread()
    if level < MPI.THREAD_MULTIPLE:
        names = {MPI.THREAD_SINGLE: "single", MPI.THREAD_FUNNELED: "funneled", MPI.THREAD_SERIALIZED: "serialized"}
        raise CommError(f"progress 'thread' needs MPI_THREAD_MULTIPLE; MPI was initialised with thread level "
                        f"{names.get(level, level)!r} (set mpi4py.rc.thread_level = 'multiple' before importing "
                        f"mpi4py.MPI, or use progress='poll')")


def _start(buf: Any, op: str, lane: _Lane, prepare: Callable[[], Callable[[Work], Schedule]]) -> Request:
    """Validate (before any communication), claim the memory, then make the lane's communicators (`prepare`,
    collective the first time) and queue the request on its lane."""
    if lane.progress == "thread":
        _check_thread_level()
    slot, scratch = lane.slot()
    try:
        work = adapt(buf, scratch)
        check_work(work, op)
    except BaseException:
        lane.free(slot)
        raise
    rid = id(work)
    with _SPANS_LOCK:
        _SPANS[rid] = work.span

    def release() -> None:
        with _SPANS_LOCK:
            _SPANS.pop(rid, None)
        lane.free(slot)

    make = prepare()
    req = Request(buf, lane, lambda: make(work), work.finish, release)
    lane.submit(req)
    return req


def iallreduce(buf: Any, *, op: str = "sum", algorithm: str = "auto", comm: Any = None,
               progress: str = "thread") -> Request:
    """Start an all-reduce of `buf` in place over `comm` (default MPI.COMM_WORLD) and return its Request.

    Every rank must start the same requests in the same order (as with MPI's nonblocking collectives). Buffers,
    dtypes, ops and algorithms are those of comm.allreduce, with the same bitwise-identical result on every rank.
    Several requests may be in flight at once on different buffers; they complete in the order they were started.
    progress "thread" (default): a helper thread per communicator runs the requests and naps between its tests
    (MPI_THREAD_MULTIPLE needed); "poll": they advance inside this process's test() and wait() calls. The result is
    bitwise the blocking call's with the same algorithm, except "native" (MPI_Iallreduce, whose algorithm MPICH
    picks apart from MPI_Allreduce's) and "rail" from 4 MiB on (the blocking rail is pipelined there). CUDA
    buffers: the caller synchronises the stream that wrote them first.
    """
    check_args(op, algorithm)
    comm = resolve_comm(comm)
    lane = _lane(comm, progress)
    size = comm.Get_size()

    def prepare() -> Callable[[Work], Schedule]:
        shadow = lane.shadow(comm) if size > 1 else comm
        return lambda work: schedule_on(work, op, algorithm, shadow)

    return _start(buf, op, lane, prepare)


def ihierarchical_allreduce(buf: Any, topology: Any, *, op: str = "sum", algorithm: str = "auto",
                            progress: str = "thread") -> Request:
    """comm.hierarchical_allreduce as a request (progress "thread"): reduce in the node, `algorithm` among the
    leaders, broadcast in the node. Shares the helper thread of topology.world, so it is ordered with the
    iallreduce and iblock_allreduce requests started on that world."""
    from .topology import Topology

    check_args(op, algorithm)
    if not isinstance(topology, Topology):
        raise CommError(f"topology must be a comm.Topology (from Topology.from_comm); got {type(topology).__name__}")
    lane = _lane(topology.world, progress)
    big = topology.world.Get_size() > 1

    def prepare() -> Callable[[Work], Schedule]:
        node = lane.shadow(topology.node_comm) if big else topology.node_comm
        leader = lane.shadow(topology.leader_comm) if big and topology.leader_comm is not None \
            else topology.leader_comm
        return lambda work: hierarchical_schedule(work, topology, node, leader, op, algorithm)

    return _start(buf, op, lane, prepare)


def iblock_allreduce(buf: Any, topology: Any, *, op: str = "sum", algorithm: str = "auto",
                     progress: str = "thread") -> Request:
    """comm.block_allreduce (inside this rank's node only) as a request, on the helper thread of topology.world."""
    from .topology import Topology

    check_args(op, algorithm)
    if not isinstance(topology, Topology):
        raise CommError(f"topology must be a comm.Topology (from Topology.from_comm); got {type(topology).__name__}")
    lane = _lane(topology.world, progress)
    size = topology.node_comm.Get_size()

    def prepare() -> Callable[[Work], Schedule]:
        node = lane.shadow(topology.node_comm) if size > 1 else topology.node_comm
        return lambda work: schedule_on(work, op, algorithm, node)

    return _start(buf, op, lane, prepare)
