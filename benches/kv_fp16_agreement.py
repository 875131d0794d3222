#!/usr/bin/env python3
"""What an fp16 KV cache costs in greedy choices: teacher-forced top-1 agreement of the default
model with fp32 KV (its graph as it is) against the same graph with every key and value rounded
to fp16 as it enters the cache (models/kv_rounding.py; nib's attention kernel kept its cache so
until 2026-12-05, and now keeps it in bf16: its test
`nib_attention_keeps_the_model_as_faithful_as_onnx_runtime_attention` measures that), both in
Python onnxruntime, over real source not written here (installed packages' files).

For scale, `--nudge` replaces the fp16 rounding by a relative change of 2^-20 (f32 noise): the
model's int8-activation matmuls amplify any change in the attention output, so this floor is
what "agreement" can mean for this model.

`--int8` replaces the fp16 rounding by 8-bit quantization, as an 8-bit KV cache would keep it:
each new key and value row of each KV head (64 values) as integers in -127..127 times one f32
scale (its largest magnitude / 127), rounded to nearest. What an 8-bit cache, half the bytes a
decode step reads at long context, would cost in greedy choices.

Usage: .venv/bin/python benches/kv_fp16_agreement.py [--tokens 2048] [--nudge | --int8]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper
from tokenizers import Tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "models"))

from kv_rounding import round_attention_inputs  # noqa: E402

MODEL = os.path.join(ROOT, "models", "smollm2-135m-instruct")
SITE = os.path.dirname(os.path.dirname(np.__file__))
TEXTS = ["onnx/helper.py", "numpy/lib/_function_base_impl.py", "tokenizers/__init__.pyi"]
CHUNK = 256


def session(path: str) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def top1(sess: ort.InferenceSession, ids: list[int]) -> np.ndarray:
    """The argmax at every position, the text fed in chunks over a growing cache."""
    past_inputs = [i for i in sess.get_inputs() if i.name.startswith("past_key_values.")]
    heads, dim = past_inputs[0].shape[1], past_inputs[0].shape[3]
    cache = {i.name: np.zeros((1, heads, 0, dim), np.float32) for i in past_inputs}
    outputs = [o.name for o in sess.get_outputs()]
    best: list[int] = []
    for past in range(0, len(ids), CHUNK):
        part = ids[past:past + CHUNK]
        n = len(part)
        feeds = {
            "input_ids": np.array([part], np.int64),
            "attention_mask": np.ones((1, past + n), np.int64),
            "position_ids": np.arange(past, past + n, dtype=np.int64)[None],
            "logits_to_keep": np.array([n], np.int64),
        }
        feeds.update(cache)
        results = sess.run(outputs, feeds)
        best.extend(results[0][0].argmax(-1).tolist())
        cache = {name.replace("present.", "past_key_values."): v for name, v in zip(outputs[1:], results[1:])}
    return np.array(best)


def nudged(model: onnx.ModelProto) -> onnx.ModelProto:
    """`round_attention_inputs`' graph with the rounding replaced by a multiplication by 1 + 2^-20."""
    model.graph.initializer.append(helper.make_tensor("fp16kv/nudge", TensorProto.FLOAT, [], [1.0 + 2.0**-20]))
    for node in model.graph.node:
        if node.op_type == "Cast" and node.output[0].endswith("/half"):
            node.op_type = "Identity"
            del node.attribute[:]
        elif node.op_type == "Cast" and node.output[0].endswith("/rounded"):
            node.op_type = "Mul"
            del node.attribute[:]
            node.input.append("fp16kv/nudge")
    return model


def int8_rows(model: onnx.ModelProto, kv_heads: int) -> onnx.ModelProto:
    """`round_attention_inputs`' graph with the fp16 rounding replaced by per-row, per-head symmetric
    8-bit quantization (scale = largest magnitude / 127; an all-zero row stays zero)."""
    graph = model.graph
    graph.initializer.extend([
        helper.make_tensor("int8kv/heads", TensorProto.INT64, [4], [0, 0, kv_heads, -1]),
        helper.make_tensor("int8kv/flat", TensorProto.INT64, [3], [0, 0, -1]),
        helper.make_tensor("int8kv/last", TensorProto.INT64, [1], [-1]),
        helper.make_tensor("int8kv/levels", TensorProto.FLOAT, [], [127.0]),
        helper.make_tensor("int8kv/tiny", TensorProto.FLOAT, [], [1e-30]),
    ])
    nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        if node.op_type == "Cast" and node.output[0].endswith("/half"):
            continue
        if not (node.op_type == "Cast" and node.output[0].endswith("/rounded")):
            nodes.append(node)
            continue
        source = node.input[0].removesuffix("/half")
        p = source + "/int8"
        nodes += [
            helper.make_node("Reshape", [source, "int8kv/heads"], [p + "/rows"]),
            helper.make_node("Abs", [p + "/rows"], [p + "/abs"]),
            helper.make_node("ReduceMax", [p + "/abs", "int8kv/last"], [p + "/max"], keepdims=1),
            helper.make_node("Div", [p + "/max", "int8kv/levels"], [p + "/scale0"]),
            helper.make_node("Max", [p + "/scale0", "int8kv/tiny"], [p + "/scale"]),
            helper.make_node("Div", [p + "/rows", p + "/scale"], [p + "/scaled"]),
            helper.make_node("Round", [p + "/scaled"], [p + "/levels"]),
            helper.make_node("Mul", [p + "/levels", p + "/scale"], [p + "/back"]),
            helper.make_node("Reshape", [p + "/back", "int8kv/flat"], [node.output[0]]),
        ]
    del graph.node[:]
    graph.node.extend(nodes)
    return model


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=2048, help="positions per text")
    kinds = parser.add_mutually_exclusive_group()
    kinds.add_argument("--nudge", action="store_true", help="f32 noise instead of fp16 rounding")
    kinds.add_argument("--int8", action="store_true", help="8-bit rows instead of fp16 rounding")
    args = parser.parse_args()
    tokenizer = Tokenizer.from_file(os.path.join(MODEL, "tokenizer.json"))
    original = onnx.load(os.path.join(MODEL, "model.onnx"), load_external_data=False)
    changed = round_attention_inputs(original, TensorProto.FLOAT16)
    if args.nudge:
        changed = nudged(changed)
    if args.int8:
        kv_heads = next(a.i for n in original.graph.node if n.op_type == "GroupQueryAttention"
                        for a in n.attribute if a.name == "kv_num_heads")
        changed = int8_rows(changed, kv_heads)
    with tempfile.TemporaryDirectory() as tmp:
        # onnxruntime refuses external data outside the model's folder: a copy, not a link.
        shutil.copy(os.path.join(MODEL, "model.onnx.data"), os.path.join(tmp, "model.onnx.data"))
        onnx.save(changed, os.path.join(tmp, "model.onnx"))
        fp32, other = session(os.path.join(MODEL, "model.onnx")), session(os.path.join(tmp, "model.onnx"))
        total = same = 0
        for text in TEXTS:
            with open(os.path.join(SITE, text), encoding="utf-8") as f:
                ids = tokenizer.encode(f.read()).ids[: args.tokens]
            agree = top1(fp32, ids) == top1(other, ids)
            total, same = total + len(ids), same + int(agree.sum())
            print(f"{text}: {len(ids)} positions, top-1 agreement {agree.mean() * 100:.2f} %", flush=True)
    kind = "f32 nudge (2^-20)" if args.nudge else "8-bit KV rows" if args.int8 else "fp16 KV"
    print(f"{kind} against fp32 KV: {same}/{total} positions agree, {same / total * 100:.2f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
