# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
OUT := out
AS_OF ?= 2017-12-31T23:59:59+08:00

.PHONY: demo test lint bench bench-http bench-pipeline bench-offices clean test-nodurable wheel-check

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/bsc-rules check
	$(BIN)/python -m bsc_rules.dev.demo
	$(BIN)/bsc-rules status --db $(OUT)/demo.db --as-of $(AS_OF)

# Two workers (the machine's two cores), a test file's tests on one of them.
test: $(STAMP)
	$(BIN)/pytest -q -n 2 --dist loadfile

lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/mypy
	$(BIN)/lint-imports

# The unit and contract tests where durable_rules is absent (about 1 min once set up): in
# Python >= 3.13 if the machine has it (durable_rules does not import there), otherwise in a
# venv of $(PY) with durable-rules uninstalled. PY_NODUR=... picks the interpreter.
NODUR := .venv-nodurable
PY_NODUR ?= $(shell for p in python3.13 python3.14 "$$(pyenv root 2>/dev/null)"/versions/3.1[3-9]*/bin/python3; do \
	"$$p" -c 'import sys; assert sys.version_info >= (3, 13)' 2>/dev/null && { echo "$$p"; break; }; done)

$(NODUR)/.installed: pyproject.toml
	rm -rf $(NODUR)
	$(or $(PY_NODUR),$(PY)) -m venv $(NODUR)
	$(NODUR)/bin/python -m pip install -q -e ".[dev]"
	$(NODUR)/bin/python -m pip uninstall -q -y durable-rules 2>/dev/null || true
	touch $@

test-nodurable: $(NODUR)/.installed
	$(NODUR)/bin/python -c "import durable" 2>/dev/null && { echo "durable_rules is importable in $(NODUR)" >&2; exit 1; } || true
	$(NODUR)/bin/pytest -q -p no:cacheprovider tests/unit tests/contract

# The wheel as a user gets it (service.md, "Install"): built from a copy of the project,
# installed with its dependencies in a clean venv outside the checkout, then `check`,
# `evaluate` and `replay --maildir` run from another folder (about 1-2 min).
wheel-check: $(STAMP)
	$(BIN)/pytest -q -p no:cacheprovider -m package tests/integration/test_package.py

# Benchmarks (docs/benchmarks.md): `make bench` runs the full set (national year of 10M
# events; about 19 min), `make bench QUICK=1` a national sample (5-6 min). DuckDB is a
# baseline only: the `bench` extra of pyproject.toml, not a dependency of the project.
# Then bench-offices (below; the full one ingests the 10M-event file three times).
bench: $(STAMP)
	$(BIN)/python -c "import duckdb" 2>/dev/null || $(BIN)/python -m pip install -q -e ".[dev,bench]"
	$(BIN)/python -m bench $(if $(filter-out 0,$(QUICK)),--quick)
	$(MAKE) bench-offices

# The HTTP door alone (docs/benchmarks.md, "HTTP door"): `bsc-rules serve` on a loopback
# port against the in-process ingest of the same events (under a minute).
bench-http: $(STAMP)
	$(BIN)/python -m bench --only http $(if $(filter-out 0,$(QUICK)),--quick)

# The alert pipeline's replay of one office year beside the ingest of the same events.
bench-pipeline: $(STAMP)
	$(BIN)/python -m bench --only pipeline $(if $(filter-out 0,$(QUICK)),--quick)

# Many offices (docs/benchmarks.md, "Many offices"): the national file of every office
# ingested with two workers into per-office SQLite files and into PostgreSQL (a throwaway
# cluster, fsync on) beside PostgreSQL's own floor, and the city's restart on PostgreSQL.
bench-offices: $(STAMP)
	$(BIN)/python -m bench --only offices $(if $(filter-out 0,$(QUICK)),--quick)

clean:
	rm -rf $(VENV) $(NODUR) $(OUT) .pytest_cache .mypy_cache .ruff_cache .hypothesis

# The fault suites' long mode (about 30 min on 2 cores): 100 crash trials per harness,
# 10,000 generated cases per fuzz target; totals go to out/faults-long.json.
.PHONY: faults-long
faults-long: $(STAMP)
	BSC_FAULTS_LONG=1 $(BIN)/pytest -q tests/faults
