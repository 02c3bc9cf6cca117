# Two commands: `make run` (the demo on the embedded default) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test bench clean redis-server

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

# The shared-store tests start their own Redis on 127.0.0.1 (never the system service): get the
# server binary from the OS where we may install it, else say so (those tests then skip, saying why).
redis-server:
	@command -v redis-server >/dev/null 2>&1 || test -x /usr/bin/redis-server || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing redis-server (Debian package) for the shared-store tests"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server) >/dev/null 2>&1; \
	    command -v redis-server >/dev/null 2>&1 || echo "warning: could not install redis-server: the Redis store tests will skip"; \
	  else \
	    echo "note: no redis-server and not root with apt-get: the Redis store tests will skip (sudo apt-get install redis-server)"; \
	  fi; }

# Only the project's own example among installed plugins: a broken third-party one cannot fail the suite.
# In parallel: most tests wait on worker processes and emulators, so JOBS beats the core count
# (measured on 2 cores: 8 jobs 2 min 39 s, against 6 min 45 s for the serial suite this round began with).
# One part: make test TESTS=tests/test_slb.py (any pytest arguments; JOBS=0 runs in this process).
JOBS ?= 8
TESTS ?= tests examples/ecs-worker-hello/tests
test: $(STAMP) redis-server
	ECS_WORKER_LOAD_PLUGINS=hello $(BIN)/python -m pytest -q -n $(JOBS) $(TESTS)

bench: $(STAMP)
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) build *.egg-info
