# The two commands of the README: `make up` starts the workbench, `make test` runs the tests.
# Both set up everything they need first (scripts/setup.sh is idempotent and quick when nothing changed).
VENV ?= .venv
PYTEST_ARGS ?=
# One process by default. `make test PYTEST_WORKERS="-n 2"` runs the real-node tier on one worker and
# every other test on the other (tests/build_ahead.py): about 30 min warm instead of 41, but under
# that load the browser journey's VisualDL board sometimes shows "Error occurred" (not yet fixed).
PYTEST_WORKERS ?=
# The Go toolchain (for the control-plane tests) is usually installed in /usr/local/go.
export PATH := $(PATH):/usr/local/go/bin

.PHONY: up test setup lint

up: setup
	$(VENV)/bin/workbench up

test: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/python -m pytest $(PYTEST_WORKERS) $(PYTEST_ARGS)

setup:
	VENV=$(VENV) bash scripts/setup.sh

lint: setup
	$(VENV)/bin/ruff check .
