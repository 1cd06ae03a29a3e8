"""LIBSVM text reader: validates every line and returns a scipy.sparse CSR matrix with its labels."""
from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from sim.convex.errors import DataFormatError

__all__ = ["LibsvmData", "file_sha256", "load_libsvm", "parse_libsvm"]


@dataclass(frozen=True, kw_only=True)
class LibsvmData:
    """A parsed LIBSVM data set: X (n x d CSR, float64), labels y (float64), and where it came from."""

    X: sp.csr_matrix
    y: np.ndarray
    source: str
    sha256: str | None = None

    def __post_init__(self) -> None:
        if self.X.shape[0] != self.y.shape[0]:
            raise DataFormatError(f"X has {self.X.shape[0]} rows but y has {self.y.shape[0]} labels; they must match")

    @property
    def n_samples(self) -> int:
        return int(self.X.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.X.shape[1])


def _bad(source: str, lineno: int, what: str) -> DataFormatError:
    return DataFormatError(f"{source}:{lineno}: {what}")


def parse_libsvm(lines: Iterable[str] | str, *, n_features: int | None = None,
                 source: str = "<string>", sha256: str | None = None,
                 allowed_labels: tuple[float, ...] | None = None) -> LibsvmData:
    """Parse LIBSVM lines (`label idx:val ...`, 1-based ascending indices); blank lines are skipped.

    n_features=None infers the width from the largest index; a given value must cover every index.
    `allowed_labels`, when given, are the only label values accepted (e.g. (-1, 1) for binary classification).
    """
    if n_features is not None and (isinstance(n_features, bool) or not isinstance(n_features, int)
                                   or n_features < 1):
        raise DataFormatError(f"n_features must be an integer >= 1 or None, got {n_features!r}")
    if isinstance(lines, str):
        lines = lines.splitlines()
    labels: list[float] = []
    indptr: list[int] = [0]
    cols: list[int] = []
    vals: list[float] = []
    for lineno, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line:
            continue
        parts = line.split()
        try:
            label = float(parts[0])
        except ValueError:
            raise _bad(source, lineno, f"label must be a number, got {parts[0]!r}") from None
        if not math.isfinite(label):
            raise _bad(source, lineno, f"label must be finite, got {parts[0]!r}")
        if allowed_labels is not None and label not in allowed_labels:
            raise _bad(source, lineno, f"label must be one of {', '.join(f'{v:+g}' for v in allowed_labels)}, "
                                       f"got {parts[0]!r}")
        last = 0
        for tok in parts[1:]:
            idx_s, sep, val_s = tok.partition(":")
            if not sep:
                raise _bad(source, lineno, f"feature must look like index:value, got {tok!r}")
            try:
                idx = int(idx_s)
            except ValueError:
                raise _bad(source, lineno, f"feature index must be an integer >= 1, got {idx_s!r}") from None
            try:
                val = float(val_s)
            except ValueError:
                raise _bad(source, lineno, f"feature value must be a number, got {val_s!r} in {tok!r}") from None
            if idx < 1:
                raise _bad(source, lineno, f"feature index must be an integer >= 1, got {idx}")
            if idx <= last:
                raise _bad(source, lineno, f"feature indices must be strictly ascending, got {idx} after {last}")
            if not math.isfinite(val):
                raise _bad(source, lineno, f"feature value must be finite, got {val_s!r} in {tok!r}")
            if n_features is not None and idx > n_features:
                raise _bad(source, lineno, f"feature index {idx} exceeds n_features={n_features}")
            last = idx
            cols.append(idx - 1)
            vals.append(val)
        labels.append(label)
        indptr.append(len(cols))
    if not labels:
        raise DataFormatError(f"{source}: no samples found (every line is blank); a LIBSVM file needs >= 1 line")
    width = n_features if n_features is not None else (max(cols) + 1 if cols else 1)
    X = sp.csr_matrix((np.asarray(vals, dtype=np.float64), np.asarray(cols, dtype=np.int64),
                       np.asarray(indptr, dtype=np.int64)), shape=(len(labels), width))
    return LibsvmData(X=X, y=np.asarray(labels, dtype=np.float64), source=source, sha256=sha256)


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_libsvm(path: str | os.PathLike[str], *, n_features: int | None = None,
                allowed_labels: tuple[float, ...] | None = None) -> LibsvmData:
    """Read a LIBSVM file from disk (UTF-8 text); the result carries the file's sha256."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataFormatError(f"data file {path!r} does not exist or is not a regular file; pass a LIBSVM text file")
    with open(path, "rb") as fh:
        blob = fh.read()
    try:
        text = blob.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataFormatError(f"{path}: not UTF-8 text at byte {exc.start}; a LIBSVM file is plain text") from None
    if "\0" in text:
        raise DataFormatError(f"{path}: contains NUL bytes (at byte {text.index(chr(0))}); a LIBSVM file is plain "
                              f"text, this looks like a binary file")
    return parse_libsvm(text.split("\n"), n_features=n_features, source=path,
                        sha256=hashlib.sha256(blob).hexdigest(), allowed_labels=allowed_labels)
