# The two commands a newcomer needs: `make run` and `make test`.
# Both install into .venv first; pip's cache keeps the llama-cpp-python wheel
# (it builds from source in about 5 minutes the first time).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP_RUN := $(VENV)/.installed-run
STAMP_TEST := $(VENV)/.installed-test
export CMAKE_BUILD_PARALLEL_LEVEL ?= 2

.PHONY: run test lint typecheck bench install clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP_RUN): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[local]'
	touch $@

$(STAMP_TEST): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@ $(STAMP_RUN)

install: $(STAMP_RUN)

run: $(STAMP_RUN)
	$(BIN)/streamkeep serve

lint: $(STAMP_TEST)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

test: $(STAMP_TEST) lint
	$(BIN)/pytest -q -p no:cacheprovider $(PYTEST_ARGS)

bench: $(STAMP_TEST)
	$(BIN)/python benchmarks/llm_parser.py

clean:
	rm -rf $(VENV) .streamkeep .pytest_cache .mypy_cache .ruff_cache
