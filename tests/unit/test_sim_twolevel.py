"""Two-level calibration: known alpha, beta, gamma and per-call overhead per level are recovered from noisy rows."""
from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from sim.costs import terms
from sim.errors import SimError
from sim.topology import load_topology
from sim.twolevel import cmd_calibrate_bench, fit_with_overhead, split_levels, two_level_topology

TRUTH = {"intra": dict(o=40e-6, alpha=8e-6, beta=1 / 8e9, gamma=2e-10),
         "inter": dict(o=40e-6, alpha=60e-6, beta=1 / 1.25e9, gamma=2e-10)}


def synthetic_rows(level: str, noise: float, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    c = TRUTH[level]
    rows = []
    for p in (2, 4, 8) if level == "inter" else (2, 4):
        for n in (1024, 16384, 65536, 262144, 1048576, 4194304):
            for alg in ("recursive_doubling", "rabenseifner", "ring"):
                a, b, g = terms(alg, p, float(n))
                t = c["o"] + a * c["alpha"] + b * c["beta"] + g * c["gamma"]
                rows.append({"library": "localsgd", "p": p, "bytes": n, "algorithm": alg, "correct": True,
                             "t_median_s": t * (1 + noise * rng.standard_normal()), "level": level})
    rows.append({"library": "mpi", "p": 2, "bytes": 1024, "algorithm": "native", "t_median_s": 1.0, "level": level})
    return rows


@pytest.mark.parametrize("level", ["intra", "inter"])
def test_noise_free_rows_give_the_truth_exactly(level):
    fit = fit_with_overhead(synthetic_rows(level, 0.0, 0))
    c = TRUTH[level]
    assert (fit.overhead, fit.alpha, fit.beta, fit.gamma) == pytest.approx((c["o"], c["alpha"], c["beta"], c["gamma"]),
                                                                          rel=1e-6)
    assert fit.r2 == pytest.approx(1.0) and fit.rows == len(synthetic_rows(level, 0.0, 0)) - 1
    assert "1 rows skipped" in fit.notes[0]


@pytest.mark.parametrize("level", ["intra", "inter"])
def test_two_percent_noise_recovers_the_costs(level):
    fit = fit_with_overhead(synthetic_rows(level, 0.02, 1))
    c = TRUTH[level]
    assert fit.alpha == pytest.approx(c["alpha"], rel=0.15)
    assert fit.overhead == pytest.approx(c["o"], rel=0.15)
    assert fit.beta == pytest.approx(c["beta"], rel=0.05)
    assert fit.r2 > 0.99


def test_bench_cli_writes_both_levels_and_the_call_overheads(tmp_path, capsys):
    f = tmp_path / "bench.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for lv in ("intra", "inter") for r in synthetic_rows(lv, 0.0, 0)))
    out = tmp_path / "topo.json"
    ns = argparse.Namespace(bench=[str(f)], intra=[], inter=[], base="paper-8x2-10gbps", name="emu", nodes=4,
                            gpus_per_node=2, out=str(out), json=False)
    assert cmd_calibrate_bench(ns) == 0
    text = capsys.readouterr().out
    assert "intra: overhead 4e-05 s per call" in text and "inter: overhead 4e-05 s per call" in text
    assert text.count("R^2 1.00000") == 2
    topo = load_topology(out)
    assert (topo.nodes, topo.gpus_per_node) == (4, 2)
    assert topo.inter.latency_s == pytest.approx(60e-6, rel=1e-6)
    assert topo.sync_overhead_s == pytest.approx((80e-6, 40e-6), rel=1e-6)
    assert "R^2" in topo.description


def test_untagged_rows_and_too_few_rows_are_errors(tmp_path):
    f = tmp_path / "old.jsonl"
    row = {"library": "localsgd", "p": 2, "bytes": 8, "algorithm": "ring", "t_median_s": 1e-5}
    f.write_text(json.dumps(row) + "\n")
    with pytest.raises(SimError, match=r"row 1: level must be intra or inter, got None; measure with "
                                       r"`python -m comm bench --level both`"):
        split_levels([str(f)])
    with pytest.raises(SimError, match="at least 4 usable bench rows"):
        fit_with_overhead([row, row])
    only_intra = two_level_topology(load_topology("paper-8x2-10gbps"),
                                    {"intra": fit_with_overhead(synthetic_rows("intra", 0.0, 0))}, name="x")
    assert only_intra.inter == load_topology("paper-8x2-10gbps").inter and "inter level and compute" in \
        only_intra.description
