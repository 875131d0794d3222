#!/usr/bin/env bash
# Builds the nib VS Code extension: installs its npm dependencies from package-lock.json (only
# when the lockfile changed), compiles the TypeScript, runs the unit tests (node:test) and
# packages build/nib.vsix with @vscode/vsce. The .vsix records this checkout, so that the
# extension finds target/release/nib here without settings.
# Usage: editors/vscode/build.sh [--no-test]
set -euo pipefail
cd "$(dirname "$0")"
run_tests=1
[[ "${1:-}" == "--no-test" ]] && run_tests=0

stamp=node_modules/.nib-lock.sha256
want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
  echo "vscode: installing the extension's npm dependencies (package-lock.json)"
  npm ci --no-audit --no-fund --loglevel=error
  echo "$want" >"$stamp"
fi

rm -rf out
npx tsc -p .
if [[ $run_tests -eq 1 ]]; then
  node --test out/test/
fi
checkout="$(cd ../.. && pwd)"
node -e 'require("fs").writeFileSync("out/checkout.json", JSON.stringify({ checkout: process.argv[1] }) + "\n")' "$checkout"
mkdir -p build
npx vsce package --allow-missing-repository --skip-license --out build/nib.vsix >build/vsce.log 2>&1 || {
  cat build/vsce.log >&2
  exit 1
}
echo "vscode: packaged editors/vscode/build/nib.vsix"
