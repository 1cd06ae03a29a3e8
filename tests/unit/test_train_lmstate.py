"""Truncated BPTT for the LSTM: the carried state equals one long forward, the stream reads contiguous text,
and the carried evaluation counts every test token once with its context."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from tests.fixtures.fake_wikitext import write_fake_wikitext
from train.config import TrainConfig
from train.data.wikitext import load_wikitext2
from train.errors import TrainError
from train.lmstate import CarriedState, ContiguousStream
from train.models.small import LSTMLanguageModel


def _model(vocab: int = 20) -> LSTMLanguageModel:
    torch.manual_seed(0)
    return LSTMLanguageModel(vocab, hidden=16, layers=3, dropout=0.0).double().eval()


def test_carried_state_equals_one_long_forward() -> None:
    model = _model()
    x = torch.randint(0, 20, (3, 12))
    whole = model(x)
    carry = CarriedState()
    parts = [carry.logits(model, x[:, i:i + 4], restart=i == 0) for i in range(0, 12, 4)]
    assert torch.allclose(torch.cat(parts, 1), whole, atol=1e-12)
    # a restart really starts from zero: the last piece alone differs from its carried version
    assert not torch.allclose(model(x[:, 8:]), parts[-1], atol=1e-6)


def test_carried_state_stops_gradients_at_the_step() -> None:
    model = _model()
    carry = CarriedState()
    carry.logits(model, torch.randint(0, 20, (2, 5)), restart=True)
    assert all(not h.requires_grad for h in carry.hidden)
    restored = CarriedState()
    restored.load_state_dict(carry.state_dict(), torch.device("cpu"))
    assert all(torch.equal(a, b) for a, b in zip(carry.hidden, restored.hidden))


def test_contiguous_stream_reads_each_shard_as_columns_of_running_text(tmp_path: Path) -> None:
    data = load_wikitext2(str(write_fake_wikitext(tmp_path / "wt", n_train=2000)), bptt=5)
    n_rows, size, batch = len(data.x_train), 3, 4
    streams = [ContiguousStream(data, rank=r, size=size, batch=batch) for r in range(size)]
    m = (n_rows // size) // batch
    seen = []
    for _r, s in enumerate(streams):
        for t in range(m):
            idx = s.batch_indices(t)
            assert s.restarts(t) == (t == 0)
            seen += idx.tolist()
            if t + 1 < m:  # each batch row continues the previous step's row in the text
                x_next, _ = s.batch_at(t + 1, torch.Generator())
                _, y_now = s.batch_at(t, torch.Generator())
                assert torch.equal(x_next[:, 0], y_now[:, -1])
        assert torch.equal(s.batch_indices(m), s.batch_indices(0)) and s.restarts(m)  # the next epoch
    assert len(seen) == len(set(seen)) == size * batch * m  # disjoint shards, every row at most once an epoch
    assert all(r * (n_rows // size) <= i < (r + 1) * (n_rows // size)
               for r, s in enumerate(streams) for i in s.columns.tolist())


def test_contiguous_stream_needs_a_row_per_column(tmp_path: Path) -> None:
    data = load_wikitext2(str(write_fake_wikitext(tmp_path / "wt", n_train=300)), bptt=10)
    with pytest.raises(TrainError, match="lm_state carry needs at least batch_size 64 sequences per worker"):
        ContiguousStream(data, rank=0, size=2, batch=64)


def test_carried_evaluation_matches_one_forward_per_column(tmp_path: Path) -> None:
    """Evaluator's carried loop (one rank of three) against each column run as one long sequence."""
    from train.evaluate import Evaluator

    class World:
        def Get_rank(self) -> int:
            return 1

        def Get_size(self) -> int:
            return 3

    data = load_wikitext2(str(write_fake_wikitext(tmp_path / "wt", n_test=1000)), bptt=6)
    model = _model(data.num_classes)
    ev = Evaluator(model, None, world=World(), bn_eval="average", x_test=data.x_test.clone(),
                   y_test=data.y_test.clone(), device=torch.device("cpu"), contiguous=True, columns=4)
    with torch.no_grad():
        got = sum(float(F.cross_entropy(lg.reshape(-1, lg.shape[-1]), y.reshape(-1), reduction="sum"))
                  for _, y, lg in ev._carried())
        n = len(data.x_test)
        lo, hi = n // 3 + (1 if n % 3 > 0 else 0), 2 * (n // 3) + (1 if n % 3 > 0 else 0) + (1 if n % 3 > 1 else 0)
        block_x, block_y = data.x_test[lo:hi], data.y_test[lo:hi]
        assert torch.equal(ev.x, block_x)
        want = 0.0
        for c in range(4):
            a, b = int(ev.starts[c]), int(ev.starts[c + 1])
            lg = model(block_x[a:b].reshape(1, -1))
            want += float(F.cross_entropy(lg.reshape(-1, lg.shape[-1]), block_y[a:b].reshape(-1), reduction="sum"))
    assert got == pytest.approx(want, rel=1e-12)


def test_lm_state_config() -> None:
    assert TrainConfig(model="lstm", dataset="wikitext2", data_dir="x").carries_state
    assert not TrainConfig(model="lstm").carries_state  # synthetic sequences are independent: reset
    assert TrainConfig(model="lstm", lm_state="carry").carries_state
    assert not TrainConfig(model="lstm", dataset="wikitext2", data_dir="x", lm_state="reset").carries_state
    with pytest.raises(TrainError, match="lm_state must be one of auto, carry, reset, got 'keep'"):
        TrainConfig(model="lstm", lm_state="keep")
    with pytest.raises(TrainError, match="lm_state 'carry' applies to the lstm model only"):
        TrainConfig(lm_state="carry")
    with pytest.raises(TrainError, match="sampler 'iid' draws independent samples"):
        TrainConfig(model="lstm", lm_state="carry", sampler="iid")
