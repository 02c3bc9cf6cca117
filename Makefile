# Two commands: `make run` (the demo on the embedded default) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test bench clean

$(STAMP): pyproject.toml examples/ecs-worker-hello/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]' -e examples/ecs-worker-hello
	touch $@

run: $(STAMP)
	$(BIN)/ecs-worker demo

test: $(STAMP)
	$(BIN)/python -m pytest -q tests examples/ecs-worker-hello/tests

bench: $(STAMP)
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) build *.egg-info
