"""Read a llama / qwen2 GGUF: hyper-parameters, tokenizer metadata and weight tensors.

Weights stay in their GGUF encoding until the graph builder asks for them, so a 4-bit source
can be mapped to ONNX Runtime's 4-bit MatMulNBits without ever being widened to float.

Layout facts this module relies on (from llama.cpp's converter and gguf-py):
- A 2-D GGUF tensor has ggml shape [ne0=in, ne1=out]; gguf-py exposes it as a numpy array of
  shape (out, in) for float types and (out, bytes_per_row) for block-quantized types, i.e. one
  row per output feature with the reduction dimension contiguous -- exactly MatMulNBits' B.
- For arch `llama`, llama.cpp's HF->GGUF converter permutes the rows of Q and K inside each
  head so that ggml's "normal" (adjacent-pair) RoPE reproduces HF's rotate-half RoPE.  We undo
  that row permutation (lossless, it only reorders rows) and use rotate-half RoPE in ONNX, the
  layout HF/Optimum exports use.  `qwen2` GGUFs are not permuted (ggml uses NEOX RoPE there).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from gguf import GGMLQuantizationType as QT
from gguf import GGUFReader
from gguf.quants import dequantize

from .tokenizer import TokenizerInfo

SUPPORTED_ARCHS = ("llama", "qwen2")
SUPPORTED_TYPES = (QT.F32, QT.F16, QT.BF16, QT.Q8_0, QT.Q4_0, QT.Q4_1)


@dataclass
class Config:
    arch: str
    name: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    ffn: int
    vocab: int
    context: int
    rope_theta: float
    eps: float
    bos_id: int | None
    eos_id: int | None
    tied: bool
    qkv_bias: bool


class GGUFModel:
    """A parsed GGUF file. `tensor(name)` returns the raw (possibly quantized) numpy view."""

    def __init__(self, path: str):
        self.path = path
        self.reader = GGUFReader(path)
        self.meta = {k: f.contents() for k, f in self.reader.fields.items() if not k.startswith("GGUF.")}
        self.tensors = {t.name: t for t in self.reader.tensors}
        arch = self.meta.get("general.architecture")
        if arch not in SUPPORTED_ARCHS:
            raise ValueError(f"architecture {arch!r} not supported (supported: {', '.join(SUPPORTED_ARCHS)})")
        for t in self.tensors.values():
            if t.tensor_type not in SUPPORTED_TYPES:
                raise ValueError(f"tensor {t.name}: type {t.tensor_type.name} not supported "
                                 f"(supported: {', '.join(q.name for q in SUPPORTED_TYPES)})")
        scaling = self.meta.get(f"{arch}.rope.scaling.type", "none")
        if scaling not in ("none", None) or "rope_freqs.weight" in self.tensors:
            raise ValueError(f"RoPE scaling ({scaling}) is not supported")
        self.config = self._config(arch)

    def _config(self, arch: str) -> Config:
        m = lambda k, d=None: self.meta.get(f"{arch}.{k}", d)  # noqa: E731
        hidden, heads = int(m("embedding_length")), int(m("attention.head_count"))
        head_dim = int(m("attention.key_length", hidden // heads))
        if int(m("rope.dimension_count", head_dim)) != head_dim:
            raise ValueError("partial rotary (rope.dimension_count != head_dim) is not supported")
        vocab = self.tensors["token_embd.weight"].shape[1]
        return Config(
            arch=arch,
            name=self.meta.get("general.name", "model"),
            hidden=hidden,
            layers=int(m("block_count")),
            heads=heads,
            kv_heads=int(m("attention.head_count_kv", heads)),
            head_dim=head_dim,
            ffn=int(m("feed_forward_length")),
            vocab=int(vocab),
            context=int(m("context_length", 2048)),
            rope_theta=float(m("rope.freq_base", 10000.0)),
            eps=float(m("attention.layer_norm_rms_epsilon", 1e-5)),
            bos_id=self.meta.get("tokenizer.ggml.bos_token_id"),
            eos_id=self.meta.get("tokenizer.ggml.eos_token_id"),
            tied="output.weight" not in self.tensors,
            qkv_bias="blk.0.attn_q.bias" in self.tensors,
        )

    # --- tokenizer -------------------------------------------------------------------------
    def tokenizer(self) -> TokenizerInfo:
        g = lambda k, d=None: self.meta.get(f"tokenizer.ggml.{k}", d)  # noqa: E731
        model = g("model")
        spm = model == "llama"  # SentencePiece: llama.cpp defaults add_bos and add_space_prefix to true
        return TokenizerInfo(
            model=model, pre=g("pre", "default"), tokens=g("tokens"), types=g("token_type", []),
            merges=g("merges", []), bos_id=g("bos_token_id"), eos_id=g("eos_token_id"),
            add_bos=bool(g("add_bos_token", spm)), add_eos=bool(g("add_eos_token", False)),
            scores=g("scores"), unk_id=g("unknown_token_id"), add_space_prefix=bool(g("add_space_prefix", True)))

    def chat_template(self) -> str | None:
        return self.meta.get("tokenizer.chat_template")

    # --- weights ---------------------------------------------------------------------------
    def qtype(self, name: str) -> QT:
        return self.tensors[name].tensor_type

    def raw(self, name: str) -> np.ndarray:
        return np.asarray(self.tensors[name].data)

    def dequant(self, name: str) -> np.ndarray:
        """float32 array in numpy (out, in) order, exactly as stored (no un-permutation)."""
        t = self.tensors[name]
        if t.tensor_type == QT.F32:
            return np.array(t.data, dtype=np.float32)
        return np.ascontiguousarray(dequantize(np.asarray(t.data), t.tensor_type), dtype=np.float32)

    def row_order(self, name: str) -> np.ndarray | None:
        """Row permutation turning a GGUF llama Q/K weight back into HF (rotate-half) order."""
        c = self.config
        if c.arch != "llama" or not (".attn_q." in name or ".attn_k." in name):
            return None
        n_head = c.heads if ".attn_q." in name else c.kv_heads
        rows = np.arange(n_head * c.head_dim)
        # GGUF row (h, i, j) <- HF row (h, j, i) with i < head_dim/2, j in {0,1}; invert it.
        return rows.reshape(n_head, c.head_dim // 2, 2).swapaxes(1, 2).reshape(-1)

    def weight(self, name: str) -> tuple[QT, np.ndarray]:
        """(type, data) with rows in HF order; quantized data is (rows, bytes_per_row) uint8."""
        t = self.tensors[name]
        data = np.asarray(t.data)
        order = self.row_order(name)
        if order is not None:
            data = data[order]
        return t.tensor_type, data
