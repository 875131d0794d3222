"""Minimal onnxruntime driver for a converted model directory (checks, benchmark, fixture).

It does what the Rust engine's copying cache does: feed the new tokens with positions
past..past+seq-1 and an all-ones mask over past+seq, take the last-position logits, feed
`present.*` back as `past_key_values.*`.
"""

from __future__ import annotations

import os

import numpy as np
import onnxruntime as ort


def session_options(threads: int = 2) -> ort.SessionOptions:
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return so


class OrtDecoder:
    def __init__(self, model_dir: str, threads: int = 2):
        path = os.path.join(model_dir, "model.onnx") if os.path.isdir(model_dir) else model_dir
        self.sess = ort.InferenceSession(path, session_options(threads), providers=["CPUExecutionProvider"])
        self.past_names = [i.name for i in self.sess.get_inputs() if i.name.startswith("past_key_values.")]
        shape = next(i.shape for i in self.sess.get_inputs() if i.name == self.past_names[0])
        self.keep_input = any(i.name == "logits_to_keep" for i in self.sess.get_inputs())
        self.kv_heads, self.head_dim = shape[1], shape[3]
        self.out_names = [o.name for o in self.sess.get_outputs()]

    def new_cache(self) -> dict:
        z = ort.OrtValue.ortvalue_from_numpy(np.zeros((1, self.kv_heads, 0, self.head_dim), np.float32))
        return {n: z for n in self.past_names}

    def forward(self, ids: list[int], cache: dict) -> tuple[np.ndarray, dict]:
        """Returns (last-position logits, new cache); the cache stays in OrtValues, no copies."""
        past = cache[self.past_names[0]].shape()[2]
        n = len(ids)
        feeds = {"input_ids": np.asarray([ids], np.int64),
                 "attention_mask": np.ones((1, past + n), np.int64),
                 "position_ids": np.arange(past, past + n, dtype=np.int64)[None, :]}
        if self.keep_input:
            feeds["logits_to_keep"] = np.array([1], np.int64)
        feeds = {k: ort.OrtValue.ortvalue_from_numpy(v) for k, v in feeds.items()}
        feeds.update(cache)
        outs = self.sess.run_with_ort_values(self.out_names, feeds)
        new = {}
        for name, val in zip(self.out_names[1:], outs[1:]):
            new[name.replace("present.", "past_key_values.")] = val
        return outs[0].numpy()[0, -1], new

    def greedy(self, ids: list[int], steps: int, prefix_len: int = 0) -> tuple[list[int], list[np.ndarray]]:
        """Greedy decode; with prefix_len>0 the prompt is fed as prefix then tail (past_seq>0, seq>1)."""
        cache = self.new_cache()
        if prefix_len:
            _, cache = self.forward(ids[:prefix_len], cache)
            ids = ids[prefix_len:]
        logits, cache = self.forward(ids, cache)
        toks, all_logits = [], [logits]
        for _ in range(steps):
            toks.append(int(np.argmax(logits)))
            logits, cache = self.forward([toks[-1]], cache)
            all_logits.append(logits)
        return toks, all_logits
