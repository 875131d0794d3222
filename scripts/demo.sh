#!/usr/bin/env bash
# The demo behind `make demo`: the real server on the default model and the sample project.
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python scripts/demo.py
