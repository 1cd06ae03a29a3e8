"""Graceful-stop agreement under mpirun: a signal on any one rank stops every rank at the same global sync."""
from __future__ import annotations

import signal
import time

from mpi4py import MPI

from train.stop import StopAgreement

WORLD = MPI.COMM_WORLD


def _send(stopper: StopAgreement, sig: int) -> None:
    """Deliver `sig` to this process's main thread and wait until the handler has recorded a signal."""
    signal.raise_signal(sig)
    deadline = time.monotonic() + 5.0
    while not stopper.seen and time.monotonic() < deadline:
        time.sleep(0.001)


def _polls(stopper: StopAgreement, n: int) -> list[int]:
    return [stopper.poll() for _ in range(n)]


def check_signal_on_one_rank_is_agreed_one_sync_later() -> None:
    rank, size = WORLD.Get_rank(), WORLD.Get_size()
    before = signal.getsignal(signal.SIGINT)
    stopper = StopAgreement(WORLD)
    stopper.install()
    seq = _polls(stopper, 3)
    if rank == size - 1:
        _send(stopper, signal.SIGINT)  # the real path: the handler runs at the next bytecode
    seq += _polls(stopper, 3)
    stopper.close()
    assert signal.getsignal(signal.SIGINT) is before, "close() must restore the previous handler"
    # posted at poll 4 (index 3), read at poll 5: the same answer on every rank, at the same poll
    assert seq == [0, 0, 0, 0, int(signal.SIGINT), int(signal.SIGINT)], seq
    assert all(s == seq for s in WORLD.allgather(seq))


def check_strongest_signal_wins_and_second_signal_aborts() -> None:
    rank, size = WORLD.Get_rank(), WORLD.Get_size()
    stopper = StopAgreement(WORLD)
    stopper.install()
    stopper.poll()
    if rank == 0 and size > 1:
        _send(stopper, signal.SIGINT)
    if rank == size - 1:
        _send(stopper, signal.SIGTERM)
    stopper.poll()
    agreed = stopper.poll()
    assert agreed == int(signal.SIGTERM), agreed  # MAX over ranks: the same answer everywhere
    if not stopper.seen:  # the second-signal case only applies where a first one arrived
        stopper.close()
        return
    raised = False
    try:
        signal.raise_signal(signal.SIGINT)
        for _ in range(1000):  # give the interpreter bytecodes to run the handler on
            time.sleep(0.001)
    except KeyboardInterrupt:
        raised = True
    stopper.close()
    assert raised, "a second signal must raise KeyboardInterrupt (stop now)"


def check_checks_are_spaced_min_gap_steps_apart() -> None:
    rank = WORLD.Get_rank()
    stopper = StopAgreement(WORLD, min_gap=4)
    stopper.install()
    seen = []
    for step in range(20):  # a global sync every step, as in mini-batch SGD
        if step == 5 and rank == 0:
            _send(stopper, signal.SIGINT)
        seen.append(stopper.poll(step))
    stopper.close()
    # checks at steps 0, 4, 8, 12, 16: the signal at step 5 is posted at 8 and read at 12
    assert seen == [0] * 12 + [int(signal.SIGINT)] * 8, seen
    assert all(s == seen for s in WORLD.allgather(seen))
