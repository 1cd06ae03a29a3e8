#!/usr/bin/env bash
# Post-local SGD: mini-batch SGD until the first learning-rate decay, then local SGD with H = 16.
# Environment knobs (all optional): NP ranks, MPIRUN launcher, PYTHON interpreter, OUT run folder.
# Extra arguments are passed on to python -m train (the tests add a tiny budget this way).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${MPIRUN:=.venv/bin/mpirun}" "${PYTHON:=.venv/bin/python}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" MPIR_CVAR_ENABLE_HEAVY_YIELD="${MPIR_CVAR_ENABLE_HEAVY_YIELD:-1}"
: "${NP:=16}" "${OUT:=runs/example-postlocal-$(date -u +%Y%m%d-%H%M%S)}"
"$MPIRUN" -n "$NP" "$PYTHON" -m train --algorithm postlocal --H 16 --out-dir "$OUT" "$@"
