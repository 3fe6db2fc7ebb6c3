# Two commands from a fresh clone: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CONFIG ?= configs/demo.yaml

export RAY_AUTH_MODE := disabled
export SPARK_LOCAL_IP := 127.0.0.1
export RAY_USAGE_STATS_ENABLED := 0
export PYTHONHASHSEED := 0

.PHONY: install demo test lint bench clean

install: $(STAMP)

# torch is installed first and pinned by constraints.txt, so pip takes the local CPU
# wheel and never resolves a CUDA build.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/lfm4ads run --config $(CONFIG)

# Two workers (pytest-xdist), each with its own Spark session and Ray cluster: a test file
# stays on one worker (its module fixtures are built once), and files go out longest first
# (tests/conftest.py). TEST_WORKERS=0 runs it in this one process.
TEST_WORKERS ?= 2
test: $(STAMP)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

# ruff (lint + format check) over the tree; mypy, strict on contracts/ and engines/
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy contracts engines

clean:
	rm -rf runs/ .pytest_cache
