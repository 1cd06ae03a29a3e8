"""The memory a run needs, estimated before anything is allocated, against what this machine has left for it."""
from __future__ import annotations

import functools
import os
import resource
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from train.errors import TrainError
from train.models import is_sequence_model

if TYPE_CHECKING:
    from train.config import TrainConfig

__all__ = ["MemoryEstimate", "estimate_memory", "available_memory", "check_memory", "fmt_bytes", "resident_bytes",
           "ACTIVATION_FACTOR", "EVAL_CHUNK", "INTERPRETER_MARGIN"]

#: Bytes of a training step's activations per byte of all layer outputs of one forward pass (autograd keeps most
#: of them for the backward, which adds gradients of the same sizes), for one model ("one") and for engine
#: virtual's vmapped step of K workers ("vmap"). A safety factor, not a fit: the peak RSS of one forward +
#: backward measured 1.4 (ResNet-20, batch 256), 1.8 (ResNet-8, 512) and 2.1 (DenseNet-40, 64) times the sum of
#: the layer outputs; the vmapped step of K = 16 workers 2.0 (ResNet-20) and 4.4 (ResNet-8, whose BatchNorm under
#: vmap keeps extra temporaries).
ACTIVATION_FACTOR = {"one": 3.0, "vmap": 5.0}
#: Test samples per evaluation chunk (train/evaluate.py's default).
EVAL_CHUNK = 500


def fmt_bytes(n: float) -> str:
    """1536 -> '1.5 KiB'."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes one process needs (`parts`, "interpreter" included), and how many such processes run here."""

    parts: dict[str, int]          # component -> bytes in one process
    processes: int                 # processes of this run on this machine (the launcher's local ranks; 1: virtual)
    hints: dict[str, str] = field(default_factory=dict)  # component -> the flags that drive it

    @property
    def allocations(self) -> int:
        """Bytes one process allocates beyond the interpreter with torch imported."""
        return self.per_process - self.parts.get("interpreter", 0)

    @property
    def per_process(self) -> int:
        return sum(self.parts.values())

    @property
    def total(self) -> int:
        return self.per_process * self.processes

    def describe(self) -> str:
        top = sorted(self.parts.items(), key=lambda kv: -kv[1])[:3]
        shown = ", ".join(f"{k} {fmt_bytes(v)}" for k, v in top)
        who = f"{self.processes} ranks x {fmt_bytes(self.per_process)}" if self.processes > 1 else "one process"
        return f"{fmt_bytes(self.total)} ({who}: {shown})"


@functools.lru_cache(maxsize=8)
def _model_profile(name: str, width: int, dropout: float, input_shape: tuple[int, ...],
                   classes: int) -> tuple[int, int, int]:
    """(parameters, numbers of all layer outputs of one sample's forward, largest layer input + output), from the
    model built on the meta device: shapes only, nothing allocated."""
    import torch

    from train.models import build_model

    with torch.device("meta"):
        model = build_model(name, input_shape=input_shape, num_classes=classes, width=width, dropout=dropout)
    sums = [0, 0]

    def hook(_mod: Any, inputs: Any, out: Any) -> None:
        outs = out if isinstance(out, tuple) else (out,)
        n_out = sum(int(o.numel()) for o in outs if isinstance(o, torch.Tensor))
        n_in = sum(int(i.numel()) for i in inputs if isinstance(i, torch.Tensor))
        sums[0] += n_out
        sums[1] = max(sums[1], n_in + n_out)

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    dtype = torch.long if is_sequence_model(name) else torch.float32
    with torch.no_grad():
        model.train()
        model(torch.empty(1, *input_shape, dtype=dtype, device="meta"))
    for h in handles:
        h.remove()
    return sum(int(p.numel()) for p in model.parameters()), sums[0], sums[1]


def _data_profile(cfg: TrainConfig) -> tuple[int, int, tuple[int, ...], int, int]:
    """(training samples, test samples, input shape, classes, bytes while loading) of the dataset, without
    loading it: from the configuration, the fixed CIFAR sizes, or the sizes of the files."""
    el = 8 if cfg.dtype == "float64" else 4
    if cfg.dataset == "synthetic" and is_sequence_model(cfg.model):
        n, m, shape = cfg.synthetic_train, cfg.synthetic_test, (cfg.bptt,)
        return n, m, shape, max(cfg.synthetic_classes, 2), 2 * (n + m) * (cfg.bptt + 1) * 8
    if cfg.dataset == "synthetic":
        n, m, s = cfg.synthetic_train, cfg.synthetic_test, cfg.synthetic_size
        per = 3 * s * s
        # drawn in float32 (template, noise, sum), then cast to the run's dtype
        return n, m, (3, s, s), cfg.synthetic_classes, (n + m) * (per * (3 * 4 + el) + 16)
    if cfg.dataset in ("cifar10", "cifar100"):
        n, m, per = 50_000, 10_000, 3 * 32 * 32
        # uint8 batches, then float32 normalised with a temporary or two, then the run's dtype
        return n, m, (3, 32, 32), 10 if cfg.dataset == "cifar10" else 100, (n + m) * (per * (1 + 3 * 4 + el) + 8)
    if cfg.dataset == "w8a":
        p = Path(cfg.data_dir or ".")
        path = p / "w8a" if p.is_dir() else p
        try:
            with open(path, "rb") as fh:
                rows = sum(1 for _ in fh)
        except OSError:
            rows = 0  # the loader reports the missing file
        n_test = round(cfg.test_fraction * rows)
        # the parsed sparse rows, a dense float32 copy, the split copies, the run's dtype
        return rows - n_test, max(n_test, 1), (300,), 2, rows * (300 * (3 * 4 + el) + 64)
    folder = Path(cfg.data_dir or ".")  # wikitext2: a token is a word of about 5.5 bytes
    if (folder / "wikitext-2").is_dir():
        folder = folder / "wikitext-2"
    sizes = [(folder / f).stat().st_size if (folder / f).is_file() else 0
             for f in ("wiki.train.tokens", "wiki.test.tokens")]
    tokens = [s // 5 for s in sizes]
    vocab = 1
    if sizes[0]:
        with open(folder / "wiki.train.tokens", encoding="utf-8", errors="replace") as fh:
            vocab = len({w for line in fh for w in line.split()}) + 2
    # the words as Python strings and lists while reading (about 100 bytes a token), then int64 x and y
    return (max(tokens[0] // cfg.bptt, 1), max(tokens[1] // cfg.bptt, 1), (cfg.bptt,), vocab,
            sum(tokens) * 100)


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _virtual_kernel(cfg: TrainConfig) -> str:
    """The kernel engine virtual will use (train/virtual.py: vmap on a GPU under auto)."""
    if cfg.virtual_step != "auto":
        return cfg.virtual_step
    import torch
    return "vmap" if cfg.device != "cpu" and torch.cuda.is_available() else "loop"


#: The interpreter of a run grows beyond what it holds when the guard runs (torch imported): MPI, the trainer's
#: modules, thread stacks, the allocator's slack. Measured: 220 MiB after importing the CLI, 290 MiB with the
#: modules the estimate itself loads, 300 MiB after MPI_Init; a rank's peak less the estimate's other parts was
#: 300-330 MiB. The guard counts the resident size it sees times this margin.
INTERPRETER_MARGIN = 1.25


def resident_bytes() -> int:
    """This process's resident memory now (/proc/self/statm; 0 where it cannot be read)."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def estimate_memory(cfg: TrainConfig, *, workers: int, processes: int, interpreter: int = 0) -> MemoryEstimate:
    """What one process of the run `cfg` needs (`workers` of its workers in this process: 1 under engine mpi, K
    under virtual), `processes` such processes on this machine. Counted: the dataset (every rank holds it whole),
    each worker's model state (parameters, gradients, momentum, the averager's buffers, global-momentum anchors,
    compression state, checkpoint copies), the batches, the step's activations (ACTIVATION_FACTOR times the layer
    outputs of the batch) and an evaluation chunk's, plus `interpreter` bytes (Python with torch)."""
    _, n_test, shape, classes, data_bytes = _data_profile(cfg)
    params, acts, widest = _model_profile(cfg.model, cfg.width, cfg.dropout, tuple(shape), classes)
    el = 8 if cfg.dtype == "float64" else 4
    virtual = cfg.engine == "virtual"
    vmapped = virtual and _virtual_kernel(cfg) == "vmap"
    # loop: the workers' graphs are built and freed one after another, `threads` at a time; vmap: all K at once
    alive = workers if vmapped else min(workers, cfg.threads or _cores()) if virtual else 1
    copies = 2.0                                                    # parameters and gradients
    copies += 1 if cfg.momentum > 0 and cfg.momentum_variant != "global" else 0   # momentum buffers
    copies += 1                                                     # the averager's flat buffer
    copies += 1 if cfg.algorithm in ("minibatch", "postlocal") else 0            # the gradients' flat buffer
    copies += 2 if cfg.momentum_variant != "local" else 0                       # anchor and global momentum
    copies += 4 * 8 / el if cfg.compress != "none" else 0          # anchors and error feedback (numpy, 2 levels)
    copies += 1 if vmapped else 0                                   # the vmapped gradients before they are copied
    copies += 2                                                     # a checkpoint's state, written and read back
    sample = 16 if is_sequence_model(cfg.model) else el  # token ids and targets are int64
    for s in shape:
        sample *= s
    batch = cfg.batch_size
    parts = {
        "data": data_bytes,
        "model state": int((workers * copies + 1) * params * el),  # + the evaluated (averaged) model's copy
        "batches": int(workers * batch * sample * 3),               # gathered, augmented, stacked
        "activations": int(ACTIVATION_FACTOR["vmap" if vmapped else "one"] * alive * batch * acts * el),
        "evaluation": int(2 * min(EVAL_CHUNK, n_test) * widest * el),
        "interpreter": int(interpreter),
    }
    hints = {"data": "the dataset (--synthetic-train, --synthetic-test, --synthetic-size)",
             "model state": "the model (--model, --width)" + (" and --workers" if virtual else ""),
             "batches": "--batch-size" + (" and --workers" if virtual else ""),
             "activations": "--batch-size" + (" and --workers" if virtual else ", --model, --width"),
             "evaluation": "the model (--model, --width)",
             "interpreter": "the number of ranks per machine"}
    return MemoryEstimate(parts=parts, processes=processes, hints=hints)


def _read_int(path: str) -> int | None:
    try:
        text = Path(path).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def available_memory() -> tuple[int, str] | None:
    """(bytes this machine can still give, what limits it): MemAvailable of /proc/meminfo, or the cgroup's limit
    less its usage where that is smaller; None where neither can be read."""
    found: list[tuple[int, str]] = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append((int(line.split()[1]) * 1024, "MemAvailable"))
    except (OSError, ValueError, IndexError):
        pass
    v1 = "/sys/fs/cgroup/memory/memory."
    for limit, usage in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                         (v1 + "limit_in_bytes", v1 + "usage_in_bytes")):
        lim, use = _read_int(limit), _read_int(usage)
        if lim is not None and use is not None and lim < (1 << 60):
            found.append((max(lim - use, 0), f"the cgroup's memory limit {fmt_bytes(lim)} less its use"))
    return min(found) if found else None


def address_space_left() -> int | None:
    """Bytes of address space this process may still map under RLIMIT_AS (ulimit -v); None when unlimited."""
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return None
    try:
        vm = int(Path("/proc/self/statm").read_text().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        vm = 0
    return max(soft - vm, 0)


def check_memory(cfg: TrainConfig, *, size: int, local_ranks: int | None = None) -> MemoryEstimate:
    """Refuse (TrainError, one line) a run that cannot fit: its estimate against the memory available on this
    machine and the address space this process may still map (ulimit -v). `size`: the launcher's world size;
    `local_ranks`: the ranks on this machine (default: all of them)."""
    virtual = cfg.engine == "virtual"
    processes = 1 if virtual else (local_ranks or size)
    workers = cfg.workers_of(size) if virtual else 1
    estimate_memory(cfg, workers=workers, processes=processes)  # loads what estimating needs, then:
    now = resident_bytes()
    est = estimate_memory(cfg, workers=workers, processes=processes, interpreter=int(INTERPRETER_MARGIN * now))
    top = max(est.parts, key=lambda k: est.parts[k])
    lower = f"lower {est.hints[top]}" if top != "interpreter" else "use fewer ranks per machine"
    if top != "interpreter" and not virtual and processes > 1:
        lower += " or use fewer ranks per machine"
    avail = available_memory()
    # this process is resident already; the other ranks of the machine may not be yet (they start together)
    if avail is not None and est.total > avail[0] + now:
        raise TrainError(f"this run needs an estimated {est.describe()} of memory but this machine has "
                         f"{fmt_bytes(avail[0] + now)} available ({avail[1]}, and this process); {lower}")
    left = address_space_left()
    if left is not None and est.allocations > left:
        shown = ", ".join(f"{k} {fmt_bytes(v)}" for k, v in est.parts.items() if v and k != "interpreter")
        raise TrainError(f"this run needs an estimated {fmt_bytes(est.allocations)} of memory per process beyond "
                         f"the interpreter ({shown}) but its address space limit (ulimit -v) leaves "
                         f"{fmt_bytes(left)}; {lower}")
    return est
