# Quick start: `make demo` runs the demo, `make test` runs the test suite. Both create a local
# virtual environment in .venv with the package installed (editable) on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test bench clean

$(BIN)/activate: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e ".[test]"
	touch $(BIN)/activate

demo: $(BIN)/activate
	$(BIN)/python -m jaxspect demo --overwrite

test: $(BIN)/activate
	$(BIN)/python -m pytest -q

bench: $(BIN)/activate
	$(BIN)/python -m benchmarks.projector

clean:
	rm -rf $(VENV) .pytest_cache jaxspect-demo-output
