"""Rebuild a Hugging Face `tokenizer.json` from a GGUF's embedded byte-level BPE tokenizer.

GGUF files carry the whole tokenizer as metadata (`tokenizer.ggml.tokens`, `.merges`,
`.token_type`, `.pre`, special-token ids).  The Rust server loads `tokenizer.json` with the
`tokenizers` crate, so we translate that metadata into the same JSON layout HF writes for
GPT-2-style tokenizers:

    added_tokens (control / user-defined tokens, special=true)
    -> pre_tokenizer: Split(regex, Isolated)* then ByteLevel(use_regex=false)
    -> model: BPE(vocab, merges)
    -> decoder: ByteLevel

The pre-tokenizer regexes are llama.cpp's, selected by `tokenizer.ggml.pre` (the GGUF converter
wrote that name after fingerprinting the original HF tokenizer), so our ids equal llama.cpp's
on the same file.  `ReferenceBPE` below is a deliberately naive, independent re-implementation
used only by the checks: it reads the same GGUF metadata but none of the JSON.
"""

from __future__ import annotations

import json

# Token types as stored in `tokenizer.ggml.token_type` (llama.cpp's llama_token_type).
TT_NORMAL, TT_UNKNOWN, TT_CONTROL, TT_USER_DEFINED, TT_UNUSED, TT_BYTE = 1, 2, 3, 4, 5, 6

_GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
_LLAMA3 = (r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+"
           r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2 = _LLAMA3.replace(r"\p{N}{1,3}", r"\p{N}")

# `tokenizer.ggml.pre` -> ordered list of split regexes (each applied to the pieces of the last).
PRE_TOKENIZERS: dict[str, list[str]] = {
    "gpt2": [_GPT2],
    "default": [_GPT2],
    # SmolLM / StarCoder family: every digit is its own piece, then the GPT-2 regex.
    "smollm": [r"\p{N}", _GPT2],
    "starcoder": [r"\p{N}", _GPT2],
    "refact": [r"\p{N}", _GPT2],
    "codeshell": [r"\p{N}", _GPT2],
    "llama-bpe": [_LLAMA3],
    "llama3": [_LLAMA3],
    "qwen2": [_QWEN2],
    "deepseek-coder": [r"[\r\n]", r"\s?\p{L}+", r"\s?\p{P}+", "[\u4e00-\u9fa5\u0800-\u4e00\uac00-\ud7ff]+",
                       r"\p{N}"],
}
# Tokenizers whose HF originals set `ignore_merges` (a word found whole in the vocab is one token).
IGNORE_MERGES = {"llama-bpe", "llama3"}


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable-character map used by byte-level BPE vocabularies."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


class TokenizerInfo:
    """The tokenizer facts read from GGUF metadata (see gguf_model.GGUFModel.tokenizer)."""

    def __init__(self, model: str, pre: str, tokens: list[str], types: list[int], merges: list[str],
                 bos_id: int | None, eos_id: int | None, add_bos: bool, add_eos: bool = False):
        if model != "gpt2":
            raise ValueError(f"tokenizer.ggml.model={model!r}: only byte-level BPE ('gpt2') is supported")
        if pre not in PRE_TOKENIZERS:
            raise ValueError(f"tokenizer.ggml.pre={pre!r} unknown; known: {sorted(PRE_TOKENIZERS)}")
        self.model, self.pre, self.tokens, self.merges = model, pre, tokens, merges
        self.types = types or [TT_NORMAL] * len(tokens)
        self.bos_id, self.eos_id, self.add_bos, self.add_eos = bos_id, eos_id, add_bos, add_eos

    def special_ids(self) -> list[int]:
        return [i for i, t in enumerate(self.types) if t in (TT_CONTROL, TT_USER_DEFINED)]


def build_tokenizer_json(info: TokenizerInfo) -> dict:
    """Return the HF `tokenizers` JSON document for `info`."""
    vocab: dict[str, int] = {}
    for i, tok in enumerate(info.tokens):
        vocab.setdefault(tok, i)  # duplicates (rare padding entries): the first id wins, as in llama.cpp
    added = [{"id": i, "content": info.tokens[i], "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True} for i in info.special_ids()]
    pre = [{"type": "Split", "pattern": {"Regex": rx}, "behavior": "Isolated", "invert": False}
           for rx in PRE_TOKENIZERS[info.pre]]
    pre.append({"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False})
    merges = [m.split(" ", 1) for m in info.merges]

    post = None
    single, pair, specials = [], [], {}
    for flag, tid in ((info.add_bos, info.bos_id), ):
        if flag and tid is not None:
            tok = info.tokens[tid]
            single.append({"SpecialToken": {"id": tok, "type_id": 0}})
            specials[tok] = {"id": tok, "ids": [tid], "tokens": [tok]}
    if single:
        a = {"Sequence": {"id": "A", "type_id": 0}}
        b = {"Sequence": {"id": "B", "type_id": 1}}
        post = {"type": "TemplateProcessing", "single": single + [a], "pair": single + [a] + single + [b],
                "special_tokens": specials}
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": pre},
        "post_processor": post,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                  "ignore_merges": info.pre in IGNORE_MERGES, "vocab": vocab, "merges": merges},
    }


def write_tokenizer_json(info: TokenizerInfo, path: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(build_tokenizer_json(info), f, ensure_ascii=False)


class ReferenceBPE:
    """Naive byte-level BPE straight from the GGUF data, for checking tokenizer.json.

    Deliberately simple (O(n^2) merging, the `regex` module for \\p{..} classes); it shares only
    the regex table with the JSON builder, which is the part llama.cpp defines by name.
    """

    def __init__(self, info: TokenizerInfo):
        import regex  # only needed for checks

        self.info = info
        self.vocab = {}
        for i, t in enumerate(info.tokens):
            self.vocab.setdefault(t, i)
        self.ranks = {tuple(m.split(" ", 1)): r for r, m in enumerate(info.merges)}
        self.byte_map = bytes_to_unicode()
        self.patterns = [regex.compile(p) for p in PRE_TOKENIZERS[info.pre]]
        specials = sorted({info.tokens[i] for i in info.special_ids()}, key=len, reverse=True)
        self.special_rx = regex.compile("|".join(regex.escape(s) for s in specials)) if specials else None
        self.ignore_merges = info.pre in IGNORE_MERGES

    def _bpe(self, word: str) -> list[str]:
        if self.ignore_merges and word in self.vocab:
            return [word]
        syms = list(word)
        while len(syms) > 1:
            best = min(range(len(syms) - 1), key=lambda i: self.ranks.get((syms[i], syms[i + 1]), 1 << 60))
            if (syms[best], syms[best + 1]) not in self.ranks:
                break
            syms[best:best + 2] = [syms[best] + syms[best + 1]]
        return syms

    def _split(self, text: str) -> list[str]:
        pieces = [text]
        for rx in self.patterns:
            out = []
            for p in pieces:
                last = 0
                for m in rx.finditer(p):
                    if m.start() > last:
                        out.append(p[last:m.start()])
                    if m.end() > m.start():
                        out.append(m.group())
                    last = m.end()
                if last < len(p):
                    out.append(p[last:])
            pieces = out
        return pieces

    def encode(self, text: str) -> list[int]:
        ids = [self.info.bos_id] if self.info.add_bos and self.info.bos_id is not None else []
        chunks, last = [], 0
        if self.special_rx is not None:
            for m in self.special_rx.finditer(text):
                chunks.append((text[last:m.start()], False))
                chunks.append((m.group(), True))
                last = m.end()
        chunks.append((text[last:], False))
        for chunk, special in chunks:
            if special:
                ids.append(self.vocab[chunk])
                continue
            for piece in self._split(chunk) if chunk else []:
                word = "".join(self.byte_map[b] for b in piece.encode("utf-8"))
                ids.extend(self.vocab[s] for s in self._bpe(word))
        return ids


# A corpus that exercises the pre-tokenizer and the byte map: unicode, emoji, CJK, code,
# whitespace runs, digits, contractions and special tokens (inserted by the caller).
TEST_CORPUS = [
    "Hello, world! It's a test: we're done, they'll see, I'd say.",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n",
    "fn main() {\n\tlet x: Vec<u8> = vec![1, 2, 3];\n\tprintln!(\"{:?}\", x);\n}\n",
    "    indented   spaces\t\ttabs \n\n\n  trailing   \r\n",
    "Numbers 1234567890 3.14159 1e-9 0xFF_FF 12,345",
    "Unicode: café naïve Ærøskøbing Ελληνικά русский текст עברית العربية",
    "CJK: 你好，世界！日本語のテキスト 한국어 텍스트",
    "Emoji: 😀🎉👩‍💻 🇫🇷 ❤️ and combining e\u0301",
    "Symbols: ~!@#$%^&*()_+`-=[]{}|;':\",./<>? \\ «» — …",
    "",
    " ",
    "\n",
    "x",
]
