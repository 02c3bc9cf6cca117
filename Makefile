# Two commands: `make run` (the demo on the embedded default) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test bench clean

$(STAMP): pyproject.toml examples/ecs-worker-hello/pyproject.toml
	@echo "setting up $(VENV) (pip output: $(VENV)/install.log)"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@# pip's and setuptools' chatter goes to a log, shown only when the install fails.
	@$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip > $(VENV)/install.log 2>&1 \
	  && $(BIN)/python -m pip install -q --disable-pip-version-check -e '.[test]' -e examples/ecs-worker-hello \
	  >> $(VENV)/install.log 2>&1 || { cat $(VENV)/install.log; exit 1; }
	@touch $@

run: $(STAMP)
	$(BIN)/ecs-worker demo

# Only the project's own example among installed plugins: a broken third-party one cannot fail the suite.
# In parallel: most tests wait on worker processes and emulators, so JOBS beats the core count.
# One part: make test TESTS=tests/test_slb.py (any pytest arguments; JOBS=0 runs in this process).
JOBS ?= 4
TESTS ?= tests examples/ecs-worker-hello/tests
test: $(STAMP)
	ECS_WORKER_LOAD_PLUGINS=hello $(BIN)/python -m pytest -q -n $(JOBS) $(TESTS)

bench: $(STAMP)
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) build *.egg-info
