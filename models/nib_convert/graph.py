"""Build the decoder ONNX graph (HF Optimum I/O layout) with ONNX Runtime CPU contrib ops.

Inputs : input_ids int64 [batch, seq], attention_mask int64 [batch, total_seq],
         position_ids int64 [batch, seq], logits_to_keep int64 [1],
         past_key_values.{i}.key / .value float32 [batch, kv_heads, past_seq, head_dim]
Outputs: logits float32 [batch, logits_to_keep, vocab]  (the last `logits_to_keep` positions
         only: the LM head is the largest matmul; prefill and decode need the last row, the
         verification of a speculative draft one row per drafted token),
         present.{i}.key / .value float32 [batch, kv_heads, present_seq, head_dim]

KV cache, two ways (GroupQueryAttention supports both):
- copying: past_seq = tokens cached; present_seq = past_seq + seq, a new tensor per run.
- shared buffer (what nib does, nib.json `"kv_cache": "shared_buffer"`): past is a buffer of
  fixed capacity, `present.*` is bound to the same memory, and the op writes the new rows in
  place at the positions given by attention_mask (its row sum is the token count after this
  run); rows past that count are never read, so truncating the cache is forgetting a count.

Per layer (why each op): one MatMulNBits for Q|K|V (rows concatenated: one pass over the input,
one kernel launch), GroupQueryAttention with packed QKV (applies RoPE from cos/sin caches at
`position_ids`, appends to the KV cache, causal attention over past+new for any past/seq
combination), MatMulNBits for o_proj, SkipSimplifiedLayerNormalization (residual add + RMSNorm
in one op), one MatMulNBits for gate|up, SiLU*up, MatMulNBits for down.  Asymmetric 4-bit
blocks (Q4_1) add an exact correction blocksum(x) @ offsets next to their MatMulNBits (see
quant.py for why not zero points).  At fp32 the MatMulNBits become plain MatMul with
transposed float weights.  The embedding is an 8-bit GatherBlockQuantized table (exact for
Q8_0) at int4/int8, a float Gather at fp32.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from gguf import GGMLQuantizationType as QT
from onnx import TensorProto, helper, numpy_helper

from .gguf_model import GGUFModel
from .quant import NBits, to_float, to_nbits

MS = "com.microsoft"
OPSET = 21


@dataclass
class GraphOptions:
    precision: str = "int4"          # int4 | int8 | fp32: matmul weights
    accuracy_level: int = 4          # MatMulNBits: 4 = int8 activations (fastest on AVX2), 0 = fp32
    embedding: str = "auto"          # auto | fp32 | fp16 | q8 (GatherBlockQuantized 8-bit)
    head_bits: int | None = None     # force the LM-head's bits (default: see _bits_for)


class _Builder:
    def __init__(self):
        self.nodes, self.inits, self._n, self._init_names = [], [], 0, set()

    def name(self, base: str) -> str:
        self._n += 1
        return f"{base}_{self._n}"

    def init(self, name: str, arr: np.ndarray) -> str:
        """Add an initializer; a name seen before is a shared constant and is added once."""
        if name not in self._init_names:
            self._init_names.add(name)
            self.inits.append(numpy_helper.from_array(np.ascontiguousarray(arr), name))
        return name

    def op(self, op: str, inputs: list[str], n_out: int = 1, domain: str = "", name: str | None = None,
           outputs: list[str] | None = None, **attrs) -> list[str]:
        base = name or self.name(op)
        outs = outputs or [f"{base}/out{i}" for i in range(n_out)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=base, domain=domain, **attrs))
        return outs


def _merge_nbits(parts: list[NBits]) -> NBits:
    """Concatenate weights along N (output rows); missing offsets become zeros if any exist."""
    if len(parts) == 1:
        return parts[0]
    bits, k = parts[0].bits, parts[0].k
    assert all(p.bits == bits and p.k == k for p in parts)
    off = None
    if any(p.offsets is not None for p in parts):
        off = np.concatenate([p.offsets if p.offsets is not None else np.zeros((p.n, p.b.shape[1]), np.float32)
                              for p in parts])
    return NBits(bits, sum(p.n for p in parts), k, np.concatenate([p.b for p in parts]),
                 np.concatenate([p.scales for p in parts]), off)


class GraphBuilder:
    def __init__(self, model: GGUFModel, opts: GraphOptions):
        self.m, self.c, self.o = model, model.config, opts
        self.b = _Builder()
        self.bits = {"int4": 4, "int8": 8, "fp32": None}[opts.precision]
        self._blocksums: dict[str, str] = {}

    # --- weights -------------------------------------------------------------------------
    def _linear(self, x: str, names: list[str], tag: str, bias: list[str] | None = None,
                bits: int | None = None, force_bits: bool = False) -> str:
        """y = x @ concat(W_names)^T (+ bias), as MatMulNBits or MatMul depending on precision."""
        b = self.b
        bits = bits if bits is not None else self.bits
        bias_arr = np.concatenate([self.m.dequant(n) for n in bias]).astype(np.float32) if bias else None
        if bits is None:
            w = np.concatenate([to_float(*self.m.weight(n)) for n in names])
            y = b.op("MatMul", [x, b.init(f"{tag}.weight", w.T.copy())], name=f"{tag}/MatMul")[0]
            if bias_arr is not None:
                y = b.op("Add", [y, b.init(f"{tag}.bias", bias_arr)], name=f"{tag}/Add")[0]
            return y
        if not force_bits:
            bits = max(self._bits_for(n, bits) for n in names)  # one fused node: one bit width
        nb = _merge_nbits([to_nbits(*self.m.weight(n), bits) for n in names])
        ins = [x, b.init(f"{tag}.qweight", nb.b), b.init(f"{tag}.scales", nb.scales)]
        if bias_arr is not None:
            ins += [""] * (5 - len(ins)) + [b.init(f"{tag}.bias", bias_arr)]
        y = b.op("MatMulNBits", ins, domain=MS, name=f"{tag}/MatMulNBits", K=nb.k, N=nb.n, bits=bits,
                 block_size=32, accuracy_level=self.o.accuracy_level)[0]
        if nb.offsets is not None:
            # Asymmetric blocks: y += blocksum(x) @ offsets^T  (exact; see quant.py)
            c = b.init(f"{tag}.offsets", np.ascontiguousarray(nb.offsets.T))
            y = b.op("Add", [y, b.op("MatMul", [self._blocksum(x, nb.k), c], name=f"{tag}/offset_MatMul")[0]],
                     name=f"{tag}/offset_Add")[0]
        return y

    def _bits_for(self, name: str, bits: int) -> int:
        """int4 keeps 4-bit sources at 4 bits but puts Q8_0 sources, and an LM head that is not
        already 4-bit, on 8 bits: re-quantizing 8-bit blocks to 4 bits stacks a second rounding on
        the first (SmolLM2's Q8_0 LM head at 4 bits: teacher-forced top-1 agreement with the
        reference 75 %, KL 0.060; at 8 bits 95 %, KL 0.0066, like llama.cpp on the GGUF: 95.6 %,
        0.0054), and the head's errors go straight into the logits."""
        qt = self.m.qtype(name)
        if bits == 4 and (qt == QT.Q8_0 or (self._is_head(name) and qt not in (QT.Q4_0, QT.Q4_1))):
            return 8
        return bits

    def _is_head(self, name: str) -> bool:
        return name == ("token_embd.weight" if self.c.tied else "output.weight")

    def _blocksum(self, x: str, k: int) -> str:
        """[batch, seq, K] -> [batch, seq, K/32] sums of each block of 32 inputs (cached per input)."""
        if k % 32:
            raise ValueError(f"asymmetric 4-bit weights need K % 32 == 0 (K={k})")
        if x not in self._blocksums:
            # Reshape + ReduceSum measured faster than a MatMul with a block-indicator matrix.
            r = self.b.op("Reshape", [x, self.b.init(f"bs_shape{k}", np.array([0, 0, k // 32, 32], np.int64))],
                          name=self.b.name("blocksum/Reshape"))[0]
            self._blocksums[x] = self.b.op("ReduceSum", [r, self.b.init("axes-1", np.array([-1], np.int64))],
                                           name=self.b.name("blocksum/ReduceSum"), keepdims=0)[0]
        return self._blocksums[x]

    def _embedding(self, ids: str) -> str:
        b, m = self.b, self.m
        qt, data = m.weight("token_embd.weight")
        mode = self.o.embedding
        if mode == "auto":
            mode = "fp32" if self.bits is None else "q8"
        if mode == "q8":
            # 8-bit table (Q8_0 maps exactly); dequantized on the fly for the few gathered rows.
            nb = to_nbits(qt, data, 8)
            zp = np.full((nb.n, nb.b.shape[1]), 128, np.uint8)
            return b.op("GatherBlockQuantized",
                        [b.init("embed.q8", nb.b.reshape(nb.n, -1)), ids,
                         b.init("embed.scales", nb.scales.reshape(nb.n, -1)), b.init("embed.zp", zp)],
                        domain=MS, name="embed/GatherBlockQuantized", bits=8, block_size=32,
                        gather_axis=0, quantize_axis=1)[0]
        w = to_float(qt, data)
        if mode == "fp16":
            g = b.op("Gather", [b.init("embed.f16", w.astype(np.float16)), ids], name="embed/Gather")[0]
            return b.op("Cast", [g], name="embed/Cast", to=TensorProto.FLOAT)[0]
        return b.op("Gather", [b.init("embed.weight", w), ids], name="embed/Gather")[0]

    def _rope_caches(self) -> tuple[str, str]:
        c = self.c
        inv = 1.0 / (c.rope_theta ** (np.arange(0, c.head_dim, 2, dtype=np.float64) / c.head_dim))
        ang = np.outer(np.arange(c.context, dtype=np.float64), inv)
        return (self.b.init("rope.cos", np.cos(ang).astype(np.float32)),
                self.b.init("rope.sin", np.sin(ang).astype(np.float32)))

    # --- graph ---------------------------------------------------------------------------
    def build(self) -> onnx.ModelProto:
        b, c = self.b, self.c
        L = c.layers
        eps = float(c.eps)
        vin = lambda n, t, s: helper.make_tensor_value_info(n, t, s)  # noqa: E731
        inputs = [vin("input_ids", TensorProto.INT64, ["batch", "seq"]),
                  vin("attention_mask", TensorProto.INT64, ["batch", "total_seq"]),
                  vin("position_ids", TensorProto.INT64, ["batch", "seq"]),
                  vin("logits_to_keep", TensorProto.INT64, [1])]
        outputs = [vin("logits", TensorProto.FLOAT, ["batch", "kept", c.vocab])]
        for i in range(L):
            for kv in ("key", "value"):
                inputs.append(vin(f"past_key_values.{i}.{kv}", TensorProto.FLOAT,
                                  ["batch", c.kv_heads, "past_seq", c.head_dim]))
                outputs.append(vin(f"present.{i}.{kv}", TensorProto.FLOAT,
                                   ["batch", c.kv_heads, "present_seq", c.head_dim]))

        # GQA wants seqlens_k = (tokens in cache after this step) - 1 and the total length, int32.
        msum = b.op("ReduceSum", ["attention_mask", b.init("axes1", np.array([1], np.int64))],
                    name="mask/ReduceSum", keepdims=0)[0]
        msub = b.op("Sub", [msum, b.init("one64", np.array(1, np.int64))], name="mask/Sub")[0]
        seqlens = b.op("Cast", [msub], name="mask/seqlens_k", to=TensorProto.INT32)[0]
        shape = b.op("Shape", ["attention_mask"], name="mask/Shape")[0]
        tot = b.op("Gather", [shape, b.init("idx1", np.array(1, np.int64))], name="mask/Gather", axis=0)[0]
        total = b.op("Cast", [tot], name="mask/total_len", to=TensorProto.INT32)[0]
        cos, sin = self._rope_caches()

        x = self._embedding("input_ids")
        h = b.op("SimplifiedLayerNormalization", [x, b.init("blk.0.attn_norm", self.m.dequant("blk.0.attn_norm.weight"))],
                 name="blk.0/attn_norm", axis=-1, epsilon=eps, stash_type=1)[0]
        for i in range(L):
            p = f"blk.{i}"
            qkv_bias = [f"{p}.attn_{t}.bias" for t in "qkv"] if c.qkv_bias else None
            qkv = self._linear(h, [f"{p}.attn_{t}.weight" for t in "qkv"], f"{p}.attn_qkv", bias=qkv_bias)
            attn = b.op("GroupQueryAttention",
                        [qkv, "", "", f"past_key_values.{i}.key", f"past_key_values.{i}.value", seqlens, total,
                         cos, sin, "position_ids"], domain=MS, name=f"{p}/GroupQueryAttention",
                        outputs=[f"{p}/attn", f"present.{i}.key", f"present.{i}.value"],
                        num_heads=c.heads, kv_num_heads=c.kv_heads, do_rotary=1, rotary_interleaved=0,
                        scale=float(1.0 / np.sqrt(c.head_dim)))[0]
            o = self._linear(attn, [f"{p}.attn_output.weight"], f"{p}.attn_output")
            h2, _, _, resid = b.op("SkipSimplifiedLayerNormalization",
                                   [o, x, b.init(f"{p}.ffn_norm", self.m.dequant(f"{p}.ffn_norm.weight"))],
                                   n_out=4, domain=MS, name=f"{p}/ffn_norm", epsilon=eps)
            gu = self._linear(h2, [f"{p}.ffn_gate.weight", f"{p}.ffn_up.weight"], f"{p}.ffn_gate_up")
            g, u = b.op("Split", [gu, b.init(f"{p}.split", np.array([c.ffn, c.ffn], np.int64))], n_out=2,
                        name=f"{p}/Split", axis=-1)
            sig = b.op("Sigmoid", [g], name=f"{p}/Sigmoid")[0]
            act = b.op("Mul", [b.op("Mul", [g, sig], name=f"{p}/SiLU")[0], u], name=f"{p}/SwiGLU")[0]
            d = self._linear(act, [f"{p}.ffn_down.weight"], f"{p}.ffn_down")
            if i + 1 < L:
                nxt = f"blk.{i + 1}.attn_norm"
                h, _, _, x = b.op("SkipSimplifiedLayerNormalization",
                                  [d, resid, b.init(nxt, self.m.dequant(nxt + ".weight"))], n_out=4, domain=MS,
                                  name=f"blk.{i + 1}/attn_norm", epsilon=eps)
            else:
                # Only the last `logits_to_keep` positions reach the final norm and the LM head.
                start = b.op("Neg", ["logits_to_keep"], name="last/Neg")[0]
                sl = [start, b.init("last.end", np.array([np.iinfo(np.int64).max], np.int64)), "axes1"]
                d_last = b.op("Slice", [d] + sl, name="last/Slice_d")[0]
                r_last = b.op("Slice", [resid] + sl, name="last/Slice_resid")[0]
                hn = b.op("SkipSimplifiedLayerNormalization",
                          [d_last, r_last, b.init("output_norm", self.m.dequant("output_norm.weight"))],
                          n_out=1, domain=MS, name="output_norm", epsilon=eps)[0]
        head = "token_embd.weight" if c.tied else "output.weight"
        head_bits = self.o.head_bits if self.bits is not None else None
        logits = self._linear(hn, [head], "lm_head", bits=head_bits, force_bits=head_bits is not None)
        b.nodes.append(helper.make_node("Identity", [logits], ["logits"], name="logits/Identity"))

        graph = helper.make_graph(b.nodes, "nib_decoder", inputs, outputs, b.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(MS, 1)],
                                  producer_name="nib-convert")
        model.ir_version = 10
        return model


def build_model(model: GGUFModel, opts: GraphOptions) -> onnx.ModelProto:
    return GraphBuilder(model, opts).build()
