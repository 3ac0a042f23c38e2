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

# torch from pip, which reads pip's configuration (a local CPU wheel where the machine has one); the rest from uv:
# 10 s instead of pip's 50 s here, the same versions (pip where uv cannot be installed). Neither compiles
# bytecode: Python compiles a module when it is first imported and keeps the bytecode, which it may only do
# where PYTHONDONTWRITEBYTECODE is unset (hence unexport: set, every process would compile torch again, 9 s
# instead of 5 s). The import below compiles what every job needs once, so that parallel test workers do not
# each compile it; pip itself would compile every file of ~2 GB, ~50 s on one core.
unexport PYTHONDONTWRITEBYTECODE

$(BIN)/expmatrix: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(if $(TORCH),$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q --no-compile $(TORCH))
	$(BIN)/pip install -q uv && $(BIN)/uv pip install -q --python $(BIN)/python -e ".[dev]" \
		|| $(BIN)/pip install -q --no-compile -e ".[dev]"
	$(BIN)/python -c "import torch.optim, torch._dynamo, expmatrix.executors.worker, expmatrix.cli"
	touch $@

install: $(BIN)/expmatrix

demo: install
	-$(BIN)/expmatrix run $(EXP) --profile $(PROFILE)
	$(BIN)/expmatrix report $(EXP) --profile $(PROFILE)

# The tests of the local SLURM run in one process of their own (one scheduler, fixed ports), beside the others:
# much of their time is spent waiting for the scheduler. Their output follows the others'. That process collects
# only the test files that name SLURM (every test marked slurm does), not the whole suite.
SLURM_FILES = $(shell grep -rli slurm tests --include='test_*.py')

test: install
	$(BIN)/ruff check src tests benchmarks
	@log=$$(mktemp); $(BIN)/python -m pytest -q -m slurm -p no:xdist $(SLURM_FILES) >$$log 2>&1 & slurm=$$!; \
	$(BIN)/python -m pytest -q -m "not slurm" $(PYTEST); rest=$$?; \
	wait $$slurm; code=$$?; echo "---- the local-SLURM tests (-m slurm):"; cat $$log; rm -f $$log; \
	[ $$rest -eq 0 ] && [ $$code -eq 0 ]

test-fast: install  # while you work: everything but the tests marked slow (training, processes, a scheduler)
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST)

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

clean:
	rm -rf $(VENV) runs
