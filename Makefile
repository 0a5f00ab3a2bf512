# emotionsumm: `make train` and `make test` work on a fresh machine (they create .venv first).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
ARGS   ?=
NPROC  ?= 2
DIR    ?= outputs
K      ?= 5
TEST_WORKERS ?= 2
GLUE_TASKS ?= glue_cola,glue_sst2,glue_mrpc,glue_qqp,glue_stsb,glue_mnli,glue_qnli,glue_rte,glue_wnli

.PHONY: help setup train train-ddp sweep cv glue report test test-fast test-gpu lint tensorboard clean

help:
	@echo "make train [ARGS='trainer.max_epochs=2 ...']   train the default experiment (sets up .venv first)"
	@echo "make test                                       run the test suite (sets up .venv first)"
	@echo "make test-fast                                  the unit tests only (about a minute)"
	@echo "make test-gpu                                   the GPU tier (tests/gpu: fp16/bf16, resume, workers, compile, DDP)"
	@echo "make train-ddp NPROC=2 [ARGS=...]               DDP on one machine with torchrun"
	@echo "make sweep ARGS='optimizer.lr=1e-4,3e-4 seed=0,1,2'  Hydra multirun (resumable; report.md at the end)"
	@echo "make cv K=5 [ARGS=...]                          k-fold cross-validation: all folds, mean +- std"
	@echo "make glue [ARGS='model=text_minilm']            the nine GLUE tasks (paths.glue_dir); report.md: the GLUE table"
	@echo "make report DIR=<run or sweep dir>              report.md, report.csv and PNG plots in DIR"
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

# a multirun; rerun the same command with hydra.sweep.dir=<its dir> to skip finished jobs and resume the rest
sweep: $(STAMP)
	$(PY) -m emotionsumm.train --multirun $(ARGS)

# every fold of a K-fold split of the training data; the sweep report aggregates them (mean +- std)
cv: $(STAMP)
	$(PY) -m emotionsumm.train --multirun data.num_folds=$(K) 'data.fold=range(0,$(K))' $(ARGS)

# the GLUE tasks as one multirun (GLUE_TASKS, from paths.glue_dir; data.demo=true: generated files); the sweep
# report gives each task's official metrics and the GLUE average
glue: $(STAMP)
	$(PY) -m emotionsumm.train --multirun experiment=glue data=$(GLUE_TASKS) $(ARGS)

report: $(STAMP)
	$(PY) -m emotionsumm.report $(DIR)

# the suite on TEST_WORKERS processes (pytest-xdist; 2 = this machine's cores; TEST_WORKERS=0: one process)
test: $(STAMP)
	$(PY) -m pytest -n $(TEST_WORKERS) $(ARGS)

# the unit layer only (no training, no subprocess runs): about a minute
test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow and not ddp" $(ARGS)

# the GPU tier on a machine with CUDA (one process: the tests share the device; 2-GPU DDP needs 2 devices);
# without CUDA every test is skipped with the reason
test-gpu: $(STAMP)
	$(PY) -m pytest tests/gpu -m gpu -rs $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check emotionsumm tests benchmarks

tensorboard: $(STAMP)
	$(VENV)/bin/tensorboard --logdir $(DIR)

clean:
	rm -rf outputs multirun .cache .pytest_cache .ruff_cache build *.egg-info
