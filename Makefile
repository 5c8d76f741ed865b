# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
OUT := out
AS_OF ?= 2017-12-31T23:59:59+08:00

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/bsc-rules check
	$(BIN)/python -m bsc_rules.demo
	$(BIN)/bsc-rules status --db $(OUT)/demo.db --as-of $(AS_OF)

test: $(STAMP)
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/mypy
	$(BIN)/lint-imports

# Benchmarks (docs/benchmarks.md): `make bench` runs the full set (national year of 10M
# events; about 19 min), `make bench QUICK=1` a national sample (5-6 min). DuckDB is a
# baseline only: the `bench` extra of pyproject.toml, not a dependency of the project.
bench: $(STAMP)
	$(BIN)/python -c "import duckdb" 2>/dev/null || $(BIN)/python -m pip install -q -e ".[dev,bench]"
	$(BIN)/python -m bench $(if $(filter-out 0,$(QUICK)),--quick)

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache .mypy_cache .ruff_cache .hypothesis

# The fault suites' long mode (about 30 min on 2 cores): 100 crash trials per harness,
# 10,000 generated cases per fuzz target; totals go to out/faults-long.json.
.PHONY: faults-long
faults-long: $(STAMP)
	BSC_FAULTS_LONG=1 $(BIN)/pytest -q tests/faults
