#!/usr/bin/env bash
# Installs the Go toolchain the Go test runs need: Debian's golang-1.19-go 1.19.8-2 and the
# golang-1.19-src of the same version it depends on (both pinned), with apt, into
# /usr/lib/go-1.19 (nib finds /usr/lib/go-1.19/bin/go without it being on PATH). No
# recommended packages: cgo is not needed. Prints nothing when that version is installed.
set -euo pipefail

GO_VERSION=1.19.8-2
packages=("golang-1.19-go=$GO_VERSION" "golang-1.19-src=$GO_VERSION")

installed() {
  [[ "$(dpkg-query -W -f='${Version}' "$1" 2>/dev/null || true)" == "$GO_VERSION" ]]
}
if installed golang-1.19-go && installed golang-1.19-src && [[ -x /usr/lib/go-1.19/bin/go ]]; then
  exit 0
fi

command -v apt-get >/dev/null || {
  echo "setup-go: no apt-get here: install Go 1.19 so that \`go\` is on PATH, or skip the Go tests" >&2
  exit 1
}
sudo=()
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null || {
    echo "setup-go: need root (or sudo) to install ${packages[*]} with apt; install them and rerun" >&2
    exit 1
  }
  sudo=(sudo)
fi
echo "setup-go: installing ${packages[*]} (apt)"
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
/usr/lib/go-1.19/bin/go version
