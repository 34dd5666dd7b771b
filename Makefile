# One-command set-up: a .venv with the CPU build of torch first (so pip never pulls
# a multi-GB CUDA wheel), then segmenter itself with its extras.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# With a GPU: make setup TORCH_CPU=torch (any build pyproject's range accepts).
TORCH_CPU ?= torch==2.13.0
EXTRAS ?= test,bench,sweep,minilm,serve

.PHONY: setup train test test-all bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_CPU)"
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	touch $@

setup: $(VENV)/.installed

train: setup  ## the README's main command
	$(PY) scripts/train.py attention=localized trainer.max_epochs=2

test: setup  ## the default test suite (CI runs this)
	$(PY) -m pytest -q -m "not slow"

test-all: setup
	$(PY) -m pytest -q -m "slow or not slow"

bench: setup
	$(PY) scripts/benchmark.py

clean:
	rm -rf $(VENV) outputs .pytest_cache
