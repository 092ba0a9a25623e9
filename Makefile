# Two commands matter: `make demo` (train the quick preset and print its accuracy) and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Where there is no internet, point CIFARLAB_DATA at a local copy (see README).
DEMO_ARGS ?=
# pytest workers: one per core (pytest-xdist); a hung test fails after TEST_TIMEOUT seconds (pytest-timeout).
TEST_WORKERS ?= auto
TEST_TIMEOUT ?= 900

.PHONY: venv demo test test-fast lint typecheck package-check clean

$(BIN)/cifarlab: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q -e .
	touch $@

# Test extras (pytest, xdist, timeout, linters, Ray for the sweep engine, ONNX for export) only where tests run.
$(VENV)/.test-deps: $(BIN)/cifarlab
	$(BIN)/pip install -q -e '.[test,ray,export]'
	touch $@

venv: $(BIN)/cifarlab

demo: venv
	$(BIN)/cifarlab train quick $(DEMO_ARGS)

test: $(VENV)/.test-deps
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --timeout $(TEST_TIMEOUT) tests

# The tests not marked slow (@pytest.mark.slow): a few minutes, for while you work.
test-fast: $(VENV)/.test-deps
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --timeout $(TEST_TIMEOUT) -m "not slow" tests

# The layering contract (import-linter), the API's types (mypy) and the style rules (ruff), all configured in pyproject.toml.
lint: $(VENV)/.test-deps
	$(BIN)/lint-imports
	$(BIN)/mypy
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

# The Python API's types (mypy, configured in pyproject.toml): what users' type checkers see through py.typed.
typecheck: $(VENV)/.test-deps
	$(BIN)/mypy

# A user's install: build the wheel, install it (not editable) into a fresh venv, run it outside the checkout.
package-check: $(VENV)/.test-deps
	bash .ci/package_check.sh

clean:
	rm -rf $(VENV) runs .pytest_cache dist build
