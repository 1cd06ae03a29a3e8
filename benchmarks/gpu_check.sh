#!/usr/bin/env bash
# The GPU paths on a machine with a CUDA GPU, in one run of at most 8 minutes: `make gpu-check` or
#   bash benchmarks/gpu_check.sh [RESULTS_DIR]
# Results (one log per part, JSON/markdown figures, summary.md) go to RESULTS_DIR (default: $OUT if set, else
# runs/gpu-check-<UTC time>). Without CUDA it says why in one line, writes that to summary.md and exits 0.
#
# Environment: PYTHON (default: .venv/bin/python if it exists, else python3) must be a Python whose torch sees the
# GPU; MPIRUN (default: beside PYTHON, else on PATH). A missing package (simpy, mpi4py, mpich for mpirun, pytest,
# pytest-timeout) is installed from wheels in ./.whl when that folder exists (a machine without network), else
# the parts that need it are reported as skipped.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${PYTHON:-}
if [[ -z "$PY" ]]; then
    if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi
fi
RES=${1:-${OUT:-runs/gpu-check-$(date -u +%Y%m%d-%H%M%S)}}
mkdir -p "$RES"
SUMMARY="$RES/summary.md"
export OMP_NUM_THREADS=1 MPIR_CVAR_ENABLE_HEAVY_YIELD=1 PYTHONUNBUFFERED=1
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
T0=$(date +%s)

note() { echo "$*" | tee -a "$SUMMARY"; }

{
    echo "# GPU check, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo
    echo "commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown), python $("$PY" -c 'import sys; print(sys.version.split()[0])' 2>&1)"
    echo
} > "$SUMMARY"

if ! line=$("$PY" benchmarks/gpu_check.py cuda 2>&1); then
    note "skipped: ${line##*$'\n'}"
    note "nothing else was run; run this on a machine with a CUDA GPU (results would go to $RES)"
    exit 0
fi
note "$line"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >> "$SUMMARY" 2>/dev/null

# Missing packages from carried wheels (no network on the GPU machines); they go to a private site folder.
missing=$("$PY" - <<'EOF'
import importlib.util
print(" ".join(m for m in ("simpy", "mpi4py", "pytest", "pytest_timeout", "tqdm", "scipy")
               if importlib.util.find_spec(m) is None))
EOF
)
if [[ -n "$missing" && -d .whl ]]; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/localsgd-site .whl/*.whl \
        > "$RES/pip.log" 2>&1 && export PYTHONPATH="$PYTHONPATH:/tmp/localsgd-site" PATH="/tmp/localsgd-site/bin:$PATH"
    missing=$("$PY" -c 'import importlib.util as u; print(" ".join(m for m in ("simpy","mpi4py","pytest","pytest_timeout","tqdm","scipy") if u.find_spec(m) is None))')
fi
MPIRUN=${MPIRUN:-$(dirname "$(command -v "$PY")")/mpirun}
[[ -x "$MPIRUN" ]] || MPIRUN=$(command -v mpirun || true)
[[ -n "$missing" ]] && note "missing Python packages: $missing (the parts that need them are skipped)"
[[ -z "$MPIRUN" ]] && note "no mpirun found (set MPIRUN, or carry the mpich wheel in .whl): MPI parts skipped"

declare -a ROWS
part() {  # part NAME TIMEOUT_S CMD...: run with a time limit, log to RES/NAME.log, record the outcome
    local name=$1 limit=$2
    shift 2
    local t=$(date +%s)
    timeout --kill-after=10 "$limit" "$@" > "$RES/$name.log" 2>&1
    local rc=$? took=$(( $(date +%s) - t ))
    local verdict=passed
    [[ $rc -ne 0 ]] && verdict="FAILED (exit $rc)"
    [[ $rc -eq 124 || $rc -eq 137 ]] && verdict="TIMED OUT after ${limit} s"
    ROWS+=("| $name | $verdict | ${took} s | \`$*\` |")
    echo "$name: $verdict in ${took} s"
}
skip() { ROWS+=("| $1 | skipped: $2 | - | - |"); echo "$1: skipped ($2)"; }
mpi_ok() { [[ -n "$MPIRUN" && " $missing " != *" mpi4py "* && " $missing " != *" simpy "* ]]; }

# 1. comm on CUDA tensors at 1-4 ranks sharing the GPU (staged through pinned host memory unless MPI is CUDA-aware)
if mpi_ok && [[ " $missing " != *" pytest "* ]]; then
    part cuda-tests 150 "$PY" -m pytest -q -p no:cacheprovider tests/parallel/test_comm_cuda.py -rA
else
    skip cuda-tests "needs mpirun, mpi4py, simpy and pytest"
fi

# 2. The trainer on the GPU: ResNet-20 (width 16) on 32 x 32 synthetic images, 256 steps per worker; verify bitwise.
TRAIN=(-m train --model resnet20 --width 16 --synthetic-size 32 --synthetic-train 8192 --synthetic-test 1024
       --batch-size 64 --algorithm local --H 4 --device cuda --no-progress --eval-every 1 --target-acc 0.5)
if mpi_ok; then
    for n in 1 4; do
        epochs=$(( 2 * n ))   # 8192 / n samples per worker at batch 64: 128 / n steps per epoch -> 256 steps
        part "train-n$n" 150 "$MPIRUN" -n "$n" "$PY" "${TRAIN[@]}" --epochs "$epochs" --out-dir "$RES/train-n$n"
        part "verify-n$n" 60 "$PY" -m train verify "$RES/train-n$n"
    done
else
    skip train "needs mpirun, mpi4py and simpy"
fi

# 3. train.LocalSGD with the torch backend on CUDA tensors: NCCL at world size 1, gloo on CUDA tensors at 2 and 4.
for n in 1 2 4; do
    part "averager-torch-$n" 90 "$PY" -m torch.distributed.run --standalone --nproc-per-node "$n" \
        benchmarks/gpu_check.py averager --out "$RES"
done

# 4. ResNet-20 forward+backward at batch 32-1024 (the method's table of step times, for the compute model).
part resnet20-steps 90 "$PY" benchmarks/gpu_check.py steps --out "$RES"

# 5. The virtual-worker engine at K = 4-64 on the GPU, where this checkout has it.
if "$PY" -m train --help 2>/dev/null | grep -q -- "--engine"; then
    for k in 4 16 64; do
        part "virtual-K$k" 60 "$PY" -m train --engine virtual --workers "$k" --model resnet20 --width 16 \
            --synthetic-size 32 --synthetic-train $(( 64 * k * 8 )) --synthetic-test 512 --batch-size 64 \
            --algorithm local --H 4 --epochs 4 --device cuda --no-progress --out-dir "$RES/virtual-K$k"
    done
else
    skip virtual "this checkout has no --engine virtual"
fi

{
    echo
    echo "| part | outcome | time | command |"
    echo "| --- | --- | --- | --- |"
    printf '%s\n' "${ROWS[@]}"
    echo
    [[ -f "$RES/resnet20_steps.md" ]] && cat "$RES/resnet20_steps.md"
    for s in "$RES"/train-n*/summary.json "$RES"/virtual-K*/summary.json; do
        [[ -f "$s" ]] && "$PY" -c "import json,sys; s=json.load(open(sys.argv[1])); print(f\"- {sys.argv[1]}: {s.get('engine','mpi')} K={s['world_size']} {s['steps_done']} steps, {s['samples_per_s']:.0f} samples/s, final test acc {s['final']['test_acc']}\")" "$s"
    done
    echo
    echo "total $(( $(date +%s) - T0 )) s"
} >> "$SUMMARY"
echo "summary: $SUMMARY"
grep -q "FAILED\|TIMED OUT" "$SUMMARY" && exit 1
exit 0
