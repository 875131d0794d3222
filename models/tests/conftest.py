"""Shared fixtures: tiny synthetic GGUFs written once per test session."""

import os
import sys

import pytest

MODELS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, MODELS)

from gguf import GGMLQuantizationType as QT  # noqa: E402

from nib_convert.synth import write_synthetic_gguf  # noqa: E402

# Every decoder path: quantized blocks of each kind (Q4_1 fused with Q4_1, Q4_0, Q8_0) ...
MIXED = {"token_embd": QT.Q8_0, "output": QT.F16, "attn_q": QT.Q4_1, "attn_k": QT.Q4_1, "attn_v": QT.Q4_1,
         "attn_output": QT.Q4_0, "ffn_gate": QT.Q4_1, "ffn_up": QT.Q4_1, "ffn_down": QT.Q8_0}
# ... and float weights (re-quantized at int4/int8, plain MatMul at fp32).
FLOAT = {"token_embd": QT.F32, "output": QT.F32, "attn_q": QT.F16, "attn_k": QT.F16, "attn_v": QT.F16,
         "attn_output": QT.F32, "ffn_gate": QT.F16, "ffn_up": QT.F16, "ffn_down": QT.F32}
VARIANTS = {
    "llama-mixed": dict(arch="llama", types=MIXED, tied=True),
    # Float weights are freshly quantized to 4 bits at int4; a random network with gain 2 is chaotic
    # enough to turn that rounding into 80 % logit errors, so these use a tamer gain.
    "llama-float": dict(arch="llama", types=FLOAT, tied=False, gain=1.0),
    "qwen2-mixed": dict(arch="qwen2", types=MIXED, tied=False),
    "qwen2-float": dict(arch="qwen2", types=FLOAT, tied=True, gain=1.0),
    # SentencePiece vocabulary (tokenizer.ggml.model "llama", byte fallback, CodeLlama FIM tokens).
    "llama-spm": dict(arch="llama", types=MIXED, tied=True, tokenizer="spm"),
}


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory):
    """variant name -> path of its GGUF (built lazily, cached for the session)."""
    root = tmp_path_factory.mktemp("gguf")
    cache = {}

    def get(name: str, **overrides) -> str:
        key = (name, repr(sorted(overrides.items())))
        if key not in cache:
            path = str(root / f"{name}-{len(cache)}.gguf")
            write_synthetic_gguf(path, seed=7, **{**VARIANTS[name], **overrides})
            cache[key] = path
        return cache[key]

    return get
