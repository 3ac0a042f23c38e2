# Two set-up commands for a fresh machine (see README):
#   make demo   installs, runs the flagship matrix (quick profile) on the embedded data, prints the report
#   make test   installs with the test tools and runs the tests (make test-fast: without the slow ones)
# A GPU machine keeps its own CUDA torch: `make demo TORCH=` skips the CPU wheel (or install with pip yourself).

PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
EXP ?= experiments/binning_vs_direct.yaml
PROFILE ?= quick

# pytest-xdist: one worker per CPU; tests/conftest.py groups what must stay on one worker
PYTEST ?= -n auto --dist loadgroup

.PHONY: demo test test-fast lint install clean

# --no-compile: Python compiles what is imported, on first import (pip would compile every file of 2 GB: ~70 s CPU)
$(BIN)/expmatrix: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(if $(TORCH),$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q --no-compile $(TORCH))
	$(BIN)/pip install -q --no-compile -e ".[dev]"
	touch $@

install: $(BIN)/expmatrix

demo: install
	-$(BIN)/expmatrix run $(EXP) --profile $(PROFILE)
	$(BIN)/expmatrix report $(EXP) --profile $(PROFILE)

test: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest -q -m "not slurm" $(PYTEST)
	$(BIN)/python -m pytest -q -m slurm -p no:xdist  # one local SLURM at a time, nothing else loading the machine

test-fast: install  # while you work: everything but the tests marked slow (training, processes, a scheduler)
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST)

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

clean:
	rm -rf $(VENV) runs
