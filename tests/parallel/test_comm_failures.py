"""A rank that raises aborts the whole MPI job within seconds (python -m mpi4py semantics), at several sizes."""
from __future__ import annotations

import time

import pytest

from tests.parallel.harness import mpirun


@pytest.mark.parametrize("p", [2, 5])
def test_failing_rank_aborts_job(p):
    t0 = time.monotonic()
    result = mpirun(p, ["-m", "tests.parallel.runner", "tests.parallel.checks_failures:check_last_rank_raises"],
                    timeout=60, check=False)
    assert result.returncode != 0
    assert "deliberate failure on the last rank" in result.stdout
    assert time.monotonic() - t0 < 30, "the job took too long to abort"
