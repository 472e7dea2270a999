# GAD Studio — the two commands users need are `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# The CPU build of torch; CPU machines have it in the local wheel cache, so an
# install never pulls a multi-GB CUDA build. GPU nodes: see docs/deployment.md.
TORCH_SPEC ?= torch==2.13.0
PIP_FLAGS ?=

.PHONY: setup test lint demo services clean lock

setup: $(VENV)/.installed

# The CPU set of the lock (requirements/cpu.txt, exported from uv.lock by `make lock`) pins
# every package; pip takes it as constraints so that torch stays the CPU build above.
$(VENV)/.installed: pyproject.toml requirements/cpu.txt
	@test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install $(PIP_FLAGS) --quiet --upgrade pip
	$(BIN)/pip install $(PIP_FLAGS) --quiet "$(TORCH_SPEC)"
	$(BIN)/pip install $(PIP_FLAGS) --quiet -c requirements/cpu.txt -e ".[dev]" "$(TORCH_SPEC)"
	$(BIN)/python -m webapp.tools.copy_static
	@touch $@

services:
	@bash scripts/services.sh

# Re-resolve after editing pyproject.toml's dependencies: uv.lock, and the two sets
# exported from it (CPU: what CI and `make setup` install; GPU: what GPU nodes install).
lock: setup
	$(BIN)/uv lock
	$(BIN)/uv export --frozen --extra dev $(EXPORT_FLAGS) -o requirements/cpu.txt
	$(BIN)/uv export --frozen --extra gpu --extra trackers $(EXPORT_FLAGS) -o requirements/gpu.txt
EXPORT_FLAGS := --no-hashes --no-emit-project --no-annotate --quiet

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	DJANGO_DEBUG=1 $(BIN)/mypy

# OMP_NUM_THREADS=1: tiny models on a 2-core machine shared by the test process, the
# trainer subprocesses and `transformers serve`; BLAS threads spinning against each
# other made a tiny model's forward+backward 15x slower (4.0 s vs 0.27 s, measured once
# on a busy 2-core machine; bench/train_step.py pins one thread for the same reason).
test: setup services
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	DJANGO_DEBUG=1 $(BIN)/mypy
	DATABASE_URL=$${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/gad} \
	CELERY_BROKER_URL=$${CELERY_BROKER_URL:-redis://127.0.0.1:6379/0} \
	DJANGO_DEBUG=1 OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} HF_HUB_OFFLINE=1 \
	$(BIN)/pytest $(PYTEST_ARGS)

demo: setup services
	@bash scripts/demo.sh

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
