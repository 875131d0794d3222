"""GGUF blocks -> MatMulNBits blobs: the 4/8-bit mappings must reproduce gguf-py's dequantization."""

import numpy as np
import pytest
from gguf import GGMLQuantizationType as QT
from gguf.quants import dequantize, quantize

from nib_convert.quant import quantize_q4, quantize_q8, to_nbits


@pytest.mark.parametrize("qt,bits", [(QT.Q4_0, 4), (QT.Q4_1, 4), (QT.Q8_0, 8)])
def test_lossless_block_mapping(qt, bits):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((48, 96)).astype(np.float32)
    w[3, :32] = 0.5          # a flat block: Q4_1 stores d = 0, m = 0.5
    raw = quantize(w, qt)
    nb = to_nbits(qt, raw, bits)
    assert nb.bits == bits and nb.b.shape == (48, 3, 32 * bits // 8)
    np.testing.assert_allclose(nb.dequant(), dequantize(raw, qt), rtol=0, atol=1e-6)


def test_requantization_error_is_bounded():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((16, 64)).astype(np.float32)
    b, s, off = quantize_q4(w)
    from nib_convert.quant import NBits
    err4 = np.abs(NBits(4, 16, 64, b, s, off).dequant() - w)
    # half a step of the per-block grid (max - min) / 15
    step = (w.reshape(16, 2, 32).max(-1) - w.reshape(16, 2, 32).min(-1)) / 15
    assert (err4.reshape(16, 2, 32) <= step[..., None] / 2 + 1e-6).all()
    b8, s8 = quantize_q8(w)
    err8 = np.abs(NBits(8, 16, 64, b8, s8, None).dequant() - w)
    assert err8.max() <= np.abs(w).max() / 127 / 2 + 1e-6
