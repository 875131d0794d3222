#!/usr/bin/env python3
"""The peers nib's engine is compared with, on exactly the token ids nib's engine bench used
(`cargo bench --bench engine` prints them): prefill of the prompt, then decode of the tokens
nib generated (fed back one by one, an argmax over the logits per step, as nib does).

    .venv/bin/python benches/peers.py ort DIR IDS.json [--threads 2] [--runs 3]
        # a minimal Python onnxruntime loop over the same ONNX file (models/nib_convert/runtime.py's
        # OrtDecoder), prefill in 128-token chunks like nib: the ratio to nib is nib's overhead
    .venv-llama/bin/python benches/peers.py llama GGUF IDS.json [--threads 2] [--runs 3]
        # llama.cpp (llama-cpp-python, scripts/setup-llama.sh) on the GGUF nib's model came from

IDS.json: {"promptIds": [...], "generatedIds": [...]}. Prints JSON: per-run prefill and decode
tokens/s (decode = generated tokens / time from the prefill's logits to the last token's).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PREFILL_CHUNK = 128  # server/src/engine/generate.rs


def ort_runner(model_dir: str, threads: int):
    sys.path.insert(0, os.path.join(REPO, "models"))
    from nib_convert.runtime import OrtDecoder

    dec = OrtDecoder(model_dir, threads=threads)

    def run(prompt: list[int], generated: list[int]) -> tuple[float, float]:
        cache = dec.new_cache()
        t = time.perf_counter()
        for start in range(0, len(prompt), PREFILL_CHUNK):
            logits, cache = dec.forward(prompt[start:start + PREFILL_CHUNK], cache)
        prefill_s = time.perf_counter() - t
        t = time.perf_counter()
        for index, token in enumerate(generated):
            int(np.argmax(logits))
            if index + 1 < len(generated):
                logits, cache = dec.forward([token], cache)
        return len(prompt) / prefill_s, len(generated) / (time.perf_counter() - t)

    return run, {"runtime": "onnxruntime " + __import__("onnxruntime").__version__}


def llama_runner(gguf: str, threads: int, n_ctx: int):
    import llama_cpp

    llm = llama_cpp.Llama(gguf, n_ctx=n_ctx, n_batch=512, n_threads=threads, n_threads_batch=threads,
                          verbose=False)
    n_vocab = llama_cpp.llama_n_vocab(llama_cpp.llama_model_get_vocab(llm.model))

    def last_logits():
        return np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(n_vocab,))

    def run(prompt: list[int], generated: list[int]) -> tuple[float, float]:
        llm.reset()
        t = time.perf_counter()
        llm.eval(prompt)
        prefill_s = time.perf_counter() - t
        t = time.perf_counter()
        for index, token in enumerate(generated):
            int(np.argmax(last_logits()))
            if index + 1 < len(generated):
                llm.eval([token])
        return len(prompt) / prefill_s, len(generated) / (time.perf_counter() - t)

    return run, {"runtime": "llama.cpp (llama-cpp-python " + llama_cpp.__version__ + ")"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("peer", choices=["ort", "llama"])
    ap.add_argument("model", help="model directory (ort) or GGUF file (llama)")
    ap.add_argument("ids", help="JSON with promptIds and generatedIds")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    ids = json.load(open(a.ids))
    prompt, generated = ids["promptIds"], ids["generatedIds"]
    if a.peer == "ort":
        run, info = ort_runner(a.model, a.threads)
    else:
        run, info = llama_runner(a.model, a.threads, len(prompt) + len(generated) + 16)
    run(prompt[:16], generated[:4])  # warm-up: first-run allocations, as nib's bench does
    runs = [run(prompt, generated) for _ in range(a.runs)]
    print(json.dumps({**info, "threads": a.threads, "promptTokens": len(prompt), "generatedTokens": len(generated),
                      "prefill": [p for p, _ in runs], "decode": [d for _, d in runs]}))


if __name__ == "__main__":
    main()
