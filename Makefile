# The two commands a newcomer needs: `make run` and `make test`.
# Both install into .venv first. llama-cpp-python (the embedded model) builds from
# source, in about 5 minutes, once per machine (see LLAMA_WHEEL below).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP_RUN := $(VENV)/.installed-run
STAMP_TEST := $(VENV)/.installed-test
export CMAKE_BUILD_PARALLEL_LEVEL ?= 2

# llama.cpp's default build targets the building CPU (-march=native), and pip's cache
# hands that wheel to every later install on the machine. On a VM that advertises
# AMX, such a wheel died with "Illegal instruction". So the wheel is built for
# x86-64-v3 (AVX2, FMA, F16C; no AVX-512 or AMX; the flags mean nothing on ARM) into a
# directory outside the checkout, kept between clones, and installed from there.
LLAMA_VERSION ?= 0.3.36
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
WHEELS ?= $(HOME)/.cache/streamkeep/wheels
LLAMA_WHEEL := $(WHEELS)/.llama-cpp-python-$(LLAMA_VERSION)-x86-64-v3
PIP_INSTALL = $(BIN)/pip install --quiet --find-links $(WHEELS)

.PHONY: run test lint typecheck bench install clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(LLAMA_WHEEL): | $(BIN)/python
	mkdir -p $(WHEELS)
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/pip wheel --quiet --no-cache-dir --no-deps \
		--wheel-dir $(WHEELS) 'llama-cpp-python==$(LLAMA_VERSION)'
	touch $@

$(STAMP_RUN): pyproject.toml $(LLAMA_WHEEL) | $(BIN)/python
	$(PIP_INSTALL) -e '.[local]' 'llama-cpp-python==$(LLAMA_VERSION)'
	touch $@

$(STAMP_TEST): pyproject.toml $(LLAMA_WHEEL) | $(BIN)/python
	$(PIP_INSTALL) -e '.[test]' 'llama-cpp-python[server]==$(LLAMA_VERSION)'
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
