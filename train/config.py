"""The trainer's configuration: one validated dataclass, resolved against the world size and the data."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from sim.schedule import ALGORITHMS, WARMUPS
from train.errors import TrainError
from train.models import check_model_name, is_sequence_model

__all__ = ["DATASETS", "ENGINES", "VIRTUAL_STEPS", "MOMENTUM_VARIANTS", "SLOW_BUFFERS", "BN_EVAL", "COMPRESS",
           "SAMPLERS", "DTYPES", "LR_SCHEDULES", "LM_STATES", "OUTER", "PROGRESS", "TrainConfig", "parse_straggler"]

DATASETS = ("synthetic", "cifar10", "cifar100", "w8a", "wikitext2")
MOMENTUM_VARIANTS = ("local", "global", "hybrid", "slowmo")
# SlowMo: the base optimiser's momentum buffers at a global sync. LocalSGD also offers "average", which costs one
# more all-reduce per global sync; the simulator does not model it, so the trainer leaves it out.
SLOW_BUFFERS = ("keep", "reset")
BN_EVAL = ("average", "rank0")
DEVICES = ("auto", "cpu", "cuda")
ALLREDUCE = ("auto", "recursive_doubling", "rabenseifner", "ring", "native")
COMPRESS = ("none", "sign", "ef-sign")
SAMPLERS = ("stream", "iid", "shuffle")    # iid / shuffle: sim.convex.sampler.Sampler, shared with the simulator
DTYPES = ("float32", "float64")
LR_SCHEDULES = ("protocol", "decay", "const")
LM_STATES = ("auto", "carry", "reset")
OUTER = ("none", "sgd", "nesterov")       # DiLoCo's outer optimizer (train/outer.py)
PROGRESS = ("thread", "poll")             # comm.PROGRESS, repeated here: importing comm starts MPI
#: mpi: one worker per MPI rank (mpirun -n K); virtual: K workers in one process (train/virtual.py), no mpirun.
ENGINES = ("mpi", "virtual")
#: How engine virtual steps its K workers: loop (K replicas, by worker threads), vmap (one batched call per layer),
#: auto (vmap on a GPU, loop on the CPU).
VIRTUAL_STEPS = ("auto", "loop", "vmap")


def _int(name: str, v: Any, lo: int) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise TrainError(f"{name} must be an integer >= {lo}, got {v!r}")


def _num(name: str, v: Any, lo: float, *, strict: bool = False, hi: float | None = None) -> None:
    ok = not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)
    ok = ok and (v > lo if strict else v >= lo) and (hi is None or v <= hi)
    if not ok:
        rng = f"{'>' if strict else '>='} {lo}" + (f" and <= {hi}" if hi is not None else "")
        raise TrainError(f"{name} must be a finite number {rng}, got {v!r}")


def _choice(name: str, v: Any, options: tuple[str, ...]) -> None:
    if v not in options:
        raise TrainError(f"{name} must be one of {', '.join(options)}, got {v!r}")


def parse_straggler(text: str) -> tuple[int, float]:
    """Parse RANK:FACTOR (e.g. 3:2.5: rank 3 computes 2.5 times slower) into (rank, factor)."""
    rank_s, sep, factor_s = text.partition(":")
    try:
        rank, factor = int(rank_s), float(factor_s)
    except ValueError:
        rank, factor = -1, float("nan")
    if not sep or rank < 0 or not math.isfinite(factor) or factor < 1:
        raise TrainError(f"straggler must be RANK:FACTOR with an integer RANK >= 0 and FACTOR >= 1, got {text!r}")
    return rank, factor


@dataclass(kw_only=True)
class TrainConfig:
    """Everything a run needs; every field is validated here, before any MPI work."""

    # model and data
    model: str = "resnet8"
    width: int = 8                       # base width of the resnetD family
    dropout: float = 0.0                 # LSTM / WideResNet dropout
    dataset: str = "synthetic"
    data_dir: str | None = None
    synthetic_train: int = 8192          # synthetic training images
    synthetic_test: int = 2048
    synthetic_classes: int = 10
    synthetic_size: int = 16             # synthetic images are 3 x size x size
    synthetic_noise: float = 6.0         # noise std around the class templates (harder when larger)
    test_fraction: float = 0.2           # w8a has no test file: this share is held out (0: none, test = train)
    bptt: int = 30
    lm_state: str = "auto"               # LSTM: carry (truncated BPTT over contiguous text), reset, auto
    # algorithm (SPEC section 2)
    algorithm: str = "postlocal"
    H: int = 8
    Hb: int = 1
    gpus_per_node: int | None = None     # hierarchical blocks: None = real nodes, an int = virtual blocks
    switch_step: int | None = None       # postlocal: None = first learning-rate decay
    switch_epoch: float | None = None
    local_warmup: str = "constant"
    local_warmup_steps: int | None = None
    local_warmup_epochs: float | None = None
    momentum_variant: str = "local"
    global_momentum: float = 0.0         # m_g of the global / hybrid variants
    slow_lr: float = 1.0                 # slowmo: slow learning rate alpha (1: hybrid momentum with m_g = beta)
    slow_momentum: float = 0.0           # slowmo: slow momentum beta
    slow_buffers: str = "keep"           # slowmo: keep or reset the local momentum buffers at global syncs
    allreduce: str = "auto"              # comm's algorithm
    compress: str = "none"               # sign / ef-sign: 1-bit model changes through an all-gather (train/compress.py)
    sign_scale: float = 1.0              # sign: the majority vote moves each coordinate by sign_scale * lr
    # hiding communication behind computation (docs/README-overlap.md)
    bucket_size: int = 256 * 1024        # bytes; mini-batch steps: gradient buckets all-reduced during backward; 0:
    first_bucket_size: int = 64 * 1024   #   one blocking all-reduce after backward (the first bucket is smaller)
    overlap: bool = False                # local-SGD syncs run beside the next overlap_steps local steps
    overlap_steps: int = 1               # tau: the average of step t's models is applied after step t + tau
    progress: str = "thread"             # how nonblocking all-reduces advance: comm's helper thread, or polls
    outer_optimizer: str = "none"        # DiLoCo: sgd / nesterov on the pseudo-gradient anchor - avg(x)
    outer_lr: float = 0.7
    outer_momentum: float = 0.9
    # the convex cross-check with the simulator (docs/README-compress.md)
    sampler: str = "stream"              # stream: WorkerStream; iid / shuffle: the simulator's convex Sampler
    dtype: str = "float32"               # parameters and data
    lr_schedule: str = "protocol"        # protocol: SPEC section 3; decay: min(lr_cap, lr n/(t+1)); const: lr_cap lr
    lr_cap: float = 32.0
    log_objective: bool = False          # after every global sync: f(w) = mean training loss + wd/2 ||w||^2
    # protocol (SPEC section 3)
    batch_size: int = 32                 # per worker: B (minibatch) or B_loc (the others)
    epochs: float = 10.0
    lr: float = 0.1                      # gamma_0 for one worker at batch lr_ref_batch
    lr_ref_batch: int = 128
    lr_scaling: str = "linear"           # linear: gamma_0 * K B / lr_ref_batch; none: gamma_0
    lr_warmup_epochs: float = 5.0
    lr_decay_at: tuple[float, ...] = (0.5, 0.75)
    lr_decay_factor: float = 10.0
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 1e-4
    clip_grad_norm: float | None = None  # clip each step's gradient to this L2 norm (the LSTM's usual 0.25)
    bn_eval: str = "average"
    # measurement, emulation, run management
    eval_every: float = 1.0              # epochs between evaluations of the synchronised model
    log_every: int = 1                   # steps between step records
    target_acc: float | None = 0.9      # test accuracy for time-to-accuracy (None: not measured)
    target_loss: float | None = None     # objective gap f(w) - f* for time-to-target (train/targets.py)
    fstar: str = "computed"              # f* of the gap: computed (logreg-binary, Newton), paper, or a number
    global_sync_delay: float = 0.0
    block_sync_delay: float = 0.0
    stragglers: tuple[tuple[int, float], ...] = field(default_factory=tuple)
    checkpoint_every: float = 1.0        # epochs (the last two sets are kept); 0 = only at the end
    checkpoint_minutes: float = 10.0     # also at the first global sync check this long after the last one; 0 = off
    stop_at_epoch: float | None = None   # pause the run (checkpoint, exit) at this epoch; resume later
    seed: int = 0
    device: str = "auto"
    out_dir: str | None = None
    # engine (docs/README-virtual.md)
    engine: str = "mpi"                  # mpi: the workers are the MPI ranks; virtual: `workers` in one process
    workers: int | None = None           # virtual: K (required); mpi: None (K is the launcher's world size)
    virtual_step: str = "auto"           # virtual: loop, vmap or auto (train/virtual.py)
    threads: int | None = None           # virtual: threads of the one process (None: every core it may use)

    def __post_init__(self) -> None:
        check_model_name(self.model)
        _int("width", self.width, 1)
        _num("dropout", self.dropout, 0.0, hi=0.99)
        _choice("dataset", self.dataset, DATASETS)
        if self.dataset in ("cifar10", "cifar100", "wikitext2") and not self.data_dir:
            raise TrainError(f"dataset {self.dataset!r} needs --data-dir pointing at its files, got none")
        if (self.dataset == "wikitext2") != is_sequence_model(self.model) and self.dataset != "synthetic":
            raise TrainError(f"model {self.model!r} does not fit dataset {self.dataset!r}: "
                             f"wikitext2 goes with lstm, images and features with the other models")
        _int("synthetic_train", self.synthetic_train, 1)
        _int("synthetic_test", self.synthetic_test, 1)
        _int("synthetic_classes", self.synthetic_classes, 2)
        _int("synthetic_size", self.synthetic_size, 4)
        _num("synthetic_noise", self.synthetic_noise, 0.0)
        _num("test_fraction", self.test_fraction, 0.0, hi=0.9)
        _int("bptt", self.bptt, 1)
        _choice("lm_state", self.lm_state, LM_STATES)
        if self.lm_state == "carry" and not is_sequence_model(self.model):
            raise TrainError(f"lm_state 'carry' applies to the lstm model only, got model {self.model!r}")
        _choice("algorithm", self.algorithm, ALGORITHMS)
        _int("H", self.H, 1)
        _int("Hb", self.Hb, 1)
        if self.Hb != 1 and self.algorithm != "hierarchical":
            raise TrainError(f"Hb must be 1 unless algorithm is hierarchical, got Hb={self.Hb} with {self.algorithm}")
        if self.gpus_per_node is not None:
            _int("gpus_per_node", self.gpus_per_node, 1)
        if self.switch_step is not None and self.switch_epoch is not None:
            raise TrainError(f"give at most one of switch_step and switch_epoch, got {self.switch_step} and "
                             f"{self.switch_epoch}")
        if (self.switch_step is not None or self.switch_epoch is not None) and self.algorithm != "postlocal":
            raise TrainError(f"switch_step / switch_epoch only apply to algorithm postlocal, got {self.algorithm}")
        if self.switch_step is not None:
            _int("switch_step", self.switch_step, 0)
        if self.switch_epoch is not None:
            _num("switch_epoch", self.switch_epoch, 0.0)
            if self.switch_epoch >= self.epochs:
                raise TrainError(f"switch_epoch {self.switch_epoch:g} is not before epochs {self.epochs:g}: the run "
                                 f"would end before post-local SGD starts; lower switch_epoch or raise epochs")
        _choice("local_warmup", self.local_warmup, WARMUPS)
        if self.local_warmup_steps is not None and self.local_warmup_epochs is not None:
            raise TrainError(f"give at most one of local_warmup_steps and local_warmup_epochs, got "
                             f"{self.local_warmup_steps} and {self.local_warmup_epochs}")
        if self.local_warmup_steps is not None:
            _int("local_warmup_steps", self.local_warmup_steps, 0)
        if self.local_warmup_epochs is not None:
            _num("local_warmup_epochs", self.local_warmup_epochs, 0.0)
        _choice("momentum_variant", self.momentum_variant, MOMENTUM_VARIANTS)
        _num("global_momentum", self.global_momentum, 0.0, hi=0.999)
        _num("slow_lr", self.slow_lr, 0.0, strict=True, hi=100.0)
        _num("slow_momentum", self.slow_momentum, 0.0, hi=0.999)
        _choice("slow_buffers", self.slow_buffers, SLOW_BUFFERS)
        if self.momentum_variant != "slowmo" and (self.slow_lr != 1.0 or self.slow_momentum != 0.0
                                                  or self.slow_buffers != "keep"):
            raise TrainError(f"slow_lr / slow_momentum / slow_buffers apply to momentum_variant slowmo only, got "
                             f"momentum_variant {self.momentum_variant!r}")
        if self.momentum_variant == "slowmo" and self.global_momentum != 0.0:
            raise TrainError(f"momentum_variant slowmo takes its momentum from slow_momentum; global_momentum must "
                             f"stay 0, got {self.global_momentum}")
        if self.momentum_variant != "local" and self.algorithm == "minibatch":
            raise TrainError(f"momentum_variant must be local for minibatch (identical models: local momentum is "
                             f"global momentum), got {self.momentum_variant!r}")
        _choice("allreduce", self.allreduce, ALLREDUCE)
        _choice("compress", self.compress, COMPRESS)
        _num("sign_scale", self.sign_scale, 0.0, strict=True)
        if self.compress != "none" and self.momentum_variant != "local":
            raise TrainError(f"compress {self.compress!r} needs momentum_variant local, got {self.momentum_variant!r}")
        self._check_overlap()
        _choice("sampler", self.sampler, SAMPLERS)
        if self.sampler != "stream" and self.carries_state:
            raise TrainError(f"sampler {self.sampler!r} draws independent samples; it cannot go with lm_state "
                             f"carry (contiguous text): use --lm-state reset or --sampler stream")
        _choice("dtype", self.dtype, DTYPES)
        _choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        _num("lr_cap", self.lr_cap, 0.0, strict=True)
        _int("batch_size", self.batch_size, 1)
        _num("epochs", self.epochs, 0.0, strict=True)
        _num("lr", self.lr, 0.0, strict=True)
        _int("lr_ref_batch", self.lr_ref_batch, 1)
        _choice("lr_scaling", self.lr_scaling, ("linear", "none"))
        _num("lr_warmup_epochs", self.lr_warmup_epochs, 0.0)
        self.lr_decay_at = tuple(self.lr_decay_at)
        if any(not isinstance(f, (int, float)) or not 0 < f < 1 for f in self.lr_decay_at) or \
                list(self.lr_decay_at) != sorted(set(self.lr_decay_at)):
            raise TrainError(f"lr_decay_at must be increasing fractions strictly between 0 and 1, "
                             f"got {list(self.lr_decay_at)}")
        _num("lr_decay_factor", self.lr_decay_factor, 1.0)
        _num("momentum", self.momentum, 0.0, hi=0.999)
        _num("weight_decay", self.weight_decay, 0.0)
        if self.clip_grad_norm is not None:
            _num("clip_grad_norm", self.clip_grad_norm, 0.0, strict=True)
        _choice("bn_eval", self.bn_eval, BN_EVAL)
        _num("eval_every", self.eval_every, 0.0, strict=True)
        _int("log_every", self.log_every, 1)
        if self.target_acc is not None:
            _num("target_acc", self.target_acc, 0.0, hi=1.0)
        if self.target_loss is not None:
            _num("target_loss", self.target_loss, 0.0, strict=True)
            if self.carries_state:
                raise TrainError(f"target_loss needs the objective over the training set, which a carried-state "
                                 f"LSTM does not evaluate; use --lm-state reset or --target-acc, got model "
                                 f"{self.model!r} with lm_state {self.lm_state!r}")
        if self.fstar not in ("computed", "paper"):
            try:
                ok = math.isfinite(float(self.fstar))
            except (TypeError, ValueError):
                ok = False
            if not ok:
                raise TrainError(f"fstar must be computed, paper or a finite number, got {self.fstar!r}")
        elif self.fstar == "computed" and self.target_loss is not None and (self.model != "logreg-binary"
                                                                             or self.weight_decay <= 0):
            raise TrainError(f"fstar computed solves the objective of logreg-binary with weight_decay > 0 only, got "
                             f"model {self.model!r} with weight_decay {self.weight_decay}; give fstar as a number")
        _num("global_sync_delay", self.global_sync_delay, 0.0)
        _num("block_sync_delay", self.block_sync_delay, 0.0)
        self.stragglers = tuple((int(r), float(f)) for r, f in self.stragglers)
        for r, f in self.stragglers:
            if r < 0 or not math.isfinite(f) or f < 1:
                raise TrainError(f"straggler must be (rank >= 0, factor >= 1), got ({r}, {f})")
        _num("checkpoint_every", self.checkpoint_every, 0.0)
        _num("checkpoint_minutes", self.checkpoint_minutes, 0.0)
        if self.stop_at_epoch is not None:
            _num("stop_at_epoch", self.stop_at_epoch, 0.0, strict=True)
            if self.stop_at_epoch >= self.epochs:
                raise TrainError(f"stop_at_epoch {self.stop_at_epoch:g} is not before epochs {self.epochs:g}: the run "
                                 f"would end before it pauses; lower stop_at_epoch or raise epochs")
        _int("seed", self.seed, 0)
        _choice("device", self.device, DEVICES)
        _choice("engine", self.engine, ENGINES)
        if self.engine == "virtual":
            self._check_virtual()
        elif self.workers is not None:
            raise TrainError(f"workers applies to engine virtual only, got workers {self.workers!r} with engine mpi "
                             f"(there each MPI rank is a worker: mpirun -n K)")
        elif self.virtual_step != "auto" or self.threads is not None:
            raise TrainError(f"virtual_step and threads apply to engine virtual only, got virtual_step "
                             f"{self.virtual_step!r} and threads {self.threads!r} with engine mpi (a rank's threads: "
                             f"OMP_NUM_THREADS)")

    def _check_virtual(self) -> None:
        """What the virtual engine (K workers in one process, no network) cannot do: one line each."""
        if self.workers is None:
            raise TrainError("engine virtual needs workers, the number K of workers to run in this process; "
                             "got none")
        _int("workers", self.workers, 1)
        _choice("virtual_step", self.virtual_step, VIRTUAL_STEPS)
        if self.threads is not None:
            _int("threads", self.threads, 1)
        for name, v, why in (("global_sync_delay", self.global_sync_delay, "no network to slow down"),
                             ("block_sync_delay", self.block_sync_delay, "no network to slow down")):
            if v != 0:
                raise TrainError(f"{name} {v!r} does not apply to engine virtual ({why}: its syncs are means in "
                                 f"memory); run with mpirun, or leave it at 0")
        if self.stragglers:
            rank, factor = self.stragglers[0]
            raise TrainError(f"straggler {rank}:{factor:g} does not apply to engine virtual (every worker steps in "
                             f"lock-step in one process); run with mpirun")
        if self.allreduce != "auto":
            raise TrainError(f"allreduce {self.allreduce!r} does not apply to engine virtual (its syncs are means "
                             f"in memory, no all-reduce runs); leave it at auto")
        if self.overlap:
            raise TrainError("overlap does not apply to engine virtual (its syncs are means in memory that take no "
                             "time, so there is nothing to hide); run with mpirun, or leave overlap off")
        for name, got, default in (("bucket_size", self.bucket_size, 256 * 1024),
                                   ("first_bucket_size", self.first_bucket_size, 64 * 1024),
                                   ("progress", self.progress, "thread")):
            if got != default and not (name == "bucket_size" and got == 0):
                raise TrainError(f"{name} {got!r} does not apply to engine virtual (its gradient averages are means "
                                 f"in memory, no all-reduce runs); leave it at {default!r}")
        if is_sequence_model(self.model):
            raise TrainError(f"model {self.model!r} is not supported by engine virtual (a carried hidden state per "
                             f"worker, and nn.LSTM under torch.func.vmap, are not implemented); run it with mpirun")
        if self.algorithm == "hierarchical" and self.gpus_per_node is None:
            raise TrainError("algorithm hierarchical with engine virtual needs gpus_per_node G (the workers per "
                             "block: there are no real nodes in one process), got none")

    def _check_overlap(self) -> None:
        _int("bucket_size", self.bucket_size, 0)
        _int("first_bucket_size", self.first_bucket_size, 1)
        if not isinstance(self.overlap, bool):
            raise TrainError(f"overlap must be true or false, got {self.overlap!r}")
        _int("overlap_steps", self.overlap_steps, 1)
        _choice("progress", self.progress, PROGRESS)
        _choice("outer_optimizer", self.outer_optimizer, OUTER)
        _num("outer_lr", self.outer_lr, 0.0, strict=True, hi=100.0)
        _num("outer_momentum", self.outer_momentum, 0.0, hi=0.999)
        if self.overlap:
            if self.algorithm == "minibatch":
                raise TrainError("overlap applies to the model syncs of local SGD; minibatch overlaps its gradient "
                                 "all-reduces with backward through bucket_size (on by default)")
            if self.compress != "none":
                raise TrainError(f"overlap cannot go with compress {self.compress!r} (its all-gather blocks)")
            if self.overlap_steps > self.H:
                raise TrainError(f"overlap_steps must be <= H = {self.H}, got {self.overlap_steps} (a sync is "
                                 f"applied before the next one starts)")
        elif self.overlap_steps != 1:
            raise TrainError(f"overlap_steps applies with overlap only, got {self.overlap_steps} without overlap")
        if self.outer_optimizer != "none":
            if self.momentum_variant != "local" or self.compress != "none" or self.algorithm == "minibatch":
                raise TrainError(f"outer_optimizer {self.outer_optimizer!r} replaces the momentum variants: it needs "
                                 f"momentum_variant local, compress none and a local-SGD algorithm, got "
                                 f"{self.momentum_variant!r}, {self.compress!r} and {self.algorithm!r}")
        elif self.outer_lr != 0.7 or self.outer_momentum != 0.9:
            raise TrainError(f"outer_lr / outer_momentum apply with an outer_optimizer only, got outer_optimizer "
                             f"{self.outer_optimizer!r}")

    @property
    def carries_state(self) -> bool:
        """Whether the LSTM carries its hidden state from batch to batch over contiguous text (truncated BPTT)."""
        return is_sequence_model(self.model) and (self.lm_state == "carry" or
                                                  (self.lm_state == "auto" and self.dataset == "wikitext2"))

    def workers_of(self, size: int) -> int:
        """K, the number of workers: the world size under engine mpi, `workers` under engine virtual."""
        return self.workers if self.engine == "virtual" and self.workers is not None else size

    def check_world(self, size: int) -> None:
        """Checks that need the number of ranks (run before MPI starts when the launcher tells it)."""
        if self.engine == "virtual" and size != 1:
            raise TrainError(f"engine virtual runs every worker in this one process; launch it without mpirun "
                             f"(got a world of {size} ranks)")
        K, what = self.workers_of(size), "workers" if self.engine == "virtual" else "ranks"
        for r, _ in self.stragglers:
            if r >= K:
                raise TrainError(f"straggler rank must be < the number of ranks {K}, got {r}")
        g = self.gpus_per_node
        if g is not None and K % g:
            raise TrainError(f"gpus_per_node must divide the number of {what} {K}, got {g}")
        if self.momentum_variant != "local" and self.algorithm == "minibatch":
            raise TrainError("momentum_variant must be local for minibatch")

    def on_mpi(self) -> TrainConfig:
        """The same run on the MPI engine (K = the workers, as ranks): what the simulator predicts for a virtual
        run."""
        return self if self.engine == "mpi" else replace(self, engine="mpi", workers=None)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of every field (tuples become lists)."""
        d = asdict(self)
        d["lr_decay_at"] = list(self.lr_decay_at)
        d["stragglers"] = [list(s) for s in self.stragglers]
        return d
