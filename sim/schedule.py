"""When each local-SGD variant synchronises: the sync schedule shared by the trainer and the simulator.

Pure standard library (no numpy, simpy, mpi4py or torch), so ``train/`` imports it and both sides
agree on every sync by construction.

Semantics (SPEC sections 2 and 5)
---------------------------------
Steps are 0-based per worker; a run has ``total_steps`` steps (see :func:`total_steps`). A worker
keeps a counter of local steps since its last sync. After step ``t`` finishes, the counter is
incremented; if it is ``>= h_at(t)``, or ``t`` is the last step, a sync happens and the counter
resets to 0. So a partial final round syncs too.

* ``minibatch``: every step syncs (gradient all-reduce in the trainer); ``H`` is forced to 1.
* ``local``: every ``H`` steps, after the warm-up.
* ``postlocal``: steps ``t < switch_step`` run with H = 1 (the mini-batch phase); the local phase
  (and its warm-up) starts at step ``switch_step``.
* ``hierarchical``: syncs are numbered 1, 2, 3, ...; sync ``k`` is ``"global"`` when ``k % Hb == 0``
  or it is the final sync of the run, otherwise ``"block"`` (inside each node only).
  All other algorithms only do ``"global"`` syncs.

Local-step warm-up (SPEC appendix B.4.2), precisely: let ``s0`` be the first step of the local
phase (``switch_step`` for postlocal, else 0), ``W = warmup_steps`` and ``u = t - s0``. For
``0 <= u < W`` the H in force is

* ``"linear"``:      ``min(H, 1 + (u * H) // W)``  -- the values 1, 2, ..., H, each held for W/H steps;
* ``"exponential"``: ``min(H, 2 ** ((u * (L + 1)) // W))`` with ``L = ceil(log2 H)`` -- the values
  1, 2, 4, ..., 2**(L-1), H, each held for W/(L+1) steps;
* ``"constant"``:    ``H``.

For ``u >= W`` (and always when ``W == 0``) the H in force is the target ``H``. Because the sync rule
compares the counter with the H in force at the current step, a round that starts late in the
warm-up may end with the full H.

With constant warm-up this gives the SPEC counts exactly: with ``T = ceil(N / (K B))``,
``global = ceil(T / (H Hb))`` and ``block = ceil(T / H) - ceil(T / (H Hb))``.
"""
from __future__ import annotations

import bisect
from collections.abc import Iterator
from dataclasses import dataclass, field

from sim.errors import SimError

__all__ = ["ALGORITHMS", "WARMUPS", "LEVELS", "SyncSchedule", "total_steps"]

ALGORITHMS = ("minibatch", "local", "postlocal", "hierarchical")
WARMUPS = ("constant", "linear", "exponential")
LEVELS = ("block", "global")


def _check_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SimError(f"{name} must be an integer >= {minimum}, got {value!r}")


def total_steps(N: int, K: int, B: int) -> int:
    """Steps per worker for K workers with batch B to access N samples together: ceil(N / (K B))."""
    _check_int("N", N, 1)
    _check_int("K", K, 1)
    _check_int("B", B, 1)
    return -(-N // (K * B))


@dataclass(kw_only=True, frozen=True)
class SyncSchedule:
    """The sync schedule of one run; see the module docstring for the exact rules."""

    algorithm: str
    H: int = 1
    Hb: int = 1
    switch_step: int = 0
    warmup: str = "constant"
    warmup_steps: int = 0
    # Derived plan (not part of the constructor): the sync steps of the non-periodic prefix of an
    # unbounded run, and the first step from which rounds are exactly H long.
    _warm_syncs: tuple[int, ...] = field(init=False, repr=False, compare=False, default=())
    _periodic_from: int = field(init=False, repr=False, compare=False, default=0)

    def __post_init__(self) -> None:
        if self.algorithm not in ALGORITHMS:
            raise SimError(f"algorithm must be one of {', '.join(ALGORITHMS)}, got {self.algorithm!r}")
        _check_int("H", self.H, 1)
        _check_int("Hb", self.Hb, 1)
        _check_int("switch_step", self.switch_step, 0)
        _check_int("warmup_steps", self.warmup_steps, 0)
        if self.warmup not in WARMUPS:
            raise SimError(f"warmup must be one of {', '.join(WARMUPS)}, got {self.warmup!r}")
        if self.Hb != 1 and self.algorithm != "hierarchical":
            raise SimError(f"Hb must be 1 unless algorithm is 'hierarchical', got Hb={self.Hb} "
                           f"with algorithm {self.algorithm!r}")
        if self.switch_step != 0 and self.algorithm != "postlocal":
            raise SimError(f"switch_step must be 0 unless algorithm is 'postlocal', got "
                           f"switch_step={self.switch_step} with algorithm {self.algorithm!r}")
        if self.algorithm == "minibatch":
            object.__setattr__(self, "H", 1)
        self._plan()

    # -- the H in force ------------------------------------------------------------------------
    @property
    def local_start(self) -> int:
        """First step of the local phase (where the warm-up starts)."""
        return self.switch_step if self.algorithm == "postlocal" else 0

    def _warm(self) -> bool:
        return self.algorithm != "minibatch" and self.warmup != "constant" and self.warmup_steps > 0

    def h_at(self, step: int) -> int:
        """The H in force at 0-based global step ``step``."""
        _check_int("step", step, 0)
        if self.algorithm == "minibatch":
            return 1
        s0 = self.local_start
        if step < s0:
            return 1
        u = step - s0
        if not self._warm() or u >= self.warmup_steps:
            return self.H
        W, H = self.warmup_steps, self.H
        if self.warmup == "linear":
            return min(H, 1 + (u * H) // W)
        L = (H - 1).bit_length()  # ceil(log2 H) for H >= 1
        return min(H, 2 ** ((u * (L + 1)) // W))

    def _plan(self) -> None:
        """Sync steps of an unbounded run during the warm-up; the periodic part follows them."""
        s = self.local_start
        syncs: list[int] = []
        if self._warm():
            end = s + self.warmup_steps
            while s < end:
                t = s
                while t - s + 1 < self.h_at(t):
                    t += 1
                syncs.append(t)
                s = t + 1
        object.__setattr__(self, "_warm_syncs", tuple(syncs))
        object.__setattr__(self, "_periodic_from", s)

    # -- queries on the unbounded run ---------------------------------------------------------
    def _syncs_before(self, x: int) -> int:
        """Number of sync steps < x in an unbounded run (no forced final sync)."""
        mb = min(x, self.local_start)  # postlocal mini-batch phase: every step syncs
        warm = bisect.bisect_left(self._warm_syncs, x)
        periodic = max(0, x - self._periodic_from) // self.H
        return mb + warm + periodic

    def _is_sync(self, t: int) -> bool:
        """Whether step t ends with a sync in an unbounded run."""
        if t < self.local_start:
            return True
        if t >= self._periodic_from:
            return (t - self._periodic_from + 1) % self.H == 0
        i = bisect.bisect_left(self._warm_syncs, t)
        return i < len(self._warm_syncs) and self._warm_syncs[i] == t

    def _level(self, k: int, final: bool) -> str:
        if self.algorithm != "hierarchical" or final or k % self.Hb == 0:
            return "global"
        return "block"

    # -- public queries ---------------------------------------------------------------------
    def sync_after(self, step: int, total_steps: int | None = None) -> str | None:
        """Level of the sync right after 0-based ``step``: "global", "block" or None (no sync).

        ``total_steps=None``: an unbounded run (no forced final sync), as an averager without a known end sees it.
        """
        _check_int("step", step, 0)
        final = False
        if total_steps is not None:
            _check_int("total_steps", total_steps, 1)
            if step >= total_steps:
                raise SimError(f"step must be < total_steps={total_steps}, got {step}")
            final = step == total_steps - 1
        if not final and not self._is_sync(step):
            return None
        return self._level(self._syncs_before(step) + 1, final)

    def events(self, total_steps: int) -> Iterator[tuple[int, str]]:
        """Yield (step, level) for every sync of a run of ``total_steps`` steps, in order."""
        _check_int("total_steps", total_steps, 0)
        if total_steps == 0:
            return
        last = total_steps - 1
        k = 0

        def steps() -> Iterator[int]:
            yield from range(min(self.local_start, last))
            for t in self._warm_syncs:
                if t >= last:
                    return
                yield t
            yield from range(self._periodic_from + self.H - 1, last, self.H)

        for t in steps():
            k += 1
            yield t, self._level(k, False)
        yield last, self._level(k + 1, True)

    def counts(self, total_steps: int) -> dict[str, int]:
        """{"block": block-only syncs, "global": global syncs} of a run, in O(warm-up) time."""
        _check_int("total_steps", total_steps, 0)
        if total_steps == 0:
            return {"block": 0, "global": 0}
        n = self._syncs_before(total_steps - 1) + 1
        n_global = -(-n // self.Hb) if self.algorithm == "hierarchical" else n
        return {"block": n - n_global, "global": n_global}
