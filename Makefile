# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
VENV    ?= .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.localsgd-installed
# torch is pinned in the same pip command: unpinned, pip pulls several GB of CUDA wheels.
TORCH   := torch==2.13.0
# Each rank gets one BLAS/OpenMP thread; MPICH yields the CPU while it waits (2-core machines).
export OMP_NUM_THREADS ?= 1
export OPENBLAS_NUM_THREADS ?= 1
export MKL_NUM_THREADS ?= 1
export MPIR_CVAR_ENABLE_HEAVY_YIELD ?= 1
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: setup demo lint test bench bench-comm bench-sim bench-convex bench-cluster gpu-check clean

setup: $(STAMP)

$(STAMP): setup.py
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet "$(TORCH)" -e ".[mpich,test]"
	touch $(STAMP)

# The main job on its embedded default: post-local SGD, 16 ranks, synthetic data (no download).
demo: setup
	$(VENV)/bin/mpirun -n 16 $(PY) -m train

# ruff (the rule set in pyproject.toml) and mypy (strict on comm/, cluster/ and the public averager).
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

test: setup lint
	$(PY) -m pytest -q tests

bench: bench-comm bench-sim bench-convex

# Ours vs native MPI_Allreduce at K = 2, 4, 8 (ratios, pair by pair): the figures in the README.
bench-comm: setup
	$(PY) benchmarks/allreduce_vs_native.py

# auto vs native MPI_Allreduce across emulated nodes (root): the cluster table in the README.
bench-cluster: setup
	$(PY) benchmarks/cluster_auto_vs_native.py

bench-sim: setup
	$(PY) benchmarks/sim_speed.py

bench-convex: setup
	$(PY) benchmarks/convex_grid_speed.py

# The GPU paths on a machine with a CUDA GPU (no venv build: GPU machines bring their own CUDA torch and may have no
# network); without CUDA it says why and exits 0. Results under runs/gpu-check-<time> (docs/gpu.md).
gpu-check:
	bash benchmarks/gpu_check.sh

clean:
	rm -rf $(VENV) *.egg-info
