# The two commands of the README contract, and a few helpers.
#   make demo  - set up what is missing, then curate the demo data into workspaces/demo
#   make test  - set up what is missing, then lint and run the tests
SHELL := /bin/bash
# ruff's cache goes to the temp dir, not the repository or $HOME (scripts/test.sh does the same).
CACHE ?= $(or $(ZCURATE_CACHE_DIR),$(TMPDIR),/tmp)/zcurate-cache
export RUFF_CACHE_DIR ?= $(CACHE)/ruff
.PHONY: setup demo test test-all lint format bench payoff clean-demo

setup:
	@bash scripts/setup.sh

demo: setup
	@.venv/bin/zcurate demo

test:
	@bash scripts/test.sh

test-all:
	@ZCURATE_TEST_ALL=1 bash scripts/test.sh

lint: setup
	@.venv/bin/ruff check . && .venv/bin/ruff format --check .

format: setup
	@.venv/bin/ruff format . && .venv/bin/ruff check --fix .

bench: setup
	@.venv/bin/python bench/bench_ingest.py

# the pay-off experiment (docs/payoff.md): ~35 minutes on 2 CPU cores
payoff: setup
	@.venv/bin/python bench/bench_payoff.py

clean-demo:
	rm -rf workspaces/demo
