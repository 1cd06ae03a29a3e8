"""WikiText-2 token files cut into fixed-length (bptt) sequences for the LSTM language model."""
from __future__ import annotations

from pathlib import Path

import torch

from train.data.dataset import Dataset
from train.errors import TrainError

__all__ = ["FILES", "load_wikitext2"]

FILES = ("wiki.train.tokens", "wiki.valid.tokens", "wiki.test.tokens")


def _words(path: Path) -> list[str]:
    words: list[str] = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            words.extend(line.split() + ["<eos>"])
    return words


def _sequences(ids: list[int], bptt: int) -> tuple[torch.Tensor, torch.Tensor]:
    n = (len(ids) - 1) // bptt
    t = torch.tensor(ids[: n * bptt + 1], dtype=torch.long)
    return t[:-1].view(n, bptt).contiguous(), t[1:].view(n, bptt).contiguous()


def load_wikitext2(data_dir: str, *, bptt: int) -> Dataset:
    """Vocabulary from the training file; words unseen there map to <unk>; sequences of `bptt` next-token pairs."""
    folder = Path(data_dir)
    sub = folder / "wikitext-2"
    if sub.is_dir():
        folder = sub
    missing = [f for f in FILES if not (folder / f).is_file()]
    if missing:
        raise TrainError(f"wikitext2 files missing in {folder}: {', '.join(missing)}")
    train = _words(folder / FILES[0])
    vocab = {w: i for i, w in enumerate(dict.fromkeys(["<unk>", "<eos>"] + train))}
    unk = vocab["<unk>"]
    x_tr, y_tr = _sequences([vocab[w] for w in train], bptt)
    x_te, y_te = _sequences([vocab.get(w, unk) for w in _words(folder / FILES[2])], bptt)
    return Dataset(name="wikitext2", x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te, num_classes=len(vocab))
