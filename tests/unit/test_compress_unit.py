"""Sign compression without MPI: packing, majority vote, error feedback, payload sizes, checkpoint state."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from train.compress import SignCompressor, majority_vote, pack_signs, payload_bytes, unpack_signs
from train.config import TrainConfig
from train.errors import TrainError


def ref_sign(x: np.ndarray) -> np.ndarray:
    """The wire's sign, written independently: +1 for x >= 0 (zero included), -1 below."""
    return np.array([1 if v >= 0 else -1 for v in x], dtype=np.int64)


@pytest.mark.parametrize("d", [1, 2, 7, 8, 9, 15, 16, 17, 63, 64, 65, 1000, 1001, 4099])
def test_compress_pack_round_trip_any_d(d: int) -> None:
    rng = np.random.default_rng(d)
    x = rng.standard_normal(d)
    x[rng.integers(0, d, size=max(1, d // 5))] = 0.0  # zeros are +1
    packed = pack_signs(x)
    assert packed.dtype == np.uint8 and packed.size == (d + 7) // 8
    assert np.array_equal(unpack_signs(packed, d), ref_sign(x))


def test_compress_bit_order_is_fixed_little_endian() -> None:
    # coordinate 8j+k is bit k of byte j: [+, -, -, -, -, -, -, +, | +] -> 0b10000001, 0b00000001
    x = np.array([1.0, -1, -1, -1, -1, -1, -1, 2, 0])
    assert pack_signs(x).tolist() == [0x81, 0x01]


def test_compress_unpack_rejects_wrong_length() -> None:
    with pytest.raises(TrainError, match="need 2 bytes, got 3"):
        unpack_signs(np.zeros(3, dtype=np.uint8), 9)


def test_compress_payload_formula() -> None:
    for d in (1, 8, 9, 269_722, 10**7 + 3):
        assert payload_bytes("sign", d) == -(-d // 8)
        assert payload_bytes("ef-sign", d) == -(-d // 8) + 4
    d = 10**7
    assert payload_bytes("ef-sign", d) / (4 * d) == pytest.approx(1 / 32, rel=1e-5)
    with pytest.raises(TrainError, match="got 'topk'"):
        payload_bytes("topk", 10)


@pytest.mark.parametrize("K", [1, 2, 3, 4, 5, 8])
def test_compress_majority_vote_matches_reference(K: int) -> None:
    rng = np.random.default_rng(K)
    signs = rng.choice([-1, 1], size=(K, 333)).astype(np.int8)
    expected = []
    for j in range(333):
        s = sum(int(signs[k, j]) for k in range(K))
        expected.append(0 if s == 0 else (1 if s > 0 else -1))
    assert majority_vote(signs).tolist() == expected
    if K % 2 == 0:
        assert 0 in expected  # ties happen for even K and mean "no move"


def _compressors(scheme: str, K: int, w0: np.ndarray, dtype: torch.dtype = torch.float64) -> list[SignCompressor]:
    cs = [SignCompressor(scheme, w0.size, dtype=dtype, sign_scale=0.5) for _ in range(K)]
    for c in cs:
        c.set_anchor(w0)
    return cs


@pytest.mark.parametrize("K", [1, 3, 4])
def test_compress_sign_sync_is_majority_vote_step(K: int) -> None:
    d, lr = 101, 0.2
    rng = np.random.default_rng(7)
    w0 = rng.standard_normal(d)
    models = [w0 - 0.01 * rng.standard_normal(d) for _ in range(K)]
    cs = _compressors("sign", K, w0)
    gathered = np.concatenate([c.encode("global", w) for c, w in zip(cs, models)])
    new = [c.decode("global", gathered, K, lr) for c in cs]
    votes = np.sign(sum(ref_sign(w0 - w) for w in models))
    expected = w0 - 0.5 * lr * votes
    for w in new:
        assert np.array_equal(w, new[0])  # every rank decodes the same bytes to the same bits
        np.testing.assert_allclose(w, expected, rtol=0, atol=1e-15)
    assert np.array_equal(cs[0].anchor["global"], new[0]) and np.array_equal(cs[0].anchor["block"], new[0])


def _decode_payload(payload: np.ndarray, d: int) -> np.ndarray:
    """c of one rank from its bytes, independently of train.compress: float32 scale, then little-endian bits."""
    scale = float(np.frombuffer(payload[:4].tobytes(), dtype="<f4")[0])
    bits = [(int(payload[4 + j // 8]) >> (j % 8)) & 1 for j in range(d)]
    return scale * (2 * np.array(bits, dtype=np.float64) - 1)


def test_compress_ef_identity_and_average() -> None:
    K, d = 3, 77
    rng = np.random.default_rng(3)
    w0 = rng.standard_normal(d)
    cs = _compressors("ef-sign", K, w0)
    anchor = w0.copy()
    for _ in range(4):  # the memory carries over between syncs
        models = [anchor - 0.05 * rng.standard_normal(d) for _ in range(K)]
        e_before = [c.memory["global"].copy() for c in cs]
        payloads = [c.encode("global", w) for c, w in zip(cs, models)]
        cs_list = []
        for k in range(K):
            p = (anchor - models[k]) + e_before[k]
            c = _decode_payload(payloads[k], d)
            assert np.float32(np.abs(p).sum() / d) == np.float32(c[0] if c[0] > 0 else -c[0])  # ||p||_1 / d
            np.testing.assert_allclose(c + cs[k].memory["global"], p, rtol=0, atol=1e-15)  # p = c + e
            assert np.array_equal(np.sign(c), ref_sign(p))
            cs_list.append(c)
        gathered = np.concatenate(payloads)
        new = [c.decode("global", gathered, K, lr=123.0) for c in cs]  # lr plays no part in ef-sign
        np.testing.assert_allclose(new[0], anchor - sum(cs_list) / K, rtol=0, atol=1e-14)
        assert all(np.array_equal(w, new[0]) for w in new)
        anchor = new[0]


def test_compress_block_anchor_follows_every_sync_global_only_global() -> None:
    d = 20
    w0 = np.zeros(d)
    (c,) = _compressors("sign", 1, w0)
    w1 = c.decode("block", c.encode("block", w0 - 1.0), 1, lr=1.0)
    assert np.array_equal(c.anchor["block"], w1) and np.array_equal(c.anchor["global"], w0)
    assert np.array_equal(w1, w0 - 0.5)  # delta = +1 everywhere: one step of sign_scale * lr = 0.5 down
    # the global sync measures the change from the global anchor w0 (delta = 1.5 > 0), not from w1
    w2 = c.decode("global", c.encode("global", w1 - 1.0), 1, lr=1.0)
    assert np.array_equal(w2, w0 - 0.5) and np.array_equal(c.anchor["global"], w2)


def test_compress_state_dict_round_trip_keeps_memory() -> None:
    d = 50
    rng = np.random.default_rng(1)
    (a,) = _compressors("ef-sign", 1, np.zeros(d), dtype=torch.float32)
    a.encode("global", rng.standard_normal(d))
    b = SignCompressor("ef-sign", d, dtype=torch.float32)
    b.load_state_dict(a.state_dict())
    assert np.array_equal(b.memory["global"], a.memory["global"]) and b.memory["global"].dtype == np.float32
    assert np.array_equal(b.anchor["global"], a.anchor["global"])
    w = rng.standard_normal(d)
    assert np.array_equal(a.encode("global", w), b.encode("global", w))
    with pytest.raises(TrainError, match="holds 'ef-sign' compression state, this run uses 'sign'"):
        SignCompressor("sign", d, dtype=torch.float32).load_state_dict(a.state_dict())


def test_compress_encode_before_anchor_is_an_error() -> None:
    with pytest.raises(TrainError, match="before its anchor was set"):
        SignCompressor("sign", 4, dtype=torch.float32).encode("global", np.zeros(4))


def test_compress_config_errors_are_one_line() -> None:
    with pytest.raises(TrainError, match=r"compress must be one of none, sign, ef-sign, got 'bits'"):
        TrainConfig(compress="bits")
    with pytest.raises(TrainError, match=r"compress 'sign' needs momentum_variant local, got 'hybrid'"):
        TrainConfig(compress="sign", momentum_variant="hybrid", algorithm="local")
    with pytest.raises(TrainError, match=r"sign_scale must be a finite number > 0.0, got 0"):
        TrainConfig(sign_scale=0)


@pytest.mark.parametrize("scheme", ["sign", "ef-sign"])
def test_compress_trainer_payload_is_what_the_simulator_charges(scheme: str) -> None:
    from sim.compute import ModelSpec
    from sim.run import RunConfig
    from sim.schedule import SyncSchedule
    from sim.topology import load_topology
    topo = load_topology("paper-8x2-10gbps")
    for d in (1, 9, 272_474, 36_480_000):
        cfg = RunConfig(topology=topo, model=ModelSpec(name="m", params=d, gflops_per_sample=1.0, train_samples=99),
                        K=4, B=8, N=320, schedule=SyncSchedule(algorithm="local", H=4), compression=scheme)
        assert cfg.wire_bytes == payload_bytes(scheme, d)
        if d < 10**6:  # (the compressor allocates its EF memory)
            assert SignCompressor(scheme, d, dtype=torch.float32).nbytes == cfg.wire_bytes
        assert cfg.algorithms() == ("allgather", "allgather")  # both levels gather, as the trainer does
