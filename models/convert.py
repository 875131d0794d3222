#!/usr/bin/env python3
"""Convert a llama / qwen2 GGUF into a nib model directory (ONNX + tokenizer + metadata).

    python models/convert.py GGUF_PATH --out DIR [--precision int4|int8|fp32] [--check] [--threads N]

Writes DIR/model.onnx (+ model.onnx.data when large), tokenizer.json, config.json and nib.json;
see models/README.md for the format.  --check then compares the ONNX graph with a numpy
reference forward pass over the dequantized GGUF weights, and tokenizer.json with a reference
BPE built from the GGUF vocabulary, and exits non-zero on failure.
Dependencies: gguf, numpy, onnx, onnxruntime (the check also needs tokenizers and regex).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from nib_convert.convert import convert  # noqa: E402
from nib_convert.graph import GraphOptions  # noqa: E402

# Tolerances for --check.  fp32 runs the same float math as the reference, so only summation
# order differs.  int4/int8 use MatMulNBits accuracy_level=4: activations are quantized to int8
# per block of 32 inside every matmul (as llama.cpp does with Q8_1 activations), which moves
# logits by a few percent of their range; on SmolLM2 the teacher-forced top-1 agreement with the
# reference is ~95 %, the same as llama.cpp's own on the same GGUF.
FP32_ABS_TOL = 1e-3
QUANT_REL_TOL = 0.25
QUANT_MIN_AGREEMENT = 0.8


def run_check(gguf_path: str, out: str, precision: str, threads: int) -> bool:
    from nib_convert.check import check_numerics, check_tokenizer

    ok = True
    t = time.time()
    r = check_numerics(gguf_path, out, threads=threads)
    print(f"numerics ({precision}): max |logit diff| {r['max_abs_diff']:.3g} (relative {r['rel_diff']:.3g}), "
          f"top-1 agreement {r['top1_agreement']:.3f}, greedy 32 steps identical: {r['greedy_match']}, "
          f"cached-prefix greedy identical: {r['prefix_match']} ({time.time() - t:.1f}s)")
    if precision == "fp32":
        ok &= r["max_abs_diff"] < FP32_ABS_TOL and r["greedy_match"] and r["prefix_match"]
    else:
        ok &= r["rel_diff"] < QUANT_REL_TOL and r["top1_agreement"] >= QUANT_MIN_AGREEMENT
    bad = check_tokenizer(gguf_path, out)
    print(f"tokenizer: {'identical to the reference tokenizer' if not bad else f'{len(bad)} mismatches'}")
    for b in bad[:3]:
        print(f"  {b['text'][:60]!r}\n    reference {b['reference'][:20]}\n    tokenizer {b['tokenizer_json'][:20]}")
    return ok and not bad


def main() -> int:
    ap = argparse.ArgumentParser(description="Convert a GGUF (llama/qwen2) into a nib model directory.")
    ap.add_argument("gguf")
    ap.add_argument("--out", required=True, help="output directory (created)")
    ap.add_argument("--precision", choices=["int4", "int8", "fp32"], default="int4")
    ap.add_argument("--check", action="store_true", help="verify numerics and tokenizer after converting")
    ap.add_argument("--threads", type=int, default=2, help="onnxruntime threads for --check")
    ap.add_argument("--accuracy-level", type=int, default=4, choices=[0, 1, 2, 3, 4],
                    help="MatMulNBits accuracy_level (4: int8 activations, fastest; 0: fp32)")
    ap.add_argument("--name", help="model name for nib.json (default: the GGUF's general.name)")
    a = ap.parse_args()
    t = time.time()
    print(f"converting {a.gguf} -> {a.out} ({a.precision})")
    convert(a.gguf, a.out, GraphOptions(precision=a.precision, accuracy_level=a.accuracy_level), name=a.name)
    print(f"done in {time.time() - t:.1f}s")
    if a.check and not run_check(a.gguf, a.out, a.precision, a.threads):
        print("CHECK FAILED", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
