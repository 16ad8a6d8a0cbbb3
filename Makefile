# Two commands on a fresh machine: `make demo` (set up, then fine-tune the bundled tiny model
# end to end on the CPU) and `make test` (set up, then run the test suite).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Pinned so that pip takes one known build: on a GPU box PyPI's Linux wheel is the CUDA build;
# on a CPU-only box, point TORCH at a CPU wheel (e.g. TORCH="torch==2.13.0 --index-url
# https://download.pytorch.org/whl/cpu") to avoid downloading CUDA libraries.
TORCH  ?= torch==2.13.0
export HF_HUB_OFFLINE ?= 1

.PHONY: setup demo test clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[test]'
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(BIN)/workbench --run demo

test: setup
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) runs .pytest_cache
