"""An independent numpy forward pass over the dequantized GGUF weights (the numerics oracle).

It follows ggml's semantics, not the ONNX graph's: weights are dequantized by gguf-py's own
`dequantize`, Q/K rows stay in the GGUF's permuted order and llama uses ggml's adjacent-pair
("normal") RoPE while qwen2 uses rotate-half ("neox") RoPE, exactly as llama.cpp does.  So a
mistake in the converter's row un-permutation, block repacking or fused-op wiring shows up as a
logit difference.
"""

from __future__ import annotations

import numpy as np

from .gguf_model import GGUFModel


def _rms(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w


class Reference:
    def __init__(self, model: GGUFModel):
        self.c = c = model.config
        d = model.dequant
        self.emb = d("token_embd.weight")
        self.head = self.emb if c.tied else d("output.weight")
        self.out_norm = d("output_norm.weight")
        self.layers = []
        for i in range(c.layers):
            p = f"blk.{i}."
            lw = {k: d(p + k + ".weight") for k in ("attn_norm", "attn_q", "attn_k", "attn_v", "attn_output",
                                                      "ffn_norm", "ffn_gate", "ffn_up", "ffn_down")}
            for k in ("attn_q", "attn_k", "attn_v"):
                lw[k + ".bias"] = d(p + k + ".bias") if c.qkv_bias else 0.0
            self.layers.append(lw)
        inv = 1.0 / (c.rope_theta ** (np.arange(0, c.head_dim, 2, dtype=np.float64) / c.head_dim))
        self.inv_freq = inv

    def _rope(self, x: np.ndarray, pos: np.ndarray) -> np.ndarray:
        """x: (seq, heads, head_dim) at absolute positions `pos`."""
        ang = pos[:, None].astype(np.float64) * self.inv_freq[None, :]       # (seq, hd/2)
        cos, sin = np.cos(ang)[:, None, :].astype(np.float32), np.sin(ang)[:, None, :].astype(np.float32)
        if self.c.arch == "llama":   # ggml "normal" mode: pairs (2i, 2i+1)
            a, b = x[..., 0::2], x[..., 1::2]
            out = np.empty_like(x)
            out[..., 0::2] = a * cos - b * sin
            out[..., 1::2] = a * sin + b * cos
            return out
        half = x.shape[-1] // 2       # "neox" mode: pairs (i, i + hd/2)
        a, b = x[..., :half], x[..., half:]
        return np.concatenate([a * cos - b * sin, a * sin + b * cos], -1)

    def new_cache(self) -> list:
        return [[None, None] for _ in range(self.c.layers)]

    def forward(self, ids: list[int], cache: list) -> np.ndarray:
        """Run `ids` after whatever `cache` holds (extended in place); return last-position logits."""
        c = self.c
        past = 0 if cache[0][0] is None else cache[0][0].shape[0]
        pos = np.arange(past, past + len(ids))
        x = self.emb[np.asarray(ids)]
        g = c.heads // c.kv_heads
        for lw, kv in zip(self.layers, cache):
            h = _rms(x, lw["attn_norm"], c.eps)
            q = (h @ lw["attn_q"].T + lw["attn_q.bias"]).reshape(len(ids), c.heads, c.head_dim)
            k = (h @ lw["attn_k"].T + lw["attn_k.bias"]).reshape(len(ids), c.kv_heads, c.head_dim)
            v = (h @ lw["attn_v"].T + lw["attn_v.bias"]).reshape(len(ids), c.kv_heads, c.head_dim)
            q, k = self._rope(q, pos), self._rope(k, pos)
            kv[0] = k if kv[0] is None else np.concatenate([kv[0], k])
            kv[1] = v if kv[1] is None else np.concatenate([kv[1], v])
            K, V = np.repeat(kv[0], g, axis=1), np.repeat(kv[1], g, axis=1)   # (total, heads, hd)
            s = np.einsum("shd,thd->hst", q, K) * np.float32(1.0 / np.sqrt(c.head_dim))
            s = np.where(np.arange(kv[0].shape[0])[None, None, :] <= pos[None, :, None], s, -np.inf)
            s = np.exp(s - s.max(-1, keepdims=True))
            s /= s.sum(-1, keepdims=True)
            o = np.einsum("hst,thd->shd", s.astype(np.float32), V).reshape(len(ids), -1)
            x = x + o @ lw["attn_output"].T
            h = _rms(x, lw["ffn_norm"], c.eps)
            gt = h @ lw["ffn_gate"].T
            x = x + ((gt / (1 + np.exp(-gt))) * (h @ lw["ffn_up"].T)) @ lw["ffn_down"].T
        return _rms(x[-1], self.out_norm, c.eps) @ self.head.T

    def greedy(self, ids: list[int], steps: int) -> list[int]:
        cache = self.new_cache()
        logits = self.forward(ids, cache)
        out = []
        for _ in range(steps):
            out.append(int(np.argmax(logits)))
            logits = self.forward([out[-1]], cache)
        return out
