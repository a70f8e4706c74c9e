# make train|eval|sample [ARGS="overrides"] | make summarize ARGS=<sweep folder> | make test | make bench
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
ARGS   ?=
# make test runs one pytest-xdist worker per core, each on cores of its own (tests/conftest.py);
# at most 8: each holds torch and Lightning in memory twice (itself and its fork server)
TEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 1); echo $$(( n < 8 ? n : 8 )))

.PHONY: install lint train eval sample summarize test test-fast bench tensorboard clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e ".[dev,sweep,loggers]"
	touch $@

install: $(VENV)/.installed

train: install
	VAE_LIGHTNING_MAKE=train $(PY) -m vae_lightning.train $(ARGS)

eval: install
	$(PY) -m vae_lightning.eval $(ARGS)

sample: install
	$(PY) -m vae_lightning.sample $(ARGS)

summarize: install
	$(PY) -m vae_lightning.summarize $(ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check vae_lightning tests benchmarks

test: install lint
	$(PY) -m pytest -q -ra -n $(TEST_WORKERS) --dist loadfile

test-fast: install
	$(PY) -m pytest -q -ra -n $(TEST_WORKERS) --dist loadfile -m "not slow"

bench: install
	$(PY) benchmarks/bench_train.py $(ARGS)

tensorboard: install
	$(VENV)/bin/tensorboard --logdir outputs

clean:
	rm -rf outputs multirun lightning_logs .pytest_cache
