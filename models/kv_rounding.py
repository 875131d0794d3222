"""A copy of a converted model whose GroupQueryAttention keys and values (and, if asked, its
queries) are rounded to a 16-bit float type before they enter the cache: rotary moves out of
the node (RotaryEmbedding on the split query and key), the new keys and values go through a Cast
to the narrow type and back, and the node attends over the rounded cache with its usual f32
arithmetic.

nib's attention kernel (server/src/engine/attention) keeps its keys and values in bf16 and
rounds its queries to bf16, so Python onnxruntime computes the reference the Rust tests compare
nib's kernel with on `round_attention_inputs(model, TensorProto.BFLOAT16, queries=True)`
(make_fixture.py, reference.json "bf16_kv"). The kernel also rounds its softmax weights to bf16,
which onnxruntime's GroupQueryAttention has no place for: the Rust test's tolerance covers that.
benches/kv_fp16_agreement.py measures what such roundings cost in greedy choices.
"""

from __future__ import annotations

import onnx
from onnx import TensorProto, helper


def _attribute(node: onnx.NodeProto, name: str, default: int = 0) -> int:
    return next((a.i for a in node.attribute if a.name == name), default)


def round_attention_inputs(model: onnx.ModelProto, to: int, queries: bool = False) -> onnx.ModelProto:
    """`model` (packed-QKV GroupQueryAttention with do_rotary) with its new K/V rows (and its
    rotated queries where `queries`) rounded to the ONNX element type `to` (FLOAT16, BFLOAT16)."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        if node.op_type != "GroupQueryAttention":
            nodes.append(node)
            continue
        heads, kv_heads = _attribute(node, "num_heads"), _attribute(node, "kv_num_heads")
        interleaved = _attribute(node, "rotary_interleaved")
        assert _attribute(node, "do_rotary") == 1 and node.input[1] == "" and node.input[2] == ""
        cos, sin, positions = node.input[7], node.input[8], node.input[9]
        width = 2 * next(i.dims[1] for i in graph.initializer if i.name == cos)
        # The head size is the rotary width: full-width rotary (as models/convert.py writes).
        prefix = node.name or node.output[0]
        split = [f"{prefix}/fp16kv/{part}" for part in ("q", "k", "v")]
        sizes = f"{prefix}/fp16kv/sizes"
        graph.initializer.append(helper.make_tensor(
            sizes, TensorProto.INT64, [3], [heads * width, kv_heads * width, kv_heads * width]))
        nodes.append(helper.make_node("Split", [node.input[0], sizes], split, axis=2))
        rotated = []
        for name, count in ((split[0], heads), (split[1], kv_heads)):
            rotated.append(name + "/rotary")
            nodes.append(helper.make_node(
                "RotaryEmbedding", [name, positions, cos, sin], [rotated[-1]], domain="com.microsoft",
                interleaved=interleaved, num_heads=count))
        rounded = []
        for name in ((rotated[0],) if queries else ()) + (rotated[1], split[2]):
            nodes.append(helper.make_node("Cast", [name], [name + "/half"], to=to))
            nodes.append(helper.make_node("Cast", [name + "/half"], [name + "/rounded"], to=TensorProto.FLOAT))
            rounded.append(name + "/rounded")
        query = rounded.pop(0) if queries else rotated[0]
        inputs = [query, rounded[0], rounded[1], *node.input[3:7]]
        attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        attributes["do_rotary"] = 0
        nodes.append(helper.make_node(
            "GroupQueryAttention", inputs, list(node.output), name=node.name, domain="com.microsoft", **attributes))
    del graph.node[:]
    graph.node.extend(nodes)
    return model
