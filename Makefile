# trtkit: `make demo` runs the main job end to end, `make test` runs the tests.
# Both create .venv on first use; nothing is installed outside it.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# torch is pinned first so the extras cannot pull a different (CUDA, multi-GB) build.
TORCH  ?= torch==2.13.0

.PHONY: install demo test gpu-test clean

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

test: $(STAMP)
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) out
