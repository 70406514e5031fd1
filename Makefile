# sdi: one entry point for the dev loop. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON_BOOT ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
export CARGO_TARGET_DIR ?= $(CURDIR)/target
export CARGO_BUILD_JOBS ?= 2
export CARGO_INCREMENTAL ?= 1
# Debian packages the tests start for themselves (none yet; redis-server and
# postgresql join as the systems that use them land).
SYSTEM_PACKAGES ?= kcat redis-server redis-tools etcd-server awscli s3cmd rclone postgresql swaks

.PHONY: help run test test-rust test-python bench asv lint fmt wheel setup build system-deps clean

help: ## List the targets.
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

run: setup ## Set up, then run `sdi up` (every finished service on embedded defaults).
	$(VENV)/bin/sdi up

test: setup ## Set up, then run every test (Rust and Python).
	$(MAKE) --no-print-directory test-rust test-python

test-rust: ## Run the Rust core crates' unit and property tests.
	cargo test --workspace --exclude sdi-py

test-python: ## Run the Python tests (doctests, and each micro-benchmark once) against the build.
	$(PY) -m pytest python/sdi tests benchmarks/micro

bench: setup ## Run every benchmark side by side with its baselines; write benchmarks/results/.
	$(PY) benchmarks/run.py all --json-dir benchmarks/results --plot
	$(PY) -m pytest benchmarks/micro --benchmark-enable --benchmark-columns=min,median,ops -q

asv: setup ## Track the cores across commits with asv, against the installed build.
	$(VENV)/bin/asv machine --yes >/dev/null
	$(VENV)/bin/asv run --python=same --show-stderr --set-commit-hash $$(git rev-parse HEAD)
	$(VENV)/bin/asv publish >/dev/null && echo "asv report: .asv/html/index.html"

lint: setup ## rustfmt, clippy, ruff, mypy and the stub check: all must be clean.
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings
	$(VENV)/bin/ruff check python tests benchmarks
	$(VENV)/bin/ruff format --check python tests benchmarks
	$(VENV)/bin/mypy
	$(PY) -m mypy.stubtest sdi._rust sdi._resp sdi._fix sdi._kafka --allowlist .stubtest-allowlist

fmt: setup ## Format Rust and Python in place.
	cargo fmt --all
	$(VENV)/bin/ruff format python tests benchmarks
	$(VENV)/bin/ruff check --fix python tests benchmarks

wheel: setup ## Build the release wheel (fat LTO) into dist/.
	SETUPTOOLS_RUST_CARGO_PROFILE=dist $(PIP) wheel --no-build-isolation --no-deps -w dist .

setup: system-deps $(VENV)/.deps-stamp build ## Create .venv, install dependencies, build and install sdi (editable).

system-deps:
	@missing=""; for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; fi

$(VENV)/.deps-stamp: pyproject.toml
	test -x $(PY) || $(PYTHON_BOOT) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "setuptools>=77" "setuptools-rust>=1.11" "Cython>=3.1" wheel
	$(PY) -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; print("\n".join(p["dependencies"] + p["optional-dependencies"]["dev"]))' > $(VENV)/requirements-dev.txt
	$(PIP) install -q -r $(VENV)/requirements-dev.txt
	touch $@

build: $(VENV)/.deps-stamp ## Build the Rust and Cython extensions and install sdi into .venv (editable).
	@echo "building sdi (Rust release profile + Cython); the first build takes a few minutes"
	$(PIP) install -q --no-build-isolation --no-deps -e .

clean: ## Remove build products (keeps .venv and the cargo target dir).
	rm -rf build dist python/sdi/*.so cython/sdi/*.c
