"""Tiny synthetic GGUF models (random weights, a real byte-level BPE or SentencePiece vocabulary).

Used by the tests (every arch x tensor type x precision, in seconds) and by
`models/make_fixture.py` for the Rust test fixture.  Everything is derived from a seed, so the
same arguments always give the same bytes.
"""

from __future__ import annotations

import collections

import gguf
import numpy as np
from gguf import GGMLQuantizationType as QT

from .tokenizer import (PRE_TOKENIZERS, SPM_SPACE, TT_BYTE, TT_CONTROL, TT_NORMAL, TT_UNKNOWN,
                        bytes_to_unicode)

TRAIN_TEXT = """\
def add(a, b):
    return a + b

class Point:
    def __init__(self, x, y):
        self.x = x
        self.y = y

    def norm(self):
        return (self.x ** 2 + self.y ** 2) ** 0.5

fn main() { let total: i32 = (1..10).sum(); println!("{}", total); }
function greet(name) { return `Hello, ${name}!`; }
The quick brown fox jumps over the lazy dog. It's the end of the line, isn't it?
for i in range(10):
    if i % 2 == 0:
        print(i)
"""

STARCODER_SPECIALS = ["<|endoftext|>", "<fim_prefix>", "<fim_middle>", "<fim_suffix>", "<file_sep>"]
# CodeLlama's infilling tokens (ids 32007..32010 there: after the SentencePiece vocabulary).
CODELLAMA_FIM = ["▁<PRE>", "▁<SUF>", "▁<MID>", "▁<EOT>"]


def train_bpe(text: str, n_merges: int, pre: str = "smollm") -> tuple[list[str], list[str]]:
    """Byte-level BPE training (greedy most-frequent pair, ties broken by the pair itself)."""
    import regex

    bmap = bytes_to_unicode()
    pieces = [text]
    for rx in PRE_TOKENIZERS[pre]:
        pieces = [p for piece in pieces for p in _split(regex.compile(rx), piece)]
    words = collections.Counter(tuple(bmap[b] for b in p.encode("utf-8")) for p in pieces)
    tokens = [bmap[b] for b in range(256)]
    merges: list[str] = []
    for _ in range(n_merges):
        pairs: collections.Counter = collections.Counter()
        for w, f in words.items():
            for a, b in zip(w, w[1:]):
                pairs[(a, b)] += f
        if not pairs:
            break
        best = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))[0]
        merges.append(f"{best[0]} {best[1]}")
        tokens.append(best[0] + best[1])
        words = _apply_merge(words, best)
    return tokens, merges


def _apply_merge(words: collections.Counter, pair: tuple[str, str]) -> collections.Counter:
    """Every word of the counter with each occurrence of `pair` merged into one symbol."""
    merged: collections.Counter = collections.Counter()
    for word, count in words.items():
        out, i = [], 0
        while i < len(word):
            if i + 1 < len(word) and (word[i], word[i + 1]) == pair:
                out.append(word[i] + word[i + 1])
                i += 2
            else:
                out.append(word[i])
                i += 1
        merged[tuple(out)] += count
    return merged


def train_spm(text: str, n_merges: int) -> tuple[list[str], list[float], list[int]]:
    """A SentencePiece-style BPE vocabulary, laid out like Llama's tokenizer.model.

    Returns (tokens, scores, types): `<unk>` `<s>` `</s>`, the 256 byte-fallback tokens `<0x00>`..`<0xFF>`,
    merged pieces (scores -1, -2, ...: earlier merges score higher) and then the single characters
    (lower, distinct scores), plus their token types.  Spaces are "▁"; newlines and tabs are not in
    the vocabulary, so they go through byte fallback as in Llama.  Every character of every piece
    is itself a piece, and scores are distinct, so SentencePiece and HF's BPE agree exactly.
    """
    import regex

    escaped = text.replace(" ", SPM_SPACE)
    # Pieces start at a "▁" (SentencePiece's split_by_whitespace); runs of "▁" stay together.
    words = collections.Counter(tuple(w) for w in regex.findall(
        f"{SPM_SPACE}+(?={SPM_SPACE}[^{SPM_SPACE}\\n\\t])|{SPM_SPACE}?[^{SPM_SPACE}\\n\\t]+|{SPM_SPACE}+",
        escaped))
    chars = sorted({c for w in words for c in w})
    pieces: list[str] = []
    for _ in range(n_merges):
        pairs: collections.Counter = collections.Counter()
        for w, f in words.items():
            for a, b in zip(w, w[1:]):
                pairs[(a, b)] += f
        if not pairs:
            break
        best = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))[0]
        if best[0] + best[1] not in pieces:
            pieces.append(best[0] + best[1])
        words = _apply_merge(words, best)
    chars = [c for c in chars if c not in pieces]
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + pieces + chars
    scores = [0.0] * 259 + [-float(i + 1) for i in range(len(pieces))] + \
        [-float(len(pieces) + 1 + i) for i in range(len(chars))]
    types = [TT_UNKNOWN, TT_CONTROL, TT_CONTROL] + [TT_BYTE] * 256 + [TT_NORMAL] * (len(pieces) + len(chars))
    return tokens, scores, types


def _split(rx, text: str) -> list[str]:
    out, last = [], 0
    for m in rx.finditer(text):
        if m.start() > last:
            out.append(text[last:m.start()])
        if m.end() > m.start():
            out.append(m.group())
        last = m.end()
    if last < len(text):
        out.append(text[last:])
    return out


def _add(w: gguf.GGUFWriter, name: str, arr: np.ndarray, qt: QT) -> None:
    if qt == QT.F32:
        w.add_tensor(name, arr.astype(np.float32))
    elif qt == QT.F16:
        w.add_tensor(name, arr.astype(np.float16))
    else:
        w.add_tensor(name, gguf.quants.quantize(arr.astype(np.float32), qt), raw_dtype=qt)


def write_synthetic_gguf(path: str, arch: str = "llama", seed: int = 0, layers: int = 2, hidden: int = 64,
                         heads: int = 4, kv_heads: int = 2, ffn: int = 128, n_merges: int = 150,
                         types: dict[str, QT] | None = None, tied: bool = True, context: int = 256,
                         specials: list[str] | None = None, name: str = "tiny-synthetic",
                         pre: str = "smollm", gain: float = 2.0, tokenizer: str = "gpt2") -> None:
    """Write a small random llama/qwen2 GGUF.

    `types` maps a tensor-name suffix ("attn_q", "ffn_down", "token_embd", "output", ...) to its
    GGML type; the default mixes F32, F16, Q8_0, Q4_0 and Q4_1 so every decoder path is used.
    Token 0 is `<|endoftext|>` (eos); StarCoder FIM markers follow.  `gain` scales the layer
    weights: with large gains a random network is chaotic and amplifies any weight rounding.
    `tokenizer="spm"`: a SentencePiece vocabulary instead (`train_spm`: `<unk>` 0, `<s>` 1 = bos,
    `</s>` 2 = eos, byte tokens, scored pieces, then the CodeLlama FIM tokens; add_bos true,
    `specials` and `pre` unused), as in TinyLlama / CodeLlama GGUFs.
    """
    rng = np.random.default_rng(seed)
    if tokenizer == "spm":
        tokens, scores, ttypes = train_spm(TRAIN_TEXT, n_merges)
        tokens, scores = tokens + CODELLAMA_FIM, scores + [0.0] * len(CODELLAMA_FIM)
        ttypes = ttypes + [TT_CONTROL] * len(CODELLAMA_FIM)
    else:
        specials = STARCODER_SPECIALS if specials is None else specials
        bpe_tokens, merges = train_bpe(TRAIN_TEXT, n_merges)
        tokens = specials + bpe_tokens
        ttypes = [TT_CONTROL] * len(specials) + [TT_NORMAL] * len(bpe_tokens)
    vocab = len(tokens)
    hd = hidden // heads
    types = types or {"token_embd": QT.Q8_0, "output": QT.F16, "attn_q": QT.Q4_1, "attn_k": QT.Q4_1,
                      "attn_v": QT.Q4_1, "attn_output": QT.Q4_0, "ffn_gate": QT.Q4_1, "ffn_up": QT.Q4_1,
                      "ffn_down": QT.Q8_0}

    w = gguf.GGUFWriter(path, arch)
    w.add_name(name)
    w.add_context_length(context)
    w.add_embedding_length(hidden)
    w.add_block_count(layers)
    w.add_feed_forward_length(ffn)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_rope_dimension_count(hd)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_1)
    if tokenizer == "spm":
        w.add_tokenizer_model("llama")
        w.add_tokenizer_pre("default")
        w.add_token_list(tokens)
        w.add_token_scores(scores)
        w.add_token_types(ttypes)
        w.add_bos_token_id(1)
        w.add_eos_token_id(2)
        w.add_unk_token_id(0)
        w.add_add_bos_token(True)
        w.add_add_eos_token(False)
    else:
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre(pre)
        w.add_token_list(tokens)
        w.add_token_types(ttypes)
        w.add_token_merges(merges)
        w.add_bos_token_id(0)
        w.add_eos_token_id(0)
        w.add_add_bos_token(False)

    def rand(*shape, scale=None):
        return rng.standard_normal(shape).astype(np.float32) * (scale or shape[-1] ** -0.5)

    _add(w, "token_embd.weight", rand(vocab, hidden, scale=1.0), types.get("token_embd", QT.F32))
    if not tied:
        _add(w, "output.weight", rand(vocab, hidden), types.get("output", QT.F16))
    _add(w, "output_norm.weight", 1 + 0.1 * rand(hidden, scale=1.0), QT.F32)
    for i in range(layers):
        p = f"blk.{i}."
        _add(w, p + "attn_norm.weight", 1 + 0.1 * rand(hidden, scale=1.0), QT.F32)
        _add(w, p + "ffn_norm.weight", 1 + 0.1 * rand(hidden, scale=1.0), QT.F32)
        shapes = {"attn_q": (heads * hd, hidden), "attn_k": (kv_heads * hd, hidden),
                  "attn_v": (kv_heads * hd, hidden), "attn_output": (hidden, heads * hd),
                  "ffn_gate": (ffn, hidden), "ffn_up": (ffn, hidden), "ffn_down": (hidden, ffn)}
        for k, shape in shapes.items():
            # gain > 1: wider-than-usual weights so that 2 random layers still give peaked logits.
            _add(w, p + k + ".weight", rand(*shape) * gain, types.get(k, QT.F32))
        if arch == "qwen2":
            for k in ("attn_q", "attn_k", "attn_v"):
                _add(w, p + k + ".bias", 0.5 * rand(shapes[k][0], scale=1.0), QT.F32)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
