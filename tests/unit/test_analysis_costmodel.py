"""analysis.costmodel against SPEC section 4 evaluated by hand, and the calibration file shapes."""
from __future__ import annotations

import json

import pytest

from analysis.costmodel import Calibration, allreduce_time, bandwidth_bound_s, load_calibration
from analysis.errors import InputError

A, B, G = 1e-5, 1e-9, 2.5e-10
CAL = Calibration(alpha_s=A, beta_s_per_byte=B, gamma_s_per_byte=G)
N = 1 << 20


def test_power_of_two_matches_spec_table():
    # p = 8: lg p = 3.
    assert allreduce_time("recursive_doubling", N, 8, CAL) == pytest.approx(3 * A + 3 * N * B + 3 * N * G)
    assert allreduce_time("rabenseifner", N, 8, CAL) == pytest.approx(6 * A + 2 * N * 7 / 8 * B + N * 7 / 8 * G)
    assert allreduce_time("ring", N, 8, CAL) == pytest.approx(14 * A + 2 * N * 7 / 8 * B + N * 7 / 8 * G)


def test_non_power_of_two_adds_the_fold():
    # p = 6: p' = 4, r = 2; the fold costs 2 alpha + 2 n beta + n gamma (SPEC section 4).
    fold = 2 * A + 2 * N * B + N * G
    assert allreduce_time("rabenseifner", N, 6, CAL) == pytest.approx(
        4 * A + 2 * N * 3 / 4 * B + N * 3 / 4 * G + fold)
    assert allreduce_time("recursive_doubling", N, 6, CAL) == pytest.approx(2 * (A + N * B + N * G) + fold)
    # Ring needs no fold: 2 (p-1) steps for any p.
    assert allreduce_time("ring", N, 5, CAL) == pytest.approx(8 * A + 2 * N * 4 / 5 * B + N * 4 / 5 * G)
    assert allreduce_time("ring", N, 1, CAL) == 0.0


def test_bandwidth_bound_is_below_every_algorithm():
    for p in (2, 3, 4, 7, 16):
        bound = bandwidth_bound_s(N, p, CAL)
        assert bound == pytest.approx(2 * (p - 1) / p * N * B)
        for alg in ("recursive_doubling", "rabenseifner", "ring"):
            assert allreduce_time(alg, N, p, CAL) >= bound


def test_bad_model_inputs():
    with pytest.raises(InputError, match="p must be an integer >= 1, got 0"):
        allreduce_time("ring", N, 0, CAL)
    with pytest.raises(InputError, match="no cost model for algorithm 'native'"):
        allreduce_time("native", N, 4, CAL)
    with pytest.raises(InputError, match="beta_s_per_byte must be a finite number >= 0, got -1e-09"):
        Calibration(alpha_s=1e-6, beta_s_per_byte=-1e-9)
    with pytest.raises(InputError, match="alpha_s must be a finite number >= 0, got -1"):
        Calibration(alpha_s=-1, beta_s_per_byte=1e-9)


@pytest.mark.parametrize("doc", [
    {"alpha_s": 2e-5, "beta_s_per_byte": 2e-10, "gamma_s_per_byte": 1e-10},
    {"levels": {"intra": {"latency_s": 2e-5, "bandwidth_GBps": 5.0, "gamma_s_per_byte": 1e-10}}},
    {"levels": [{"name": "inter", "latency_s": 1.0, "bandwidth_Bps": 1.0},
                {"name": "intra", "latency_s": 1.5e-5, "overhead_s": 5e-6, "bandwidth_Gbps": 40.0,
                 "gamma_s_per_byte": 1e-10}]},
    {"intra": {"alpha_s": 2e-5, "beta_s_per_byte": 2e-10, "gamma_s_per_byte": 1e-10}},
])
def test_calibration_shapes_give_the_same_parameters(tmp_path, doc):
    p = tmp_path / "cal.json"
    p.write_text(json.dumps(doc))
    cal = load_calibration(p, "intra")
    assert cal.alpha_s == pytest.approx(2e-5)
    assert cal.beta_s_per_byte == pytest.approx(2e-10)  # 5 GB/s = 40 Gbit/s
    assert cal.gamma_s_per_byte == pytest.approx(1e-10)
    assert cal.bandwidth_GBps == pytest.approx(5.0)


def test_calibration_missing_level_names_file_and_levels(tmp_path):
    p = tmp_path / "cal.json"
    p.write_text(json.dumps({"levels": {"inter": {"latency_s": 1e-4, "bandwidth_GBps": 1.0}}}))
    with pytest.raises(InputError) as info:
        load_calibration(p, "intra")
    msg = str(info.value)
    assert str(p) in msg and "'intra'" in msg and "levels in file: inter" in msg and "\n" not in msg
    p.write_text(json.dumps({"levels": {"intra": {"bandwidth_GBps": 1.0}}}))
    with pytest.raises(InputError, match="missing key alpha_s"):
        load_calibration(p, "intra")


def test_null_bandwidth_is_unlimited(tmp_path):
    """sim topology files write bandwidth_GBps: null for an unlimited level; calibrate may fit beta = 0."""
    p = tmp_path / "topo.json"
    p.write_text(json.dumps({"intra": {"latency_s": 1e-4, "bandwidth_GBps": None, "overhead_s": 1e-5,
                                       "gamma_s_per_byte": 1e-9}}))
    cal = load_calibration(p, "intra")
    assert cal.alpha_s == pytest.approx(1.1e-4) and cal.beta_s_per_byte == 0.0
    assert cal.bandwidth_GBps == float("inf")
    assert allreduce_time("ring", N, 4, cal) == pytest.approx(6 * 1.1e-4 + N * 3 / 4 * 1e-9)
