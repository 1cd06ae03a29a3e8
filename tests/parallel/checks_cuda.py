"""CUDA buffers (run only where torch sees a GPU): staged through pinned host memory when MPI is not aware."""
from __future__ import annotations

import numpy as np
from mpi4py import MPI

import comm
from tests.parallel.checks_comm import assert_identical_everywhere

WORLD = MPI.COMM_WORLD


def check_cuda_tensors() -> None:
    import torch

    device = torch.device("cuda", WORLD.rank % torch.cuda.device_count())
    p = WORLD.size
    for alg in ("auto", "recursive_doubling", "rabenseifner", "ring", "native"):
        for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.int32, torch.int64):
            for n in (0, 1, p + 1, 1 << 20):
                t = (torch.arange(n, device=device) % 5 + WORLD.rank).to(dtype)
                torch.cuda.synchronize(device)  # the caller's duty: the stream that wrote t is done
                comm.allreduce(t, algorithm=alg)
                want = ((torch.arange(n, device=device) % 5) * p + p * (p - 1) // 2).to(dtype)
                assert torch.equal(t, want), f"cuda {alg} {dtype} n={n}"
                raw = t.view(torch.int16) if dtype == torch.bfloat16 else t
                assert_identical_everywhere(raw.cpu().numpy(), f"cuda {alg} {dtype} n={n}")
    params = [torch.nn.Parameter(torch.randn(1000, device=device)) for _ in range(3)]
    flat = comm.FlatBuffer(params)
    assert flat.buffer.is_cuda
    comm.allreduce(flat.pack(), op="mean")
    flat.unpack()
    assert_identical_everywhere(np.concatenate([q.detach().cpu().numpy() for q in params]), "cuda flat")
