#!/usr/bin/env bash
# Multi-node launch with MPICH/Hydra and a hostfile: 8 nodes x 2 GPUs, hierarchical local SGD on the REAL nodes
# (no --gpus-per-node: comm.Topology splits by shared memory), CIFAR-10, ResNet-20.
# HOSTFILE holds one line per node, e.g. "node01:2" (the format `mpirun -f` takes). Every node needs the same
# checkout and data path. Each rank takes cuda:(local rank % GPUs per node); use --device cpu to force CPUs.
# Environment knobs (all optional): HOSTFILE, NP ranks, PPN ranks per node, MPIRUN, PYTHON, DATA_DIR, OUT.
# Extra arguments are passed on to python -m train. Try it on one machine, as root, on an emulated cluster:
#   python -m cluster run --nodes 2 --ranks-per-node 2 --rate 1gbit --no-mpirun -- \
#       env NP=4 bash mpirun_examples/hostfile_multinode.sh --dataset synthetic --model resnet8 --epochs 1
# (tests/cluster/test_cluster_train.py runs exactly that, with a tiny budget).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${HOSTFILE:=hosts.txt}" "${NP:=16}" "${PPN:=2}" "${MPIRUN:=mpirun}" "${PYTHON:=.venv/bin/python}"
: "${DATA_DIR:=data/cifar10}" "${OUT:=runs/cifar10-hier-8x2}"
"$MPIRUN" -f "$HOSTFILE" -n "$NP" -ppn "$PPN" \
    -genv OMP_NUM_THREADS 1 -genv MPIR_CVAR_ENABLE_HEAVY_YIELD 1 \
    "$PYTHON" -m train --model resnet20 --width 16 --dataset cifar10 --data-dir "$DATA_DIR" \
    --algorithm hierarchical --H 16 --Hb 8 --batch-size 128 --lr 0.1 --epochs 300 \
    --target-acc 0.91 --checkpoint-every 10 --out-dir "$OUT" "$@"
# Open MPI equivalent: mpirun --hostfile hosts.txt -np 16 --map-by ppr:2:node -x OMP_NUM_THREADS=1 ...
