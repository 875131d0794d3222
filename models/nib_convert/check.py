"""Numerics and tokenizer checks of a converted directory against its GGUF.

Numerics: the numpy `Reference` (ggml semantics, gguf-py dequantization) against onnxruntime on
the converted graph, covering the three ways the engine calls the graph:
  cold prefill (past_seq=0, seq>1), decode (past_seq>0, seq=1) and tail prefill after a cached
  prefix (past_seq>0, seq>1).
Logits are compared teacher-forced along the reference's greedy path, so one near-tie cannot
derail the comparison; free-running greedy equality is reported separately (required at fp32).

Tokenizer: ids from tokenizer.json (HF `tokenizers`, the library the Rust server links) against
`ReferenceBPE` (byte-level BPE) or `ReferenceSPM` (SentencePiece) built straight from the GGUF
metadata, over `TEST_CORPUS` plus special tokens; decode(encode(text)) must give the text back
(for SentencePiece, with the space its add_dummy_prefix puts after each special token).
"""

from __future__ import annotations

import os

import numpy as np

from .gguf_model import GGUFModel
from .reference import Reference
from .runtime import OrtDecoder
from .tokenizer import TEST_CORPUS, reference_tokenizer

DEFAULT_PROMPTS = [
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
    "import os\n\n\ndef list_python_files(root):\n    for dirpath, _, names in os.walk(root):\n",
    "The capital of France is",
]


def _prompt_ids(model_dir: str, prompts: list[str]) -> list[list[int]]:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    return [tok.encode(p).ids for p in prompts]


def check_numerics(gguf_path: str, model_dir: str, prompts: list[str] | None = None, steps: int = 32,
                   threads: int = 2, reference: Reference | None = None) -> dict:
    """Return {max_abs_diff, rel_diff, top1_agreement, greedy_match, prefix_match, per_prompt}."""
    ref = reference or Reference(GGUFModel(gguf_path))
    dec = OrtDecoder(model_dir, threads=threads)
    results = []
    for ids in _prompt_ids(model_dir, prompts or DEFAULT_PROMPTS):
        ids = ids or [0]
        rc = ref.new_cache()
        r_logits = [ref.forward(ids, rc)]
        r_toks = []
        for _ in range(steps):
            r_toks.append(int(np.argmax(r_logits[-1])))
            r_logits.append(ref.forward([r_toks[-1]], rc))
        # ONNX teacher-forced on the reference tokens: cold prefill, then decode steps.
        first, oc = dec.forward(ids, dec.new_cache())
        o_logits = [first]
        for t in r_toks:
            lg, oc = dec.forward([t], oc)
            o_logits.append(lg)
        # Tail prefill: first half as cached prefix, rest (prompt tail) with past_seq > 0.
        split = max(1, len(ids) // 2)
        if len(ids) > 1:
            _, pc = dec.forward(ids[:split], dec.new_cache())
            o_tail, _ = dec.forward(ids[split:], pc)
        else:
            o_tail = o_logits[0]
        R, O = np.stack(r_logits), np.stack(o_logits)
        diff = float(max(np.abs(R - O).max(), np.abs(R[0] - o_tail).max()))
        o_greedy, _ = dec.greedy(ids, steps)
        o_greedy_prefix, _ = dec.greedy(ids, steps, prefix_len=split) if len(ids) > 1 else (o_greedy, None)
        results.append({
            "prompt_tokens": len(ids),
            "max_abs_diff": diff,
            "rel_diff": diff / float(np.abs(R).max()),
            "top1_agreement": float(np.mean(R.argmax(1) == O.argmax(1))),
            "greedy_match": o_greedy == r_toks,
            "prefix_match": o_greedy_prefix == o_greedy,
        })
    return {
        "max_abs_diff": max(r["max_abs_diff"] for r in results),
        "rel_diff": max(r["rel_diff"] for r in results),
        "top1_agreement": float(np.mean([r["top1_agreement"] for r in results])),
        "greedy_match": all(r["greedy_match"] for r in results),
        "prefix_match": all(r["prefix_match"] for r in results),
        "per_prompt": results,
    }


def check_tokenizer(gguf_path: str, model_dir: str, extra: list[str] | None = None) -> list[dict]:
    """Return the mismatches (empty when tokenizer.json agrees with the reference everywhere)."""
    from tokenizers import Tokenizer

    info = GGUFModel(gguf_path).tokenizer()
    ref = reference_tokenizer(info)
    tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    specials = [info.tokens[i] for i in info.special_ids()]
    corpus = list(TEST_CORPUS) + list(extra or [])
    if specials:
        corpus.append("x".join(specials) + " tail")
        corpus.append(f"{specials[0]}def f():\n    return 1{specials[-1]}\n")
    bad = []
    for text in corpus:
        want, got = ref.encode(text), tok.encode(text).ids
        decoded = tok.decode(got[1:] if info.add_bos else got, skip_special_tokens=False)
        if want != got or decoded != ref.expected_decode(text):
            bad.append({"text": text, "reference": want, "tokenizer_json": got, "decoded": decoded})
    return bad
