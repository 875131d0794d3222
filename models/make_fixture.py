#!/usr/bin/env python3
"""Build the tiny test model used by the Rust tests: tests/fixtures/tiny-model/.

    .venv/bin/python models/make_fixture.py [--out tests/fixtures/tiny-model]

A synthetic llama GGUF (2 layers, hidden 64, 4 heads / 2 KV heads, random weights from a fixed
seed, tensors in F32/Q8_0/Q4_0/Q4_1, a real byte-level BPE vocabulary with all 256 bytes and
150 merges, StarCoder FIM tokens, `<|endoftext|>` as eos) converted at fp32 so that Rust and
Python onnxruntime agree to float rounding.  reference.json holds what the Rust tests compare
against (tolerance 1e-4), computed here with Python onnxruntime:
  prompt, prompt_ids, greedy_tokens (16 steps, KV cache), prefill_logits (last position, full
  vocabulary), decode_logits (after each of the first 3 decode steps), and prefix_* (the same
  greedy run when the first half of the prompt is a cached prefix and the rest is prefilled
  with past_seq > 0); bf16_kv: the same logits with every key and value rounded to bf16 as it
  enters the cache and every query rounded to bf16, as nib's attention kernel rounds them
  (models/kv_rounding.py).
Deterministic: running it twice gives identical files.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from kv_rounding import round_attention_inputs  # noqa: E402
from nib_convert.check import check_numerics, check_tokenizer  # noqa: E402
from nib_convert.convert import convert  # noqa: E402
from nib_convert.graph import GraphOptions  # noqa: E402
from nib_convert.runtime import OrtDecoder  # noqa: E402
from nib_convert.synth import write_synthetic_gguf  # noqa: E402

PROMPT = "def add(a, b):\n    return a + b\n\nclass Point:\n    def norm(self):"
STEPS = 16
SEED = 1234


def main() -> int:
    ap = argparse.ArgumentParser(description="Build tests/fixtures/tiny-model")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--out", default=os.path.join(root, "tests", "fixtures", "tiny-model"))
    a = ap.parse_args()
    from tokenizers import Tokenizer

    # Take the first seed whose greedy continuation has no special token (so a Rust test that
    # stops at eos still sees all 16 steps).  Deterministic: the same seed is found every time.
    for seed in range(SEED, SEED + 200):
        with tempfile.TemporaryDirectory() as tmp:
            gguf_path = os.path.join(tmp, "tiny-synthetic.gguf")
            write_synthetic_gguf(gguf_path, arch="llama", seed=seed, name="tiny-synthetic")
            convert(gguf_path, a.out, GraphOptions(precision="fp32"), name="tiny-synthetic", log=lambda *x: None)
            ids = Tokenizer.from_file(os.path.join(a.out, "tokenizer.json")).encode(PROMPT).ids
            dec = OrtDecoder(a.out, threads=1)
            toks, logits = dec.greedy(ids, STEPS)
            if min(toks) < 5:   # ids 0-4 are <|endoftext|> and the FIM / file markers
                continue
            # The fixture must itself pass the checks it stands in for.
            r = check_numerics(gguf_path, a.out, threads=1)
            assert r["max_abs_diff"] < 1e-3 and r["greedy_match"] and r["prefix_match"], r
            assert not check_tokenizer(gguf_path, a.out)
            break
    else:
        raise SystemExit("no seed gave a special-token-free greedy run")
    prefix_len = len(ids) // 2
    ptoks, plogits = dec.greedy(ids, STEPS, prefix_len=prefix_len)
    bf16_kv = bf16_kv_reference(a.out, ids, prefix_len)
    ref = {
        "prompt": PROMPT,
        "prompt_ids": ids,
        "steps": STEPS,
        "greedy_tokens": toks,
        "prefill_logits": [float(x) for x in logits[0]],
        "decode_logits": [[float(x) for x in lg] for lg in logits[1:4]],
        "prefix_len": prefix_len,
        "prefix_greedy_tokens": ptoks,
        "prefix_prefill_logits": [float(x) for x in plogits[0]],
        "bf16_kv": bf16_kv,
        "tolerance": 1e-4,
        "note": "decode_logits[i] are the last-position logits after feeding greedy_tokens[i] "
                "(i = 0, 1, 2); prefix_*: prompt_ids[:prefix_len] prefilled first, then "
                "prompt_ids[prefix_len:] with past_seq = prefix_len.",
    }
    with open(os.path.join(a.out, "reference.json"), "w") as f:
        json.dump(ref, f, indent=1)
        f.write("\n")
    size = sum(os.path.getsize(os.path.join(a.out, n)) for n in os.listdir(a.out))
    print(f"wrote {a.out} (seed {seed}): {len(ids)} prompt tokens, greedy {toks}, {size / 1e6:.2f} MB")
    return 0


def bf16_kv_reference(model_dir: str, ids: list[int], prefix_len: int) -> dict:
    """prefill, decode and prefix-prefill logits of the model with its KV and queries rounded to
    bf16."""
    import onnx
    from onnx import TensorProto

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.onnx")
        model = onnx.load(os.path.join(model_dir, "model.onnx"))
        onnx.save(round_attention_inputs(model, TensorProto.BFLOAT16, queries=True), path)
        dec = OrtDecoder(path, threads=1)
        _, logits = dec.greedy(ids, 3)
        _, plogits = dec.greedy(ids, 0, prefix_len=prefix_len)
    return {
        "prefill_logits": [float(x) for x in logits[0]],
        "decode_logits": [[float(x) for x in lg] for lg in logits[1:4]],
        "prefix_prefill_logits": [float(x) for x in plogits[0]],
    }


if __name__ == "__main__":
    sys.exit(main())
