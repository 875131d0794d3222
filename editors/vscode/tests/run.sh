#!/usr/bin/env bash
# The VS Code extension's tests: unit tests (node:test, run by build.sh), then an end-to-end
# test in a real VS Code: the packaged .vsix is installed into code-server (npm, VS Code
# 1.100.3) started on 127.0.0.1, which Debian's chromium shows and playwright-core drives,
# against the real nib binary and the default model.
# Screenshots and logs go to editors/vscode/tests/artifacts/ (kept after the run).
# Usage: editors/vscode/tests/run.sh [-v]   (-v: print code-server's log also on success)
set -euo pipefail
tests_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ext_dir="$(dirname "$tests_dir")"
repo="$(cd "$ext_dir/../.." && pwd)"
verbose=0
[[ "${1:-}" == "-v" ]] && verbose=1

for need in "$repo/target/release/nib" "$repo/models/smollm2-135m-instruct/nib.json"; do
  if [[ ! -e "$need" ]]; then
    echo "vscode tests: $need is missing; run 'make setup' first" >&2
    exit 1
  fi
done
"$repo/scripts/setup-vscode.sh"
"$ext_dir/build.sh"

tools="$repo/.cache/vscode/tools"
code_server="$tools/node_modules/.bin/code-server"
artifacts="$tests_dir/artifacts"
rm -rf "$artifacts"
mkdir -p "$artifacts"

# Everything code-server and the extension write goes to a scratch folder: no user setup leaks
# in, nothing is left behind.
scratch="$(mktemp -d)"
cs_pid=""
e2e_pid=""
# Ends a process group started with setsid: TERM, then KILL for what is left after 5 s.
kill_group() {
  kill -TERM -- "-$1" 2>/dev/null || return 0
  for _ in $(seq 50); do
    kill -0 -- "-$1" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -KILL -- "-$1" 2>/dev/null || true
}
cleanup() {
  local status=$?
  # The browser test and code-server run in their own process groups (setsid); code-server's
  # children (extension host, file watcher, the nib server) outlive it unless the whole group
  # goes.
  [[ -n "$e2e_pid" ]] && kill_group "$e2e_pid"
  [[ -n "$cs_pid" ]] && kill_group "$cs_pid"
  if [[ $status -ne 0 || $verbose -eq 1 ]]; then
    [[ -f "$scratch/code-server.log" ]] && cp "$scratch/code-server.log" "$artifacts/" || true
  fi
  # The extension host's log, the nib output channel included.
  find "$scratch/data/logs" -name '*nib*.log' -exec cp {} "$artifacts/" \; 2>/dev/null || true
  rm -rf "$scratch"
  exit $status
}
trap cleanup EXIT
trap 'exit 130' INT TERM

export HOME="$scratch/home" XDG_CONFIG_HOME="$scratch/config" XDG_DATA_HOME="$scratch/xdg-data" \
  XDG_CACHE_HOME="$scratch/cache" TMPDIR="$scratch/tmp"
mkdir -p "$HOME" "$TMPDIR" "$scratch/data/User" "$scratch/extensions" "$scratch/ws"
cp "$repo/examples/shop/cart.py" "$repo/examples/shop/pricing.py" "$scratch/ws/"
# A quiet workbench: no welcome page, no trust prompt, no word suggestions competing with the
# ghost text for Tab.
cat >"$scratch/data/User/settings.json" <<'EOF'
{
  "workbench.startupEditor": "none",
  "workbench.tips.enabled": false,
  "workbench.enableExperiments": false,
  "security.workspace.trust.enabled": false,
  "telemetry.telemetryLevel": "off",
  "extensions.ignoreRecommendations": true,
  "editor.quickSuggestions": { "other": "off", "comments": "off", "strings": "off" },
  "editor.wordBasedSuggestions": "off",
  "editor.inlineSuggest.enabled": true,
  "files.autoSave": "off",
  "window.restoreWindows": "none"
}
EOF

cs_args=(--user-data-dir "$scratch/data" --extensions-dir "$scratch/extensions")
"$code_server" "${cs_args[@]}" --install-extension "$ext_dir/build/nib.vsix" >"$scratch/install.log" 2>&1 || {
  cat "$scratch/install.log"
  exit 1
}
grep -q "successfully installed" "$scratch/install.log" || {
  cat "$scratch/install.log"
  echo "vscode tests: the .vsix did not install" >&2
  exit 1
}

port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
setsid "$code_server" "${cs_args[@]}" --auth none --bind-addr "127.0.0.1:$port" --disable-telemetry \
  --disable-update-check --disable-workspace-trust --disable-getting-started-override \
  "$scratch/ws" >"$scratch/code-server.log" 2>&1 </dev/null &
cs_pid=$!
healthy() {
  python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' \
    "http://127.0.0.1:$port/healthz" >/dev/null 2>&1
}
for _ in $(seq 120); do
  if healthy; then
    break
  fi
  kill -0 "$cs_pid" 2>/dev/null || {
    cat "$scratch/code-server.log"
    echo "vscode tests: code-server exited" >&2
    exit 1
  }
  sleep 0.5
done
healthy || {
  cat "$scratch/code-server.log"
  echo "vscode tests: code-server did not come up on port $port" >&2
  exit 1
}
echo "vscode tests: $("$code_server" --version | head -n 1 | cut -d' ' -f1) (code-server) on 127.0.0.1:$port"

# In the background and waited for, so that a signal to this script cleans up at once.
NODE_PATH="$tools/node_modules" NIB_URL="http://127.0.0.1:$port/?folder=$scratch/ws" NIB_WS="$scratch/ws" \
  NIB_USER_SETTINGS="$scratch/data/User/settings.json" NIB_ARTIFACTS="$artifacts" \
  setsid timeout 600 node "$tests_dir/e2e.js" </dev/null &
e2e_pid=$!
wait "$e2e_pid"
