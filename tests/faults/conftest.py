"""The fault suite's one uninterrupted reference run (every other run is compared with it)."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.helpers import TINY, train


@pytest.fixture(scope="session")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 2-rank run of TINY (3 epochs, a checkpoint at each epoch boundary, the last two kept)."""
    run = tmp_path_factory.mktemp("faults") / "reference"
    proc = train([*TINY, "--out-dir", str(run)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return run
