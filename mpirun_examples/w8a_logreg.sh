#!/usr/bin/env bash
# Logistic regression on w8a (LIBSVM, read from ../shared/data by path) with local SGD, H = 4, B_loc = 16.
# Environment knobs (all optional): NP ranks, MPIRUN launcher, PYTHON interpreter, OUT run folder.
# Extra arguments are passed on to python -m train (the tests add a tiny budget this way).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${MPIRUN:=.venv/bin/mpirun}" "${PYTHON:=.venv/bin/python}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" MPIR_CVAR_ENABLE_HEAVY_YIELD="${MPIR_CVAR_ENABLE_HEAVY_YIELD:-1}"
: "${NP:=16}" "${OUT:=runs/example-w8a_logreg-$(date -u +%Y%m%d-%H%M%S)}"
: "${DATA_DIR:=../shared/data}"
"$MPIRUN" -n "$NP" "$PYTHON" -m train --model logreg --dataset w8a --data-dir "$DATA_DIR" --algorithm local --H 4 --batch-size 16 --lr 0.5 --weight-decay 0 --epochs 2 --target-acc 0.98 --out-dir "$OUT" "$@"
