"""Data for the trainer: synthetic (default), CIFAR-10/100, w8a, WikiText-2, all held in memory as tensors."""
from __future__ import annotations

from typing import TYPE_CHECKING

from train.data.cifar import download_cifar, load_cifar
from train.data.dataset import Dataset
from train.data.libsvm import load_w8a, read_libsvm
from train.data.stream import WorkerStream, augment_batch
from train.data.synthetic import synthetic_images, synthetic_tokens
from train.data.wikitext import load_wikitext2
from train.models import is_sequence_model

if TYPE_CHECKING:
    from train.config import TrainConfig

__all__ = ["Dataset", "WorkerStream", "augment_batch", "download_cifar", "load_dataset", "read_libsvm"]


def load_dataset(cfg: TrainConfig) -> Dataset:
    """The dataset `cfg` names, loaded whole into memory (the same on every rank)."""
    if cfg.dataset == "synthetic":
        if is_sequence_model(cfg.model):
            return synthetic_tokens(n_train=cfg.synthetic_train, n_test=cfg.synthetic_test,
                                    vocab=max(cfg.synthetic_classes, 2), bptt=cfg.bptt)
        return synthetic_images(n_train=cfg.synthetic_train, n_test=cfg.synthetic_test,
                                classes=cfg.synthetic_classes, size=cfg.synthetic_size, noise=cfg.synthetic_noise)
    assert cfg.data_dir is not None or cfg.dataset == "w8a"
    if cfg.dataset in ("cifar10", "cifar100"):
        return load_cifar(cfg.dataset, cfg.data_dir or "")
    if cfg.dataset == "w8a":
        return load_w8a(cfg.data_dir or ".", test_fraction=cfg.test_fraction)
    return load_wikitext2(cfg.data_dir or "", bptt=cfg.bptt)
