#!/usr/bin/env bash
# Creates .venv-llama: llama.cpp through PyPI's llama-cpp-python, built from its source
# distribution, with the extras for its OpenAI-compatible server. Used only by the benchmarks
# (nib vs llama.cpp on the same GGUF) and by the remote-backend tests (a real serving engine on
# 127.0.0.1). Never needed to run nib.
#
# The build compiles llama.cpp (about 10 minutes on 2 cores). pip keeps the built wheel in its
# cache, so a second environment on the same machine installs in seconds; a stamp file makes
# a re-run a no-op.
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python3}"
venv=.venv-llama
spec="llama-cpp-python[server]==0.3.36"
stamp="$venv/.stamp"
if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$spec" ]]; then
  exit 0
fi
echo "setup-llama: building $spec into $venv (compiles llama.cpp once, ~10 min on 2 cores)"
[[ -x "$venv/bin/python" ]] || "$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}" \
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$spec"
"$venv/bin/python" -c "import llama_cpp, llama_cpp.server; print('setup-llama: llama.cpp', llama_cpp.__version__)"
echo "$spec" > "$stamp"
