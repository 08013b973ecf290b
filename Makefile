# sapnet developer commands. Each target creates .venv and installs the package when needed.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.sapnet-installed
SHARED ?= ../shared

.PHONY: setup test test-all lint demo bench clean

# TORCH_INDEX: a wheel index to take torch and torchvision from first, e.g. PyTorch's CPU-only wheels
# (make setup TORCH_INDEX=https://download.pytorch.org/whl/cpu); empty: whatever pip resolves (see README).
TORCH_INDEX ?=

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(if $(TORCH_INDEX),$(PY) -m pip install --quiet --disable-pip-version-check torch==2.14.1 torchvision==0.29.1 --index-url $(TORCH_INDEX))
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

setup: $(STAMP)

## Fast test suite (slow tests excluded; golden tests run when $(SHARED) exists).
test: $(STAMP)
	SAPNET_SHARED=$(SHARED) $(PY) -m pytest

## Everything, slow tests included.
test-all: $(STAMP)
	SAPNET_SHARED=$(SHARED) $(PY) -m pytest -m ''

## Style (ruff) and types (mypy, settings in pyproject.toml).
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

## The main job in a few CPU minutes: train on the embedded demo set, evaluate, write before/after grids
## (and derain real Rain100L images with the public checkpoint when $(SHARED) exists).
demo: $(STAMP)
	$(VENV)/bin/sapnet demo --shared $(SHARED) --out results/demo

## Speed and quality benchmarks (results in benchmarks/RESULTS.md; tiling: benchmarks/tiling.py --large, ~25 min).
bench: $(STAMP)
	$(PY) benchmarks/inference.py --sizes 481x321
	$(PY) benchmarks/no_reference.py
	$(PY) benchmarks/evaluate.py

clean:
	rm -rf $(VENV) results .pytest_cache .ruff_cache
