#!/usr/bin/env bash
# The 3-layer LSTM language model (hidden 650, BPTT 30) on WikiText-2 with post-local SGD, H = 16 after the
# switch: each worker reads its contiguous shard of the text with a carried hidden state (--lm-state carry,
# the default on wikitext2). DATA_DIR must hold wiki.{train,valid,test}.tokens (or a wikitext-2/ folder).
# Optimiser settings of the common word-language-model recipe (SGD at lr 20 without momentum, gradients clipped
# to norm 0.25); they are not tuned here: no WikiText-2 copy is on the machine this was written on.
# Environment knobs (all optional): NP ranks, MPIRUN launcher, PYTHON interpreter, OUT run folder, DATA_DIR.
# Extra arguments are passed on to python -m train (the tests add a tiny budget this way).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${MPIRUN:=.venv/bin/mpirun}" "${PYTHON:=.venv/bin/python}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" MPIR_CVAR_ENABLE_HEAVY_YIELD="${MPIR_CVAR_ENABLE_HEAVY_YIELD:-1}"
: "${NP:=16}" "${OUT:=runs/example-lstm_wikitext2-$(date -u +%Y%m%d-%H%M%S)}"
: "${DATA_DIR:=data/wikitext-2}"
"$MPIRUN" -n "$NP" "$PYTHON" -m train --model lstm --dataset wikitext2 --data-dir "$DATA_DIR" --bptt 30 \
    --dropout 0.4 --batch-size 20 --lr 20 --lr-scaling none --lr-warmup-epochs 0 --momentum 0 \
    --clip-grad-norm 0.25 --weight-decay 0 --algorithm postlocal --H 16 --epochs 40 --target-acc 0.2 \
    --out-dir "$OUT" "$@"
