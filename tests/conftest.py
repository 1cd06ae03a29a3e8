"""Shared pytest settings: every test has a timeout so that nothing can hang the suite."""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MPIR_CVAR_ENABLE_HEAVY_YIELD", "1")


import pytest

from tests.fixtures.shared_data import data_root, need_data


@pytest.fixture
def shared_data() -> object:
    """The shared data folder (tests/fixtures/shared_data.py); call need_data(name) for a file in it."""
    return data_root()


@pytest.fixture
def w8a():
    """Path of the w8a LIBSVM file: skipped when missing, a failure under CI=true."""
    return need_data("w8a")
