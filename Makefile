# Two commands matter: `make demo` (train the quick preset and print its accuracy) and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Where there is no internet, point CIFARLAB_DATA at a local copy (see README).
DEMO_ARGS ?=

.PHONY: venv demo test clean

$(BIN)/cifarlab: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q -e .
	touch $@

# Test extras (pytest, Ray for the sweep engine, ONNX for export) only where tests run.
$(VENV)/.test-deps: $(BIN)/cifarlab
	$(BIN)/pip install -q -e '.[test,ray,export]'
	touch $@

venv: $(BIN)/cifarlab

demo: venv
	$(BIN)/cifarlab train quick $(DEMO_ARGS)

test: $(VENV)/.test-deps
	$(BIN)/python -m pytest -q tests

clean:
	rm -rf $(VENV) runs .pytest_cache
