#!/usr/bin/env bash
# Mini-batch SGD at K = 16: the gradients are all-reduced after every step.
# Environment knobs (all optional): NP ranks, MPIRUN launcher, PYTHON interpreter, OUT run folder.
# Extra arguments are passed on to python -m train (the tests add a tiny budget this way).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${MPIRUN:=.venv/bin/mpirun}" "${PYTHON:=.venv/bin/python}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" MPIR_CVAR_ENABLE_HEAVY_YIELD="${MPIR_CVAR_ENABLE_HEAVY_YIELD:-1}"
: "${NP:=16}" "${OUT:=runs/example-minibatch_k16-$(date -u +%Y%m%d-%H%M%S)}"
"$MPIRUN" -n "$NP" "$PYTHON" -m train --algorithm minibatch --batch-size 32 --out-dir "$OUT" "$@"
