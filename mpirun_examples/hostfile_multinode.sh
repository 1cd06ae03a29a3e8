#!/usr/bin/env bash
# Multi-node launch with MPICH/Hydra and a hostfile (documented, not run in CI): 8 nodes x 2 GPUs, hierarchical
# local SGD on the REAL nodes (no --gpus-per-node: comm.Topology splits by shared memory), CIFAR-10, ResNet-20.
# hosts.txt holds one line per node, e.g. "node01:2". Every node needs the same checkout and data path.
# Each rank takes cuda:(local rank % GPUs per node); use --device cpu to force CPUs.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${HOSTFILE:=hosts.txt}" "${DATA_DIR:=data/cifar10}" "${OUT:=runs/cifar10-hier-8x2}"
mpirun -f "$HOSTFILE" -n 16 -ppn 2 \
    -genv OMP_NUM_THREADS 1 -genv MPIR_CVAR_ENABLE_HEAVY_YIELD 1 \
    .venv/bin/python -m train --model resnet20 --width 16 --dataset cifar10 --data-dir "$DATA_DIR" \
    --algorithm hierarchical --H 16 --Hb 8 --batch-size 128 --lr 0.1 --epochs 300 \
    --target-acc 0.91 --checkpoint-every 10 --out-dir "$OUT" "$@"
# Open MPI equivalent: mpirun --hostfile hosts.txt -np 16 --map-by ppr:2:node -x OMP_NUM_THREADS=1 ...
