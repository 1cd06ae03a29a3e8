"""Tests of the LIBSVM reader: exact parse of small strings, one-line errors with line numbers, and w8a."""
from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest

from sim.convex.errors import ConvexError, DataFormatError
from sim.convex.libsvm import file_sha256, load_libsvm, parse_libsvm

W8A_SHA = "6a9fa8fd5f524303240a5db07d4b3d4a51e8b7b4b20a914105d8e3e8c81640f2"


def test_parse_exact_matrix_and_labels():
    data = parse_libsvm("+1 1:1 3:2.5 \n-1 2:-1\n\n1 \n")
    expected = np.array([[1.0, 0.0, 2.5], [0.0, -1.0, 0.0], [0.0, 0.0, 0.0]])
    assert data.X.format == "csr"
    np.testing.assert_array_equal(data.X.toarray(), expected)
    np.testing.assert_array_equal(data.y, [1.0, -1.0, 1.0])
    assert data.n_features == 3 and data.n_samples == 3


def test_given_n_features_widens_the_matrix():
    data = parse_libsvm("1 2:1", n_features=5)
    assert data.X.shape == (1, 5)
    assert data.X[0, 1] == 1.0


@pytest.mark.parametrize("text, line, words", [
    ("1 1:1\nx 1:1", 2, "label must be a number"),
    ("1 1:1\n1 1:1\n1 3", 3, "index:value"),
    ("1 a:1", 1, "integer >= 1"),
    ("1 0:1", 1, "integer >= 1"),
    ("1 3:1 2:1", 1, "strictly ascending"),
    ("1 2:1 2:1", 1, "strictly ascending"),
    ("1 1:nan", 1, "finite"),
    ("1 1:abc", 1, "must be a number"),
    ("inf 1:1", 1, "label must be finite"),
    ("1 1:1\n\n1 9:1", 3, "exceeds n_features=4"),
])
def test_malformed_lines_name_their_line(text, line, words):
    with pytest.raises(DataFormatError) as err:
        parse_libsvm(text, n_features=4, source="f.svm")
    msg = str(err.value)
    assert msg.startswith(f"f.svm:{line}: ") and words in msg and "\n" not in msg


def test_empty_input_and_bad_n_features():
    with pytest.raises(DataFormatError, match="no samples"):
        parse_libsvm("\n\n")
    with pytest.raises(ConvexError, match="n_features must be an integer >= 1 or None, got 0"):
        parse_libsvm("1 1:1", n_features=0)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(DataFormatError, match="does not exist"):
        load_libsvm(tmp_path / "nope")


def test_load_carries_sha256(tmp_path):
    p = tmp_path / "d.svm"
    p.write_bytes(b"-1 1:1 2:1\n+1 2:1\n")
    data = load_libsvm(p)
    assert data.sha256 == hashlib.sha256(p.read_bytes()).hexdigest() == file_sha256(p)
    np.testing.assert_array_equal(data.X.toarray(), [[1.0, 1.0], [0.0, 1.0]])


def test_w8a_matches_its_readme(w8a):
    data = load_libsvm(w8a, n_features=300)
    assert data.sha256 == W8A_SHA
    assert data.X.shape == (49749, 300) and data.X.nnz == 579586
    assert int((data.y == 1).sum()) == 1479 and int((data.y == -1).sum()) == 48270
    assert int((np.diff(data.X.indptr) == 0).sum()) == 4203
    assert np.all(data.X.data == 1.0)
