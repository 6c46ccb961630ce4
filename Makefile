# The README's test command (`make test`) and CI's steps (.ci/run: `make lint`, then `make test`).
#
# Everything runs in a project-local virtual environment, $(VENV) (default ./.venv), created on first use with
# $(PYTHON) -m venv; nothing is ever installed into the interpreter that creates it. To use a virtual environment
# of your own instead: `make test VENV=$$VIRTUAL_ENV`. The install runs again only when pyproject.toml,
# setup.py or tool_runtime/reaper.c (compiled at install) change (the stamp file's name carries their hash).
PYTHON ?= python3
VENV ?= $(CURDIR)/.venv
PY := $(VENV)/bin/python
EXTRAS ?= cpu,test,lint
DEPS_HASH := $(shell cat pyproject.toml $(wildcard setup.py tool_runtime/reaper.c) | sha256sum | cut -c1-16)
STAMP := $(VENV)/.harmony-agent-installed-$(EXTRAS)-$(DEPS_HASH)
# The Harmony vocabulary for offline machines (CI has ../shared/vocab beside the clone); see docs/offline.md.
VOCAB ?= $(abspath ../shared/vocab)
ifneq ($(wildcard $(VOCAB)/o200k_base.tiktoken),)
export TIKTOKEN_ENCODINGS_BASE ?= $(VOCAB)
endif

.PHONY: venv install test test-fast vocab-note lint format demo bench clean-venv

venv: $(PY)

$(PY):
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null || { \
	  echo "error: '$(PYTHON)' is missing or older than Python 3.10; run: make test PYTHON=/path/to/python3.11" >&2; \
	  exit 1; }
	@echo "creating the virtual environment $(VENV) with $$($(PYTHON) -c 'import sys; print(sys.executable)')"
	@$(PYTHON) -m venv $(VENV) || { rm -rf $(VENV); \
	  echo "error: '$(PYTHON) -m venv' failed; on Debian/Ubuntu run: apt-get install python3-venv" >&2; exit 1; }

# Refuses an interpreter that is not a virtual environment (e.g. VENV=/usr), so that make never rewrites it.
$(STAMP): | $(PY)
	@$(PY) -c 'import sys; sys.exit(sys.prefix == sys.base_prefix)' || { \
	  echo "error: $(PY) is not a virtual environment: leave VENV unset (make creates ./.venv)" >&2; exit 1; }
	@echo "installing harmony-agent[$(EXTRAS)] into $(VENV) (first time: about 3 minutes, 3.5 GB)"
	$(PY) -m pip install -e '.[$(EXTRAS)]'
	@rm -f $(VENV)/.harmony-agent-installed-*
	@touch $@

install: $(STAMP)

# Everything (vLLM's CPU engine on the tiny model, the tool runtime's isolation as root). The first run builds
# the tiny model (harmony_agent/testing.py) into ~/.cache/harmony-agent: a few minutes.
test: vocab-note $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

vocab-note:
	@test -n "$$TIKTOKEN_ENCODINGS_BASE" || echo "note: TIKTOKEN_ENCODINGS_BASE is not set and $(VOCAB) does not \
	exist: openai-harmony will download its vocabulary (offline machines: see docs/offline.md)" >&2

# What needs neither vLLM nor root: under a minute.
test-fast: vocab-note $(STAMP)
	$(PY) -m pytest -m 'not vllm and not root' $(PYTEST_ARGS)

# All three checks run and report; the target fails if any found something.
lint: $(STAMP)
	@status=0; \
	echo "ruff check"; $(PY) -m ruff check . || status=1; \
	echo "ruff format --check"; $(PY) -m ruff format --check . || status=1; \
	echo "mypy"; $(PY) -m mypy || status=1; \
	exit $$status

format: $(STAMP)
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

# A problem solved with real tool calls by the tiny model on CPU (see docs/quickstart.md).
demo: vocab-note $(STAMP)
	$(PY) -m harmony_agent.demo

bench: $(STAMP)
	$(PY) bench/tool_runtime.py
	$(PY) bench/loop.py

clean-venv:
	rm -rf $(VENV)
