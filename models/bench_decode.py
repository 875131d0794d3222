#!/usr/bin/env python3
"""Measure prefill and decode speed of converted nib model directories with onnxruntime (CPU).

    .venv/bin/python models/bench_decode.py DIR [DIR ...] [--threads 2] [--runs 3] [--steps 64] [--llama-cpp GGUF]

For each model directory: prefill tokens/s of a 512-token prompt (cold, empty cache), decode
tokens/s for `--steps` greedy steps right after that 512-token prompt, and decode tokens/s
after a short (8-token) prompt.  Medians over `--runs`.  The prompt is Python source text
(this file's own code, repeated) tokenized with the directory's tokenizer.json, so runs are
comparable across precisions of one model.  The session is driven the way the Rust engine
drives it (present.* fed back as past_key_values.*).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from nib_convert.runtime import OrtDecoder  # noqa: E402


def prompt_ids(model_dir: str, n: int) -> list[int]:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    text = open(os.path.abspath(__file__), encoding="utf-8").read()
    ids: list[int] = []
    while len(ids) < n:
        ids += tok.encode(text, add_special_tokens=False).ids
    return ids[:n]


def bench(model_dir: str, threads: int, runs: int, steps: int, prompt_len: int) -> dict:
    t0 = time.perf_counter()
    dec = OrtDecoder(model_dir, threads=threads)
    load_s = time.perf_counter() - t0
    ids = prompt_ids(model_dir, prompt_len)
    prefill, decode_long, decode_short = [], [], []
    dec.forward(ids[:16], dec.new_cache())  # warm-up (first-run allocations)
    for _ in range(runs):
        t = time.perf_counter()
        logits, cache = dec.forward(ids, dec.new_cache())
        prefill.append(len(ids) / (time.perf_counter() - t))
        decode_long.append(_decode(dec, logits, cache, steps))
        logits, cache = dec.forward(ids[:8], dec.new_cache())
        decode_short.append(_decode(dec, logits, cache, steps))
    size = sum(os.path.getsize(os.path.join(model_dir, f)) for f in os.listdir(model_dir)
               if f.startswith("model.onnx"))
    precision = json.load(open(os.path.join(model_dir, "nib.json"))).get("precision", "?")
    return {"dir": model_dir, "precision": precision, "size_mb": size / 1e6, "load_s": load_s,
            "prefill": statistics.median(prefill), "decode_512": statistics.median(decode_long),
            "decode_short": statistics.median(decode_short),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _decode(dec: OrtDecoder, logits, cache, steps: int) -> float:
    t = time.perf_counter()
    for _ in range(steps):
        logits, cache = dec.forward([int(logits.argmax())], cache)
    return steps / (time.perf_counter() - t)


def bench_llama_cpp(gguf_path: str, model_dir: str, threads: int, runs: int, steps: int, prompt_len: int) -> dict:
    """The same measurement with llama.cpp (llama-cpp-python, when installed) on the source GGUF."""
    import llama_cpp

    llm = llama_cpp.Llama(gguf_path, n_ctx=prompt_len + steps + 16, n_batch=prompt_len, n_threads=threads,
                          n_threads_batch=threads, verbose=False)
    ids = prompt_ids(model_dir, prompt_len)

    def last_logits():
        n_vocab = llama_cpp.llama_n_vocab(llama_cpp.llama_model_get_vocab(llm.model))
        return np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(n_vocab,))

    def run(prompt: list[int]) -> tuple[float, float]:
        llm.reset()
        t = time.perf_counter()
        llm.eval(prompt)
        pre = len(prompt) / (time.perf_counter() - t)
        t = time.perf_counter()
        for _ in range(steps):
            llm.eval([int(last_logits().argmax())])
        return pre, steps / (time.perf_counter() - t)

    run(ids[:16])
    long = [run(ids) for _ in range(runs)]
    short = [run(ids[:8]) for _ in range(runs)]
    return {"dir": "llama.cpp " + os.path.basename(gguf_path)[:30], "precision": "gguf",
            "size_mb": os.path.getsize(gguf_path) / 1e6, "load_s": float("nan"),
            "prefill": statistics.median(p for p, _ in long), "decode_512": statistics.median(d for _, d in long),
            "decode_short": statistics.median(d for _, d in short), "peak_rss_mb": float("nan")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dirs", nargs="+")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--prompt", type=int, default=512)
    ap.add_argument("--llama-cpp", metavar="GGUF", help="also time llama.cpp (llama-cpp-python) on this GGUF")
    a = ap.parse_args()
    print(f"threads={a.threads} runs={a.runs} steps={a.steps} prompt={a.prompt} (medians)")
    print(f"{'model':<40} {'prec':<5} {'MB':>6} {'load s':>6} {'prefill tok/s':>13} "
          f"{'decode@512 tok/s':>16} {'decode@8 tok/s':>14} {'peak RSS MB':>11}")
    jobs = [lambda d=d: bench(d, a.threads, a.runs, a.steps, a.prompt) for d in a.dirs]
    if a.llama_cpp:
        jobs.append(lambda: bench_llama_cpp(a.llama_cpp, a.dirs[0], a.threads, a.runs, a.steps, a.prompt))
    for job in jobs:
        r = job()
        d = r["dir"]
        print(f"{d:<40} {r['precision']:<5} {r['size_mb']:6.0f} {r['load_s']:6.2f} {r['prefill']:13.0f} "
              f"{r['decode_512']:16.1f} {r['decode_short']:14.1f} {r['peak_rss_mb']:11.0f}", flush=True)


if __name__ == "__main__":
    main()
