"""The runs engine virtual is compared on with mpirun (no MPI here: the test process imports it)."""
from __future__ import annotations

import os
from typing import Any

__all__ = ["STEPS", "BATCH", "VMAP", "configs"]

#: 100 local steps at H = 2: 50 syncs (hierarchical: 25 block, 25 global).
STEPS, BATCH = 100, 4


def configs(K: int) -> dict[str, dict[str, Any]]:
    """The compared runs. Sizes are fixed (not per K) so that every K reads the same data."""
    w8a = os.environ.get("VIRTUAL_W8A_DIR")  # needed by the logreg runs only
    g = max(1, K // 2)
    common: dict[str, Any] = dict(dtype="float64", batch_size=BATCH, target_acc=None, checkpoint_every=0,
                                  checkpoint_minutes=0, H=2, algorithm="local", log_every=1000)
    logreg = dict(common, model="logreg-binary", dataset="w8a", data_dir=w8a, test_fraction=0.2, lr=0.5,
                  weight_decay=1.0 / 49749, momentum=0.0, lr_schedule="const", lr_cap=1.0)
    resnet = dict(common, model="resnet8", width=4, synthetic_train=512, synthetic_test=128, synthetic_size=8,
                  synthetic_noise=3.0, lr=0.2, lr_scaling="none", lr_warmup_epochs=0.0, bn_eval="average")
    out: dict[str, dict[str, Any]] = {}
    for name, base, n_train in (("logreg", logreg, 39799), ("resnet8", resnet, 512)):
        epochs = STEPS * BATCH / (n_train // K)  # exactly STEPS steps per worker
        runs = {"local": {}, "hier": dict(algorithm="hierarchical", Hb=2, gpus_per_node=g),
                "slowmo": dict(momentum_variant="slowmo", slow_momentum=0.6, slow_lr=0.8)}
        for alg, over in runs.items():
            out[f"{name}-{alg}"] = dict(base, epochs=epochs, eval_every=epochs / 4, **over)
    if K == 4:  # the same run in float32: the difference between the engines is rounding (README-virtual.md)
        out["resnet8-local-float32"] = dict(out["resnet8-local"], dtype="float32")
    # the other syncs, at K = 2 only (cheap): sign / ef-sign compression, hybrid momentum, post-local with
    # mini-batch steps and clipping, BatchNorm statistics of worker 0 for evaluation
    if K == 2:
        r = dict(resnet, epochs=30 * BATCH / (512 // K), eval_every=30 * BATCH / (512 // K) / 2)
        out["resnet8-efsign"] = dict(r, compress="ef-sign")
        out["resnet8-sign"] = dict(r, compress="sign", sign_scale=0.5)
        out["resnet8-hybrid"] = dict(r, momentum_variant="hybrid", global_momentum=0.5, bn_eval="rank0")
        out["resnet8-postlocal"] = dict(r, algorithm="postlocal", switch_step=10, clip_grad_norm=0.5, H=3)
        out["logreg-minibatch"] = dict(logreg, algorithm="minibatch", H=1, epochs=30 * BATCH / (39799 // K),
                                       eval_every=30 * BATCH / (39799 // K) / 2)
    return out


#: The runs also done with engine virtual's vmap step (the loop step, its default on the CPU, does them all).
VMAP = {4: ("resnet8-local", "resnet8-hier", "resnet8-slowmo", "logreg-local"),
        2: ("resnet8-efsign", "resnet8-postlocal", "logreg-minibatch")}
