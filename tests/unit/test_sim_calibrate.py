"""Calibration recovers known alpha/beta/gamma from synthetic comm-bench rows (independent cost formulas)."""
from __future__ import annotations

import math
import random

import pytest

from sim.calibrate import calibrated_topology, fit_level, read_bench
from sim.errors import SimError
from sim.topology import load_topology

ALPHA, BETA, GAMMA = 7e-6, 4e-10, 9e-11


def true_time(alg: str, p: int, n: float) -> float:
    """SPEC section 4 with MPICH's fold, restated here (not via sim.costs)."""
    q = 1 << (p.bit_length() - 1)
    lg, fold = math.log2(q), p != q
    extra = (2 * ALPHA + 2 * n * BETA + n * GAMMA) if fold else 0.0
    if alg == "recursive_doubling":
        return lg * (ALPHA + n * BETA + n * GAMMA) + extra
    if alg == "rabenseifner":
        return 2 * lg * ALPHA + 2 * n * (q - 1) / q * BETA + n * (q - 1) / q * GAMMA + extra
    return 2 * (p - 1) * ALPHA + 2 * n * (p - 1) / p * BETA + n * (p - 1) / p * GAMMA


def bench_rows(algs=("recursive_doubling", "rabenseifner", "ring"), noise=0.0, seed=0):
    rng = random.Random(seed)
    rows = []
    for p in (2, 3, 4, 6, 8):
        for n in (8, 1024, 65536, 1 << 20, 1 << 23):
            for alg in algs + ("native",):
                t = true_time(alg if alg != "native" else "ring", p, n) * (1 + rng.gauss(0, noise))
                algbw = n / t / 1e9
                rows.append({"library": "mpi" if alg == "native" else "localsgd", "p": p, "gpus_per_node": None,
                             "bytes": n, "dtype": "float32", "algorithm": alg, "t_median_s": t, "t_min_s": t,
                             "t_max_s": t, "algbw_GBps": algbw, "busbw_GBps": algbw * 2 * (p - 1) / p,
                             "correct": True})
    return rows


def test_fit_recovers_known_parameters():
    fit = fit_level(bench_rows())
    assert fit.alpha == pytest.approx(ALPHA, rel=1e-6)
    assert fit.beta == pytest.approx(BETA, rel=1e-6)
    assert fit.gamma == pytest.approx(GAMMA, rel=1e-6)
    assert fit.r2 == pytest.approx(1.0, abs=1e-9)
    assert fit.rows == 5 * 5 * 3 and any("native" in n for n in fit.notes)


def test_noisy_fit_reports_r2_below_one_and_worst_rows():
    rows = bench_rows(noise=0.05, seed=3)
    rows[10]["t_median_s"] *= 3  # one bad measurement
    fit = fit_level(rows)
    assert fit.r2 < 1.0
    assert fit.worst[0]["p"] == rows[10]["p"] and fit.worst[0]["bytes"] == rows[10]["bytes"]
    assert fit.worst[0]["algorithm"] == rows[10]["algorithm"]
    assert fit.alpha == pytest.approx(ALPHA, rel=0.3) and fit.beta == pytest.approx(BETA, rel=0.2)


def test_beta_gamma_inseparable_without_recursive_doubling():
    fit = fit_level(bench_rows(algs=("rabenseifner", "ring")))
    assert fit.gamma == 0.0 and any("not separable" in n for n in fit.notes)
    # The 2:1 ratio folds gamma into beta: beta_fit = beta + gamma / 2.
    assert fit.beta == pytest.approx(BETA + GAMMA / 2, rel=1e-6)


def test_calibrated_topology_replaces_only_fitted_levels(tmp_path):
    base = load_topology("paper-8x2-10gbps")
    topo = calibrated_topology(base, {"intra": fit_level(bench_rows())}, name="cal", nodes=2, gpus_per_node=4)
    assert topo.intra.latency_s == pytest.approx(ALPHA, rel=1e-6)
    assert topo.intra.bandwidth_GBps == pytest.approx(1 / BETA / 1e9, rel=1e-6)
    assert topo.inter == base.inter and (topo.nodes, topo.gpus_per_node) == (2, 4)
    assert "inter level and compute taken from preset 'paper-8x2-10gbps'" in topo.description


def test_bad_bench_files(tmp_path):
    p = tmp_path / "b.jsonl"
    p.write_text('{"library": "localsgd"}\n')
    with pytest.raises(SimError, match="b.jsonl' line 1: missing key 'p'"):
        read_bench(p)
    p.write_text("not json\n")
    with pytest.raises(SimError, match=r"b.jsonl:1: invalid JSON"):
        read_bench(p)
    with pytest.raises(SimError, match="at least 2 usable bench rows"):
        fit_level([r for r in bench_rows() if r["library"] == "mpi"])
    with pytest.raises(SimError, match=r"cannot read .*missing.jsonl: No such file"):
        read_bench(tmp_path / "missing.jsonl")

