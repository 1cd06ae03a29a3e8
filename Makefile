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

.PHONY: setup demo test test-fast bench clean

setup: $(STAMP)

$(STAMP): setup.py
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet "$(TORCH)" -e ".[mpich,test]"
	touch $(STAMP)

demo: setup
	$(VENV)/bin/mpirun -n 4 $(PY) -m mpi4py -m comm bench --sizes 4K,64K,1M,8M --iters 10

test: setup
	$(PY) -m pytest -q tests

bench: setup
	$(VENV)/bin/mpirun -n 4 $(PY) -m mpi4py benchmarks/allreduce_vs_native.py

clean:
	rm -rf $(VENV) *.egg-info
