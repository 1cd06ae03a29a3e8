"""K workers in one process (engine virtual): stacked parameters, stepped by K module replicas or one vmapped call."""
from __future__ import annotations

import copy
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import torch
from torch.func import functional_call, grad_and_value, vmap
from torch.nn import functional as F

from train.errors import TrainError
from train.evaluate import Evaluator, batch_metrics
from train.flat import FlatTensors
from train.models import build_model, no_decay_names
from train.sync import SyncTimer, device_sync
from train.virtual_backend import VirtualBackend
from train.workers import StepResult, make_averager, make_optimizer, objective_args, worker_seed

if TYPE_CHECKING:
    from train.config import TrainConfig
    from train.plan import RunPlan

__all__ = ["VirtualWorkers", "resolve_kernel", "cores"]


def cores() -> int:
    """The CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def resolve_kernel(choice: str, device: torch.device) -> str:
    """auto: vmap on a GPU (one batched kernel per layer for all K workers), loop on the CPU, where K replicas
    measured faster than vmap's grouped convolutions (docs/README-virtual.md)."""
    return ("vmap" if device.type == "cuda" else "loop") if choice == "auto" else choice


def _stack(t: torch.Tensor, K: int) -> torch.Tensor:
    """K copies of `t` along a new leading dim, contiguous (row k, worker k's copy, is contiguous too)."""
    return t.detach().unsqueeze(0).repeat(K, *([1] * t.dim())).contiguous()


class VirtualWorkers:
    """Worker k of K is row k of every stacked parameter and buffer [K, ...]. It reads the batches rank k of an MPI
    run reads (its stream, its generator seeded as rank k's), starts from the same model, takes the same SGD steps
    and keeps its own BatchNorm statistics. The optimiser is torch's SGD over the stacked tensors (element-wise,
    so each row takes its worker's step); syncs go through LocalSGD with a VirtualBackend
    (train/virtual_backend.py), whose means over the rows replace the all-reduce.

    The forward and backward of the K workers run by one of two kernels (`virtual_step`):
    - loop: K replicas of the model whose parameters, gradients and buffers are views of row k (so the stacked
      tensors see every update), stepped one after another, by `threads` Python threads (torch releases the GIL
      in its kernels); each replica computes exactly what rank k computes (dropout too: each worker keeps its own
      random state, as each rank does);
    - vmap: ``vmap(grad_and_value(functional_call(model, ...)))`` over the stacked tensors, one batched call per
      layer (BatchNorm statistics, passed as stacked buffers, are updated in place per worker); dropout masks come
      from one random stream.
    `model` is the architecture's module the averaged model is evaluated with (BatchNorm statistics per --bn-eval).
    """

    def __init__(self, cfg: TrainConfig, *, plan: RunPlan, data: Any, streams: list[Any],
                 device: torch.device) -> None:
        from mpi4py import MPI  # only for the Evaluator's collectives over this one process

        self.cfg, self.data, self.streams, self.device = cfg, data, streams, device
        self.K = K = len(streams)
        self.kernel = resolve_kernel(cfg.virtual_step, device)
        n_cores = cfg.threads or cores()
        # loop: worker threads, one core each (a shared random stream for dropout would tie them: one thread then);
        # vmap: torch's own threads inside each batched kernel
        self.threads = 1 if self.kernel == "vmap" or cfg.dropout > 0 else min(n_cores, K)
        torch.set_num_threads(n_cores if self.kernel == "vmap" else 1)
        torch.manual_seed(cfg.seed)  # the initial model of every rank in an MPI run
        self.model = build_model(cfg.model, input_shape=data.input_shape, num_classes=data.num_classes,
                                 width=cfg.width, dropout=cfg.dropout).to(device, getattr(torch, cfg.dtype))
        self.gens = [torch.Generator().manual_seed(worker_seed(cfg.seed, k)) for k in range(K)]  # augmentation
        self.rng: list[torch.Tensor] = []  # loop: each worker's state of torch's random stream (dropout)
        for k in range(K):
            torch.manual_seed(worker_seed(cfg.seed, k))
            self.rng.append(torch.get_rng_state())
        self.no_decay = no_decay_names(self.model)
        self.params = {n: _stack(p, K) for n, p in self.model.named_parameters()}
        self.buffers = {n: _stack(b, K) for n, b in self.model.named_buffers()}
        for p in self.params.values():
            p.grad = torch.zeros_like(p)
        self.opt = make_optimizer(cfg, list(self.params.items()), self.no_decay, plan.lr.lr_at(0))
        block = cfg.gpus_per_node if cfg.algorithm == "hierarchical" else None
        backend = VirtualBackend([p.shape for p in self.params.values()], workers=K, block=block)
        self.sync = SyncTimer(backend, timed=False)
        self.averager = make_averager(cfg, plan, list(self.params.values()), backend, self.opt, self.sync,
                                      buckets=False)
        self.evaluator = Evaluator(self.model, FlatTensors(list(self.model.parameters())), world=MPI.COMM_SELF,
                                   bn_eval=cfg.bn_eval, x_test=data.x_test, y_test=data.y_test, device=device,
                                   objective=objective_args(cfg, data, list(self.model.named_parameters()),
                                                            self.no_decay))
        self.replicas = [self._replica(k) for k in range(K)] if self.kernel == "loop" else []
        self.pool = ThreadPoolExecutor(self.threads, thread_name_prefix="worker") if self.threads > 1 else None
        self._grad = vmap(grad_and_value(self._loss, has_aux=True), randomness="different")

    def _replica(self, k: int) -> torch.nn.Module:
        """A copy of the model whose parameters (with their gradients) and buffers are views of row k."""
        rep = copy.deepcopy(self.model)
        for table, attr in ((self.params, "_parameters"), (self.buffers, "_buffers")):
            for name, stacked in table.items():
                owner, _, leaf = name.rpartition(".")
                mod = rep.get_submodule(owner) if owner else rep
                if attr == "_parameters":
                    p = torch.nn.Parameter(stacked[k])
                    p.grad = stacked.grad[k] if stacked.grad is not None else None
                    mod._parameters[leaf] = p
                else:
                    mod._buffers[leaf] = stacked[k]
        return rep.train()

    def _loss(self, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor], x: torch.Tensor,
              y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """vmap: one worker's mean loss on its batch (as train.evaluate.batch_metrics computes it), its logits."""
        out = functional_call(self.model, (params, buffers), (x,))
        if out.shape[-1] == 1:
            loss = F.binary_cross_entropy_with_logits(out.reshape(-1), y.reshape(-1).to(out.dtype))
        else:
            loss = F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))
        return loss, out.detach()

    def _one(self, k: int, x: torch.Tensor, y: torch.Tensor) -> tuple[float, int, int]:
        """loop: worker k's forward and backward (its gradients accumulate into row k of the stacked ones)."""
        if self.cfg.dropout > 0:  # one thread: worker k's own random stream, as rank k's
            torch.set_rng_state(self.rng[k])
        loss, correct, n = batch_metrics(self.replicas[k](x), y)
        loss.backward()
        if self.cfg.dropout > 0:
            self.rng[k] = torch.get_rng_state()
        return float(loss.detach()), correct, n

    def _forward_backward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[list[float], list[int], int]:
        """Every worker's loss and correct predictions; the gradients land in the stacked `.grad`s."""
        if self.kernel == "loop":
            for p in self.params.values():
                assert p.grad is not None
                p.grad.zero_()
            jobs = [(k, x[k], y[k]) for k in range(self.K)]
            out = list(self.pool.map(lambda a: self._one(*a), jobs)) if self.pool else [self._one(*a) for a in jobs]
            return [o[0] for o in out], [o[1] for o in out], out[0][2]
        self.model.train()
        grads, (loss, logits) = self._grad(self.params, self.buffers, x, y)
        for name, p in self.params.items():
            assert p.grad is not None
            p.grad.copy_(grads[name])
        if logits.shape[-1] == 1:
            hits = ((logits.reshape(self.K, -1) > 0).long() == y.reshape(self.K, -1)).sum(1)
        else:
            hits = (logits.argmax(-1) == y).reshape(self.K, -1).sum(1)
        return loss.detach().double().cpu().tolist(), hits.cpu().tolist(), int(y[0].numel())

    def step(self, t: int, lr: float) -> StepResult:
        """Every worker's forward and backward, the mini-batch gradient average, clipping, the SGD step."""
        for g in self.opt.param_groups:
            g["lr"] = lr
        t0 = time.perf_counter()
        batches = [s.batch_at(t, g) for s, g in zip(self.streams, self.gens)]
        x = torch.stack([b[0] for b in batches]).to(self.device, non_blocking=True)
        y = torch.stack([b[1] for b in batches]).to(self.device, non_blocking=True)
        losses, correct, n = self._forward_backward(x, y)
        device_sync(self.device)
        dt = time.perf_counter() - t0
        self.averager.average_gradients()  # mini-batch steps only: the mean over the K rows
        t1 = time.perf_counter()
        if self.cfg.clip_grad_norm is not None:
            self._clip(self.cfg.clip_grad_norm)
        self.opt.step()
        device_sync(self.device)
        return StepResult(loss=losses[0], acc=correct[0] / n, loss_sum=sum(v * n for v in losses),
                          correct=sum(correct), n=n * self.K, compute_s=dt + time.perf_counter() - t1,
                          straggle_s=0.0)

    def _clip(self, max_norm: float) -> None:
        """torch.nn.utils.clip_grad_norm_ per worker: each row's gradients scaled to L2 norm <= max_norm."""
        grads = [p.grad for p in self.params.values() if p.grad is not None]
        norms = torch.stack([torch.linalg.vector_norm(g.reshape(self.K, -1), 2, dim=1) for g in grads])
        coef = (max_norm / (torch.linalg.vector_norm(norms, 2, dim=0) + 1e-6)).clamp(max=1.0)
        for g in grads:
            g.mul_(coef.view(self.K, *([1] * (g.dim() - 1))))

    # -- the evaluation model ---------------------------------------------------------------------------
    @torch.no_grad()
    def _load_model(self, *, average: bool, bn: str) -> None:
        """Put the mean (or worker 0's) parameters and the BatchNorm statistics of `bn` into `model`."""
        for n, p in self.model.named_parameters():
            p.copy_(self.params[n].mean(0) if average else self.params[n][0])
        for n, b in self.model.named_buffers():
            stacked = self.buffers[n]
            b.copy_(stacked.mean(0) if bn == "average" and b.is_floating_point() else stacked[0])

    def evaluate(self) -> tuple[float, float, float | None]:
        """(test loss, test accuracy, objective or None) of the averaged model, BatchNorm statistics per --bn-eval."""
        self._load_model(average=True, bn=self.cfg.bn_eval)
        return self.evaluator.evaluate_all()

    def synced_model(self) -> torch.nn.Module:
        """`model` holding worker 0's parameters and statistics (after a global sync: every worker's)."""
        self._load_model(average=False, bn="rank0")
        return self.model

    # -- checkpoints -------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        dev = self.device
        worker0 = {**{n: p[0].clone() for n, p in self.params.items()},
                   **{n: b[0].clone() for n, b in self.buffers.items()}}
        return {"model": worker0,  # worker 0's, for tools that read one model
                "virtual": {"workers": self.K, "params": self.params, "buffers": self.buffers,
                            "worker_rng": list(self.rng)},
                "opt": self.opt.state_dict(), "torch_rng": torch.get_rng_state(),
                "gen": [g.get_state() for g in self.gens],
                "cuda_rng": torch.cuda.get_rng_state(dev) if dev.type == "cuda" else None, "lm_state": None}

    @torch.no_grad()
    def load_state_dict(self, st: dict[str, Any]) -> None:
        v = st.get("virtual")
        if not isinstance(v, dict) or v.get("workers") != self.K:
            had = f"{v.get('workers')} virtual workers" if isinstance(v, dict) else "engine mpi"
            raise TrainError(f"checkpoint holds no state of {self.K} virtual workers (it was written by {had}); "
                             f"resume it as it was run")
        for src, dst in ((v["params"], self.params), (v["buffers"], self.buffers)):
            for n, t in dst.items():
                t.copy_(src[n])  # in place: the optimiser, the averager and the replicas hold these tensors
        self.rng = list(v.get("worker_rng") or self.rng)
        self.opt.load_state_dict(st["opt"])
        torch.set_rng_state(st["torch_rng"])
        for g, s in zip(self.gens, st["gen"]):
            g.set_state(s)
        if st["cuda_rng"] is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(st["cuda_rng"], self.device)
