#!/usr/bin/env bash
# Slow network: every global sync costs an extra DELAY seconds (the paper used 1 s and 50 s); fewer global syncs pay it less often.
# Environment knobs (all optional): NP ranks, MPIRUN launcher, PYTHON interpreter, OUT run folder.
# Extra arguments are passed on to python -m train (the tests add a tiny budget this way).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${MPIRUN:=.venv/bin/mpirun}" "${PYTHON:=.venv/bin/python}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" MPIR_CVAR_ENABLE_HEAVY_YIELD="${MPIR_CVAR_ENABLE_HEAVY_YIELD:-1}"
: "${NP:=16}" "${OUT:=runs/example-slow_network-$(date -u +%Y%m%d-%H%M%S)}"
: "${DELAY:=1}"
"$MPIRUN" -n "$NP" "$PYTHON" -m train --algorithm hierarchical --H 2 --Hb 4 --gpus-per-node 2 --global-sync-delay "$DELAY" --out-dir "$OUT" "$@"
