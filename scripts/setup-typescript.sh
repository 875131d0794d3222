#!/usr/bin/env bash
# Installs the TypeScript compilers the verified-tests tests need (typescript and tsx, with
# esbuild; every package pinned by tests/fixtures/typescript-toolchain/package-lock.json) with
# `npm ci` into .cache/typescript. The tests link a scratch project's node_modules to them, the
# way a real project has its own. Prints nothing when the lockfile is already installed.
set -euo pipefail
cd "$(dirname "$0")/.."

lock=tests/fixtures/typescript-toolchain/package-lock.json
cache=.cache/typescript
stamp=$cache/node_modules/.nib-lock.sha256
want=$(sha256sum "$lock" | cut -d' ' -f1)
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  exit 0
fi
command -v npm >/dev/null || {
  echo "setup-typescript: no npm on PATH: install Node.js 20 (with npm) and rerun" >&2
  exit 1
}
echo "setup-typescript: installing typescript and tsx from npm into $cache"
rm -rf "$cache"
mkdir -p "$cache"
cp tests/fixtures/typescript-toolchain/package.json "$lock" "$cache/"
(cd "$cache" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
echo "$want" >"$stamp"
