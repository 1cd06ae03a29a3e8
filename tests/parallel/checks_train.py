"""Parallel checks of the trainer, run on every rank by tests/parallel/runner.py (see test_train_parallel.py)."""
from __future__ import annotations

import hashlib
import math
import tempfile

import numpy as np
import torch
from mpi4py import MPI

from train.config import TrainConfig
from train.trainer import Trainer

WORLD = MPI.COMM_WORLD


def tiny(**over: object) -> TrainConfig:
    """A run of a few dozen steps: resnet8 of width 4 on 8x8 synthetic images, 8 per batch."""
    base: dict[str, object] = dict(model="resnet8", width=4, synthetic_train=64 * WORLD.Get_size(),
                                   synthetic_test=64, synthetic_size=8, batch_size=8, epochs=2.0, lr=0.05,
                                   lr_warmup_epochs=0.5, target_acc=None)
    base.update(over)
    return TrainConfig(**base)  # type: ignore[arg-type]


def make(cfg: TrainConfig) -> Trainer:
    out = WORLD.bcast(tempfile.mkdtemp(prefix="train-check-") if WORLD.Get_rank() == 0 else None, root=0)
    cfg.out_dir = out
    return Trainer(cfg)


def params(tr: Trainer) -> np.ndarray:
    return tr.averager.flat.pack().detach().cpu().numpy().copy()


def digests(tr: Trainer, comm: object = WORLD) -> list[str]:
    """SHA-256 of every rank's parameter bytes, gathered on every rank of `comm`."""
    return comm.allgather(hashlib.sha256(params(tr).tobytes()).hexdigest())  # type: ignore[attr-defined]


def check_minibatch_identical_every_step() -> None:
    tr = make(tiny(algorithm="minibatch"))
    for t in range(tr.plan.total_steps):
        tr._one_step(t, None)
        d = digests(tr)
        assert len(set(d)) == 1, f"mini-batch models differ after step {t}: {d}"
    assert tr.sync.stats["global"]["syncs"] == tr.plan.total_steps


def check_local_identical_after_sync_only() -> None:
    tr = make(tiny(algorithm="local", H=3))
    T = tr.plan.total_steps
    events = dict(tr.plan.schedule.events(T))
    assert len(events) == math.ceil(T / 3)
    for t in range(T):
        tr._one_step(t, None)
        d = digests(tr)
        if t in events:
            assert len(set(d)) == 1, f"models differ right after the sync at step {t}"
        elif WORLD.Get_size() >= 2:
            assert len(set(d)) == WORLD.Get_size(), f"models should differ between syncs (step {t}): {d}"
    assert tr.sync.stats["global"]["syncs"] == len(events)
    assert tr.sync.stats["global"]["bytes"] == len(events) * tr.averager.nbytes


def check_local_average_is_mean_of_models() -> None:
    """The model after a sync equals the float64 mean of the K models just before it (independent gather)."""
    tr = make(tiny(algorithm="local", H=2))
    orig = tr.averager.sync
    seen = []

    def spy(level: str, lr: float) -> None:
        before = np.stack(WORLD.allgather(params(tr))).astype(np.float64)
        orig(level, lr)
        seen.append(np.abs(params(tr) - before.mean(0)).max())

    tr.averager.sync = spy  # type: ignore[method-assign]
    for t in range(6):
        tr._one_step(t, None)
    assert len(seen) == 3 and max(seen) < 1e-6, f"sync is not the mean of the models: {seen}"


def check_postlocal_switch() -> None:
    s = 5
    tr = make(tiny(algorithm="postlocal", H=4, switch_step=s))
    assert tr.plan.switch_step == s
    for t in range(s + 3):
        phase_grad = tr.plan.grad_phase(t)
        assert phase_grad == (t < s), f"step {t}: mini-batch phase {phase_grad}, switch at {s}"
        before = tr.sync.stats["global"]["syncs"]
        tr._one_step(t, None)
        synced = tr.sync.stats["global"]["syncs"] - before
        d = digests(tr)
        if t < s:
            assert synced == 1 and len(set(d)) == 1, f"step {t} before the switch must sync gradients"
        else:
            assert synced == 0, f"step {t}: post-local with H=4 must not sync within 3 steps of the switch"
            if WORLD.Get_size() >= 2:
                assert len(set(d)) == WORLD.Get_size(), f"local step {t} left identical models"


def check_postlocal_default_switch_is_first_decay() -> None:
    tr = make(tiny(algorithm="postlocal", H=4))
    T = tr.plan.total_steps
    assert tr.plan.switch_step == math.ceil(0.5 * T), (tr.plan.switch_step, T)
    assert tr.plan.lr.lr_at(tr.plan.switch_step) < tr.plan.lr.lr_at(tr.plan.switch_step - 1)


def _final(cfg: TrainConfig) -> tuple[Trainer, np.ndarray]:
    tr = make(cfg)
    for t in range(tr.plan.total_steps):
        tr._one_step(t, None)
    return tr, params(tr)


def check_hierarchical_hb1_equals_local() -> None:
    K = WORLD.Get_size()
    g = 2 if K % 2 == 0 else 1
    loc, a = _final(tiny(algorithm="local", H=3))
    hie, b = _final(tiny(algorithm="hierarchical", H=3, Hb=1, gpus_per_node=g))
    assert hie.sync.stats["block"]["syncs"] == 0
    assert hie.sync.stats["global"]["syncs"] == loc.sync.stats["global"]["syncs"]
    # different reduction orders (node reduce, leaders, broadcast) may round differently: allow float32 rounding
    assert np.allclose(a, b, rtol=1e-4, atol=1e-6), f"max difference {np.abs(a - b).max()}"


def check_hierarchical_blocks() -> None:
    """Hb=2 on virtual blocks of 2: block syncs make blocks identical inside, global syncs make all identical."""
    K = WORLD.Get_size()
    assert K % 2 == 0 and K >= 4, "run this check on an even number >= 4 of ranks"
    tr = make(tiny(algorithm="hierarchical", H=2, Hb=2, gpus_per_node=2))
    T = tr.plan.total_steps
    levels = dict(tr.plan.schedule.events(T))
    node = tr.topology.node_comm
    for t in range(T):
        tr._one_step(t, None)
        if levels.get(t) == "global":
            assert len(set(digests(tr))) == 1, f"global sync at step {t} left different models"
        elif levels.get(t) == "block":
            assert len(set(digests(tr, node))) == 1, f"block sync at step {t}: block members differ"
            assert len(set(digests(tr))) == K // 2, f"block sync at step {t}: blocks should differ"
    counts = tr.plan.schedule.counts(T)
    assert tr.sync.stats["block"]["syncs"] == counts["block"] > 0
    assert tr.sync.stats["global"]["syncs"] == counts["global"] > 0


def check_global_momentum_update() -> None:
    """u = m_g u + (w_anchor - mean w_k) / lr and w = w_anchor - lr u, against an independent float64 replay."""
    mg = 0.5
    tr = make(tiny(algorithm="local", H=2, momentum_variant="hybrid", global_momentum=mg))
    orig = tr.averager.sync
    state = {"anchor": params(tr).astype(np.float64), "u": np.zeros(params(tr).size)}
    errs = []

    def spy(level: str, lr: float) -> None:
        mean = np.stack(WORLD.allgather(params(tr))).astype(np.float64).mean(0)
        orig(level, lr)
        state["u"] = mg * state["u"] + (state["anchor"] - mean) / lr
        expect = state["anchor"] - lr * state["u"]
        errs.append(np.abs(params(tr) - expect).max())
        state["anchor"] = params(tr).astype(np.float64)

    tr.averager.sync = spy  # type: ignore[method-assign]
    for t in range(8):
        tr._one_step(t, None)
    assert len(errs) == 4 and max(errs) < 1e-4, f"global momentum differs from the replay: {errs}"
    assert len(set(digests(tr))) == 1


def check_k1_local_equals_plain_sgd() -> None:
    """At K = 1 local SGD (H = 4) is plain SGD: compare with torch.optim.SGD driven by hand on the same batches."""
    assert WORLD.Get_size() == 1
    cfg = tiny(algorithm="local", H=4, weight_decay=0.0)
    tr, ours = _final(cfg)
    torch.manual_seed(cfg.seed)
    from train.data import load_dataset
    from train.models import build_model
    data = load_dataset(cfg)
    model = build_model(cfg.model, input_shape=data.input_shape, num_classes=data.num_classes, width=cfg.width)
    opt = torch.optim.SGD(model.parameters(), lr=0.0, momentum=cfg.momentum, nesterov=True)
    n, B = len(data.x_train), cfg.batch_size
    assert n % B == 0
    for t in range(tr.plan.total_steps):
        epoch, off = divmod(t * B, n)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch))
        idx = perm[off:off + B]
        for grp in opt.param_groups:
            grp["lr"] = tr.plan.lr.lr_at(t)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(data.x_train[idx]), data.y_train[idx]).backward()
        opt.step()
    ref = torch.cat([p.detach().reshape(-1) for p in model.parameters()]).numpy()
    assert np.array_equal(ours, ref), f"max difference {np.abs(ours - ref).max()}"


def check_local_warmup_follows_schedule() -> None:
    """With exponential local-step warm-up the syncs happen exactly at the schedule's events."""
    tr = make(tiny(algorithm="local", H=4, local_warmup="exponential", local_warmup_steps=9))
    T = tr.plan.total_steps
    done = []
    for t in range(T):
        before = tr.sync.stats["global"]["syncs"]
        tr._one_step(t, None)
        if tr.sync.stats["global"]["syncs"] > before:
            done.append(t)
            assert len(set(digests(tr))) == 1
    expected = [t for t, _ in tr.plan.schedule.events(T)]
    # H in force: 1 for u = 0..2, 2 for u = 3..5, 4 from u = 6 (sim.schedule docstring), so syncs at 0, 1, 2, 4, 8
    assert done == expected and expected[:5] == [0, 1, 2, 4, 8], expected


def check_delay_and_straggler() -> None:
    """--global-sync-delay adds its delay to every global sync; a straggler makes the others wait for it."""
    K = WORLD.Get_size()
    tr = make(tiny(algorithm="local", H=4, epochs=1.0, global_sync_delay=0.05, stragglers=((K - 1, 4.0),)))
    T = tr.plan.total_steps
    for t in range(T):
        tr._one_step(t, None)
    st = tr.sync.stats["global"]
    n = tr.plan.schedule.counts(T)["global"]
    assert st["syncs"] == n and abs(st["delay_s"] - 0.05 * n) < 1e-9 and st["comm_s"] >= 0.05 * n
    waits = WORLD.allgather(st["wait_s"])
    slow = WORLD.allgather(tr.straggle_s)
    assert slow[-1] > 0 and all(s == 0 for s in slow[:-1])
    assert min(waits[:-1]) > waits[-1], f"the ranks should wait for the straggler: {waits}"


def check_global_variant_has_no_local_momentum() -> None:
    tr = make(tiny(algorithm="local", H=2, momentum_variant="global", global_momentum=0.3))
    assert all(g["momentum"] == 0.0 for g in tr.opt.param_groups)
    for t in range(4):
        tr._one_step(t, None)
    assert tr.averager.momentum_buf is not None and float(tr.averager.momentum_buf.abs().sum()) > 0
    assert len(set(digests(tr))) == 1


def check_every_model_takes_steps() -> None:
    """Each model family runs through the trainer (2 steps, a sync, an evaluation) and its parameters move."""
    K = WORLD.Get_size()
    for model, extra in (("resnet20", {"width": 4}), ("densenet10-4", {}), ("wideresnet10-1", {}),
                         ("resnet50", {"synthetic_size": 32}), ("lstm", {"synthetic_classes": 16, "bptt": 5}),
                         ("logreg", {})):
        cfg = tiny(model=model, synthetic_train=4 * K, synthetic_test=4, batch_size=2, epochs=1.0,
                   algorithm="local", H=2, **extra)
        tr = make(cfg)
        before = params(tr)
        for t in range(tr.plan.total_steps):
            tr._one_step(t, None)
        after = params(tr)
        assert np.isfinite(after).all() and not np.array_equal(before, after), model
        assert len(set(digests(tr))) == 1, f"{model}: models differ after the final sync"
        loss, acc = tr.evaluator.evaluate()
        assert math.isfinite(loss) and 0.0 <= acc <= 1.0, (model, loss, acc)


def check_evaluation_bn_modes() -> None:
    """Evaluation = averaged parameters with averaged (or rank 0's) BN statistics, replayed by hand; no side effects."""
    import copy

    from train.evaluate import batch_metrics
    for mode in ("average", "rank0"):
        tr = make(tiny(algorithm="local", H=5, bn_eval=mode))
        for t in range(3):  # between syncs: parameters and BN statistics differ per rank
            tr._one_step(t, None)
        state = {k: v.clone() for k, v in tr.model.state_dict().items()}
        loss, acc = tr.evaluator.evaluate()
        after = tr.model.state_dict()
        assert all(torch.equal(state[k], after[k]) for k in state), "evaluation changed the worker's state"
        assert tr.model.training
        states = WORLD.allgather({k: v.numpy() for k, v in state.items()})
        ref = copy.deepcopy(tr.model)
        new = {}
        for k, v in state.items():
            stack = np.stack([s[k] for s in states]).astype(np.float64)
            is_buffer = "running_" in k or "num_batches" in k
            if is_buffer and mode == "rank0":
                new[k] = torch.from_numpy(states[0][k])
            elif "num_batches" in k:
                new[k] = v
            else:
                new[k] = torch.from_numpy(stack.mean(0).astype(np.float32))
        ref.load_state_dict(new)
        ref.eval()
        with torch.no_grad():
            l_ref, c_ref, n_ref = batch_metrics(ref(tr.data.x_test), tr.data.y_test)
        assert abs(float(l_ref) - loss) < 1e-5 and abs(c_ref / n_ref - acc) < 1e-9, (mode, loss, float(l_ref))


def check_clip_grad_norm_bounds_every_step() -> None:
    """--clip-grad-norm c with momentum 0 and no weight decay: every parameter change is at most lr_t * c in L2
    norm, and the bound is tight enough that the unclipped step is larger (so the clip really acts)."""
    c = 0.1
    common = dict(algorithm="local", H=2, momentum=0.0, weight_decay=0.0, lr_warmup_epochs=0.0)
    clipped, free = make(tiny(clip_grad_norm=c, **common)), make(tiny(**common))
    for t in range(4):
        moves = []
        for tr in (clipped, free):
            before = params(tr)
            tr.model.train()
            tr._one_step(t, None)
            moves.append(float(np.linalg.norm(params(tr) - before)))
        if t % 2 == 0:  # a local step without sync: the change is the step itself
            assert moves[0] <= clipped.plan.lr.lr_at(t) * c * (1 + 1e-3), (t, moves)  # float32 rounding
            assert moves[1] > 2 * moves[0], (t, moves)


def check_ctrl_c_at_the_last_start_up_agreement_frees_the_folder() -> None:
    """A signal that arrives after rank 0 wrote config.json but before the first step: every rank stops with the
    same AgreedInterrupt, and the folder is left as it was, so the same command can simply be run again."""
    import signal
    from pathlib import Path

    from train.errors import AgreedInterrupt
    from train.signals import EARLY
    tr = make(tiny(algorithm="local", H=2))
    run_dir = Path(tr.run_dir)
    if WORLD.Get_rank() == WORLD.Get_size() - 1:
        EARLY.seen = int(signal.SIGINT)  # as if Ctrl-C reached this rank while the outputs were being opened
    try:
        tr.run()
        raise AssertionError("run() went on after a start-up signal")
    except AgreedInterrupt as e:
        assert e.exit_code == 130 and "run the command again" in str(e), e
    finally:
        EARLY.seen = 0
    WORLD.Barrier()
    assert not (run_dir / "config.json").exists() and not (run_dir / "metrics.jsonl").exists()
    assert not run_dir.exists(), f"{run_dir} should be gone (it was empty)"
