"""The shared stochastic sampler: which samples worker k uses at local step t, from a seed (pure numpy)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sim.convex.errors import ConvexError

__all__ = ["BLOCK_STEPS", "SAMPLING_MODES", "Sampler"]

#: Steps drawn per random block; part of the sampler's definition (changing it changes every draw).
BLOCK_STEPS = 64
SAMPLING_MODES = ("iid", "shuffle")


def _check_int(name: str, value: object, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
        raise ConvexError(f"{name} must be an integer >= {lo}, got {value!r}")
    return int(value)


@dataclass(kw_only=True)
class Sampler:
    """Sample indices in [0, n) for K workers x B_loc samples per local step, reproducible from `seed`.

    mode "iid": every worker draws B_loc indices uniformly with replacement from all n samples
    (the setting of the convex theory). Step t lies in block t // BLOCK_STEPS, drawn by
    numpy.random.default_rng([seed, 0, block]).integers(0, n, size=(BLOCK_STEPS, K, B_loc)).

    mode "shuffle": every epoch e has a permutation default_rng([seed, 1, e]).permutation(n); worker k owns
    the slice [k*m, (k+1)*m) with m = n // K (the n - K*m last entries sit out that epoch) and takes
    B_loc consecutive entries per step; an epoch has m // B_loc steps (a partial last batch is dropped).

    `indices(t)` is (K, B_loc) int64; `worker_indices(k, t)` is row k of it, so a rank of the real trainer
    gets the very same samples as the simulator's worker k.
    """

    n: int
    K: int
    B_loc: int
    seed: int = 0
    mode: str = "iid"
    _block: int = field(default=-1, init=False, repr=False)
    _cache: np.ndarray | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.n = _check_int("n", self.n, 1)
        self.K = _check_int("K", self.K, 1)
        self.B_loc = _check_int("B_loc", self.B_loc, 1)
        self.seed = _check_int("seed", self.seed, 0)
        if self.mode not in SAMPLING_MODES:
            raise ConvexError(f"sampling mode must be one of {', '.join(SAMPLING_MODES)}, got {self.mode!r}")
        if self.mode == "shuffle" and self.steps_per_epoch < 1:
            raise ConvexError(f"shuffle sampling needs n // K >= B_loc, got n={self.n}, K={self.K}, "
                              f"B_loc={self.B_loc}; lower K or B_loc or use mode 'iid'")

    @property
    def steps_per_epoch(self) -> int:
        """Local steps per epoch in shuffle mode: (n // K) // B_loc (iid mode has no epochs)."""
        return (self.n // self.K) // self.B_loc

    def indices(self, t: int) -> np.ndarray:
        """Sample indices of all K workers at local step t (t >= 0), shape (K, B_loc), int64."""
        if isinstance(t, bool) or not isinstance(t, (int, np.integer)) or t < 0:
            raise ConvexError(f"step t must be an integer >= 0, got {t!r}")
        t = int(t)
        if self.mode == "iid":
            block, row = divmod(t, BLOCK_STEPS)
            if block != self._block:
                rng = np.random.default_rng([self.seed, 0, block])
                self._cache = rng.integers(0, self.n, size=(BLOCK_STEPS, self.K, self.B_loc), dtype=np.int64)
                self._block = block
            assert self._cache is not None
            return self._cache[row]
        epoch, step = divmod(t, self.steps_per_epoch)
        if epoch != self._block:
            self._cache = np.random.default_rng([self.seed, 1, epoch]).permutation(self.n).astype(np.int64)
            self._block = epoch
        assert self._cache is not None
        m = self.n // self.K
        starts = np.arange(self.K, dtype=np.int64) * m + step * self.B_loc
        return self._cache[starts[:, None] + np.arange(self.B_loc, dtype=np.int64)[None, :]]

    def worker_indices(self, k: int, t: int) -> np.ndarray:
        """Sample indices of worker k (0 <= k < K) at local step t, shape (B_loc,), int64."""
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 0 <= k < self.K:
            raise ConvexError(f"worker k must be an integer in [0, {self.K}), got {k!r}")
        return self.indices(t)[int(k)].copy()
