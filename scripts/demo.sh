#!/usr/bin/env bash
# The demo behind `make demo`: the real server on the default model and the sample project.
set -euo pipefail
cd "$(dirname "$0")/.."
# The server logs to stderr; the demo shows warnings only unless NIB_LOG says otherwise.
export NIB_LOG="${NIB_LOG:-warn}"
exec .venv/bin/python scripts/demo.py
