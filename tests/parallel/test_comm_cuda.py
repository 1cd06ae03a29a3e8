"""comm with CUDA tensors; skipped on machines without a GPU (the CI machine has none, see README)."""
from __future__ import annotations

import pytest

from tests.parallel.harness import run_checks

torch = pytest.importorskip("torch")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
@pytest.mark.parametrize("p", [1, 2, 3, 4])
def test_cuda_tensors_staged(p):
    run_checks(p, "tests.parallel.checks_cuda", ["check_cuda_tensors"], timeout=300)
