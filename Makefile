# The two commands of the README: `make up` starts the workbench, `make test` runs the tests.
# Both set up everything they need first (scripts/setup.sh is idempotent and quick when nothing changed).
VENV ?= .venv
PYTEST_ARGS ?=
# Two workers: the real-node tier on one, every other test on the other (tests/build_ahead.py).
PYTEST_WORKERS ?= -n 2
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
