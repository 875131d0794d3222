"""Turn GGUF weight blocks into ONNX Runtime `MatMulNBits` blobs (block size 32).

MatMulNBits (com.microsoft) computes Y = A @ dequant(B)^T with, per block of 32 weights of one
output row, w = (q - zero_point) * scale.  Its B input is uint8 [N, n_blocks, 32*bits/8]; for
4 bits, byte i of a block holds element 2i in the low nibble and 2i+1 in the high nibble.

Measured on onnxruntime 1.31.1 CPU (AVX2, 2 threads, N=1536 K=576, one row): without a
zero_points input 61 us; uint8 zero points 103 us; float zero points 1290 us (a slow fallback,
and unsupported for 8 bits).  So we never pass zero points.  An asymmetric block
w = d*q + m is written as (q - 8)*d + c with c = m + 8d, and the per-block constant c goes to a
small exact correction Y += blocksum(A) @ C^T computed next to the MatMulNBits (graph.py).

GGUF blocks (ggml-quants.h) map onto that without loss:
  Q4_0: half d; 16 bytes, byte j = element j (low nibble) | element j+16 (high)   w = d*(q-8)
        -> scale d (MatMulNBits' default 4-bit zero point is 8), no offsets
  Q4_1: half d, half m; same nibbles                                               w = d*q + m
        -> scale d, offset c = m + 8d
  Q8_0: half d; 32 int8                                                            w = d*q
        -> 8 bits, q+128 as uint8 (default 8-bit zero point is 128)
Everything else (F32/F16, or a Q4 source asked for at 8 bits, or Q8_0 asked for at 4 bits) is
dequantized and re-quantized: asymmetric 4-bit (min/max per block, like Q4_1) or symmetric
8-bit (like Q8_0).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from gguf import GGMLQuantizationType as QT
from gguf.quants import dequantize

BLOCK = 32


@dataclass
class NBits:
    """Inputs of one MatMulNBits node (no zero points) plus optional per-block offsets."""
    bits: int
    n: int
    k: int
    b: np.ndarray                  # uint8 [N, n_blocks, BLOCK*bits/8]
    scales: np.ndarray             # float32 [N * n_blocks]
    offsets: np.ndarray | None     # float32 [N, n_blocks]: w = (q - zp_default)*scale + offset

    def dequant(self) -> np.ndarray:
        """float32 (N, K): what the graph computes with these blobs (for tests)."""
        nb = self.b.shape[1]
        if self.bits == 4:
            q = np.empty((self.n, nb, BLOCK), np.float32)
            q[..., 0::2] = self.b & 15
            q[..., 1::2] = self.b >> 4
            q -= 8
        else:
            q = self.b.astype(np.float32) - 128
        w = q * self.scales.reshape(self.n, nb, 1)
        if self.offsets is not None:
            w += self.offsets[..., None]
        return w.reshape(self.n, nb * BLOCK)[:, :self.k]


def _pack4(q: np.ndarray) -> np.ndarray:
    """(..., 32) values in 0..15 -> (..., 16) bytes, MatMulNBits nibble order."""
    q = q.astype(np.uint8)
    return q[..., 0::2] | (q[..., 1::2] << 4)


def _ggml_nibbles(qs: np.ndarray) -> np.ndarray:
    """ggml's (..., 16) bytes -> (..., 32) values: low nibbles are elements 0..15, high 16..31."""
    return np.concatenate([qs & 15, qs >> 4], axis=-1)


def _blocks(data: np.ndarray, block_bytes: int) -> np.ndarray:
    n = data.shape[0]
    return np.ascontiguousarray(data).reshape(n, -1, block_bytes)


def _half(blocks: np.ndarray, at: int) -> np.ndarray:
    return blocks[..., at:at + 2].copy().view(np.float16)[..., 0].astype(np.float32)


def _pad(w: np.ndarray) -> np.ndarray:
    k = w.shape[1]
    if k % BLOCK:
        w = np.pad(w, ((0, 0), (0, BLOCK - k % BLOCK)))
    return w


def quantize_q4(w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Asymmetric 4-bit per block of 32 (like Q4_1): (packed bytes, scales, offsets [N, nb])."""
    n, k = w.shape
    blocks = _pad(w.astype(np.float32)).reshape(n, -1, BLOCK)
    lo, hi = blocks.min(-1), blocks.max(-1)
    scale = ((hi - lo) / 15.0).astype(np.float32)
    safe = np.where(scale == 0, 1.0, scale)
    q = np.clip(np.round((blocks - lo[..., None]) / safe[..., None]), 0, 15)
    return _pack4(q), scale.reshape(-1), (lo + 8 * scale).astype(np.float32)


def quantize_q8(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric 8-bit per block of 32 (like Q8_0): returns (uint8 q+128, scales)."""
    n, k = w.shape
    blocks = _pad(w.astype(np.float32)).reshape(n, -1, BLOCK)
    amax = np.abs(blocks).max(-1)
    scale = np.where(amax == 0, 1.0, amax / 127.0).astype(np.float32)
    q = np.clip(np.round(blocks / scale[..., None]), -127, 127) + 128
    return q.astype(np.uint8), scale.reshape(-1)


def to_float(qt: QT, data: np.ndarray) -> np.ndarray:
    if qt == QT.F32:
        return np.asarray(data, np.float32)
    return dequantize(np.asarray(data), qt).astype(np.float32)


def to_nbits(qt: QT, data: np.ndarray, bits: int) -> NBits:
    """MatMulNBits blobs for a GGUF weight with rows = output features (see module docstring)."""
    n = data.shape[0]
    if bits == 4 and qt == QT.Q4_0:
        blk = _blocks(data, 18)
        q = _ggml_nibbles(blk[..., 2:])
        return NBits(4, n, blk.shape[1] * BLOCK, _pack4(q), _half(blk, 0).reshape(-1), None)
    if bits == 4 and qt == QT.Q4_1:
        blk = _blocks(data, 20)
        d, m = _half(blk, 0), _half(blk, 2)
        q = _ggml_nibbles(blk[..., 4:])
        return NBits(4, n, blk.shape[1] * BLOCK, _pack4(q), d.reshape(-1), (m + 8 * d).astype(np.float32))
    if bits == 8 and qt == QT.Q8_0:
        blk = _blocks(data, 34)
        q = (blk[..., 2:].view(np.int8).astype(np.int16) + 128).astype(np.uint8)
        return NBits(8, n, blk.shape[1] * BLOCK, q, _half(blk, 0).reshape(-1), None)
    w = to_float(qt, data)
    if bits == 4:
        b, s, off = quantize_q4(w)
        return NBits(4, n, w.shape[1], b, s, off)
    b, s = quantize_q8(w)
    return NBits(8, n, w.shape[1], b, s, None)

