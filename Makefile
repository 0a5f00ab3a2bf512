# emotionsumm: `make train` and `make test` work on a fresh machine (they create .venv first).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
ARGS   ?=
NPROC  ?= 2
DIR    ?= outputs

.PHONY: help setup train train-ddp test lint tensorboard clean

help:
	@echo "make train [ARGS='trainer.max_epochs=2 ...']   train the default experiment (sets up .venv first)"
	@echo "make test                                       run the test suite (sets up .venv first)"
	@echo "make train-ddp NPROC=2 [ARGS=...]               DDP on one machine with torchrun"
	@echo "make setup | lint | tensorboard [DIR=outputs] | clean"

# .venv with the package (editable) and the dev extra; redone when pyproject.toml changes
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

train: $(STAMP)
	$(PY) -m emotionsumm.train $(ARGS)

train-ddp: $(STAMP)
	$(VENV)/bin/torchrun --standalone --nproc_per_node=$(NPROC) -m emotionsumm.train $(ARGS)

test: $(STAMP)
	$(PY) -m pytest $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check emotionsumm tests benchmarks

tensorboard: $(STAMP)
	$(VENV)/bin/tensorboard --logdir $(DIR)

clean:
	rm -rf outputs multirun .cache .pytest_cache .ruff_cache build *.egg-info
