# Two set-up commands for a fresh machine (see README):
#   make demo   installs, runs the flagship matrix (quick profile) on the embedded data, prints the report
#   make test   installs with the test tools and runs the tests
# A GPU machine keeps its own CUDA torch: `make demo TORCH=` skips the CPU wheel (or install with pip yourself).

PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
EXP ?= experiments/binning_vs_direct.yaml
PROFILE ?= quick

.PHONY: demo test lint install clean

$(BIN)/expmatrix: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(if $(TORCH),$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q $(TORCH))
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

install: $(BIN)/expmatrix

demo: install
	-$(BIN)/expmatrix run $(EXP) --profile $(PROFILE)
	$(BIN)/expmatrix report $(EXP) --profile $(PROFILE)

test: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

clean:
	rm -rf $(VENV) runs
