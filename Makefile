# make train [ARGS="overrides"] | make test | make bench
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
ARGS   ?=

.PHONY: install lint train test test-fast bench tensorboard clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e ".[dev,sweep]"
	touch $@

install: $(VENV)/.installed

train: install
	$(PY) -m vae_lightning.train $(ARGS)

lint: install
	$(VENV)/bin/ruff check .

test: install lint
	$(PY) -m pytest -q -ra

test-fast: install
	$(PY) -m pytest -q -ra -m "not slow"

bench: install
	$(PY) benchmarks/bench_train.py $(ARGS)

tensorboard: install
	$(VENV)/bin/tensorboard --logdir outputs

clean:
	rm -rf outputs multirun lightning_logs .pytest_cache
