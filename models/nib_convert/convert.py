"""The conversion pipeline: GGUF file -> nib model directory."""

from __future__ import annotations

import os
import time

import onnx

from .gguf_model import GGUFModel
from .graph import GraphOptions, build_model
from .meta import sha256_file, write_config, write_nib_json
from .tokenizer import write_tokenizer_json

# Above this many bytes of weights the graph goes to model.onnx + model.onnx.data (protobuf
# cannot exceed 2 GiB; external data is also mmapped by ONNX Runtime instead of copied).
EXTERNAL_DATA_THRESHOLD = 64 << 20


def convert(gguf_path: str, out_dir: str, opts: GraphOptions, log=print, name: str | None = None) -> dict:
    t0 = time.time()
    os.makedirs(out_dir, exist_ok=True)
    model = GGUFModel(gguf_path)
    c = model.config
    log(f"  {c.arch}: {c.layers} layers, hidden {c.hidden}, heads {c.heads}/{c.kv_heads}, "
        f"ffn {c.ffn}, vocab {c.vocab}, context {c.context}")
    proto = build_model(model, opts)
    size = sum(len(t.raw_data) for t in proto.graph.initializer)
    path = os.path.join(out_dir, "model.onnx")
    for stale in (path, path + ".data"):
        if os.path.exists(stale):
            os.remove(stale)
    if size > EXTERNAL_DATA_THRESHOLD:
        onnx.save_model(proto, path, save_as_external_data=True, all_tensors_to_one_file=True,
                        location="model.onnx.data", size_threshold=1024)
    else:
        onnx.save_model(proto, path)
    log(f"  model.onnx written ({size / 1e6:.1f} MB of weights, {opts.precision}) in {time.time() - t0:.1f}s")
    tok = model.tokenizer()
    write_tokenizer_json(tok, os.path.join(out_dir, "tokenizer.json"))
    write_config(c, out_dir)
    nib = write_nib_json(c, tok, out_dir, name or c.name, opts.precision, gguf_path, sha256_file(gguf_path),
                         model.chat_template())
    log(f"  tokenizer.json, config.json, nib.json written (fim: "
        f"{nib['fim']['family'] if nib['fim'] else None}, stop: {nib['stop_tokens']})")
    return nib
