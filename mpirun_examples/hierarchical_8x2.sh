#!/usr/bin/env bash
# Hierarchical local SGD on an emulated 8x2 cluster: block syncs every H = 2 steps inside virtual nodes of 2 ranks, a global sync every Hb = 4 block syncs.
# Environment knobs (all optional): NP ranks, MPIRUN launcher, PYTHON interpreter, OUT run folder.
# Extra arguments are passed on to python -m train (the tests add a tiny budget this way).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${MPIRUN:=.venv/bin/mpirun}" "${PYTHON:=.venv/bin/python}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" MPIR_CVAR_ENABLE_HEAVY_YIELD="${MPIR_CVAR_ENABLE_HEAVY_YIELD:-1}"
: "${NP:=16}" "${OUT:=runs/example-hierarchical_8x2-$(date -u +%Y%m%d-%H%M%S)}"
"$MPIRUN" -n "$NP" "$PYTHON" -m train --algorithm hierarchical --H 2 --Hb 4 --gpus-per-node 2 --out-dir "$OUT" "$@"
