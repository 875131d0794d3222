#!/usr/bin/env bash
# Sets up what the VS Code extension's end-to-end test needs, once (a stamp records the
# versions): Debian's chromium and ripgrep (apt, when missing), and code-server (npm; it
# contains VS Code) plus playwright-core in the cache folder .cache/vscode/tools, every npm
# package pinned by editors/vscode/tests/tools/package-lock.json (installed with `npm ci`).
# Prints nothing when everything is already in place.
set -euo pipefail
cd "$(dirname "$0")/.."

CODE_SERVER_VERSION=4.100.3
PLAYWRIGHT_VERSION=1.65.1
# The @vscode/ripgrep version code-server 4.100.3 depends on, and the rg archive it fetches.
VSCODE_RIPGREP_VERSION=1.15.11
RIPGREP_ARCHIVE=ripgrep-v13.0.0-10-x86_64-unknown-linux-musl.tar.gz

cache=.cache/vscode
tools="$cache/tools"
stamp="$tools/.stamp"
lock_dir=editors/vscode/tests/tools
want="code-server@$CODE_SERVER_VERSION playwright-core@$PLAYWRIGHT_VERSION $(cat "$lock_dir/package-lock.json" | sha256sum | cut -c1-16)"

missing_apt=()
command -v chromium >/dev/null || missing_apt+=(chromium)
command -v rg >/dev/null || missing_apt+=(ripgrep)
# code-server's kerberos module builds against it.
[[ -e /usr/include/gssapi/gssapi.h || -e /usr/include/krb5.h ]] || missing_apt+=(libkrb5-dev)
if [[ ${#missing_apt[@]} -gt 0 ]]; then
  echo "setup-vscode: installing ${missing_apt[*]} (apt)"
  sudo=()
  if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || {
      echo "setup-vscode: need root (or sudo) to install ${missing_apt[*]} with apt; install them and rerun" >&2
      exit 1
    }
    sudo=(sudo)
  fi
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update -qq
  "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing_apt[@]}" >/dev/null
fi

if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" && -x "$tools/node_modules/.bin/code-server" ]]; then
  exit 0
fi

echo "setup-vscode: installing $want from npm into $tools (about 2 minutes)"
mkdir -p "$tools" "$cache/tmp"
tools_abs="$(cd "$tools" && pwd)"
tmp_abs="$(cd "$cache/tmp" && pwd)"
# @vscode/ripgrep's postinstall downloads rg from outside npm; give it Debian's rg instead,
# where it looks for a cached archive first.
rg_cache="$tmp_abs/vscode-ripgrep-cache-$VSCODE_RIPGREP_VERSION"
if [[ ! -f "$rg_cache/$RIPGREP_ARCHIVE" ]]; then
  mkdir -p "$rg_cache/rg-src"
  cp "$(command -v rg)" "$rg_cache/rg-src/rg"
  tar -C "$rg_cache/rg-src" -czf "$rg_cache/$RIPGREP_ARCHIVE" ./rg
  rm -rf "$rg_cache/rg-src"
fi
cp "$lock_dir/package.json" "$lock_dir/package-lock.json" "$tools/"
# npm_config_yes: node-pty's postinstall runs npx, which must not prompt.
# npm_config_nodedir: build native modules against the installed Node headers, offline.
nodedir=/usr
[[ -f "$nodedir/include/node/node.h" ]] || nodedir="$(dirname "$(dirname "$(command -v node)")")"
(cd "$tools" && TMPDIR="$tmp_abs" npm_config_nodedir="$nodedir" npm_config_yes=true \
  npm ci --no-audit --no-fund --loglevel=error --unsafe-perm >/dev/null)
"$tools_abs/node_modules/.bin/code-server" --version >/dev/null
echo "$want" >"$stamp"
echo "setup-vscode: code-server $CODE_SERVER_VERSION and playwright-core $PLAYWRIGHT_VERSION ready"
