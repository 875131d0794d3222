"""Rebuild a Hugging Face `tokenizer.json` from a GGUF's embedded tokenizer.

Two GGUF tokenizer kinds (`tokenizer.ggml.model`) are supported: `gpt2` (byte-level BPE, below)
and `llama` (SentencePiece BPE with byte fallback, see `build_spm_json` further down).

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
    """The tokenizer facts read from GGUF metadata (see gguf_model.GGUFModel.tokenizer).

    model `gpt2`: byte-level BPE (`merges`, `pre`).  model `llama`: SentencePiece BPE (`scores`,
    no merges; `pre` is ignored), `unk_id`, `add_space_prefix` (SentencePiece's add_dummy_prefix).
    """

    def __init__(self, model: str, pre: str, tokens: list[str], types: list[int], merges: list[str],
                 bos_id: int | None, eos_id: int | None, add_bos: bool, add_eos: bool = False,
                 scores: list[float] | None = None, unk_id: int | None = None, add_space_prefix: bool = True):
        if model not in ("gpt2", "llama"):
            raise ValueError(f"tokenizer.ggml.model={model!r}: only byte-level BPE ('gpt2') and "
                             f"SentencePiece BPE ('llama') are supported")
        if model == "gpt2" and pre not in PRE_TOKENIZERS:
            raise ValueError(f"tokenizer.ggml.pre={pre!r} unknown; known: {sorted(PRE_TOKENIZERS)}")
        if model == "llama" and (scores is None or len(scores) != len(tokens)):
            raise ValueError("tokenizer.ggml.model='llama' needs tokenizer.ggml.scores (one per token)")
        self.model, self.pre, self.tokens, self.merges = model, pre, tokens, merges
        self.types = types or [TT_NORMAL] * len(tokens)
        self.bos_id, self.eos_id, self.add_bos, self.add_eos = bos_id, eos_id, add_bos, add_eos
        self.scores = [float(x) for x in scores] if scores is not None else None
        self.add_space_prefix = add_space_prefix
        if model == "llama" and unk_id is None:
            unk_id = next((i for i, t in enumerate(self.types) if t == TT_UNKNOWN), None)
            if unk_id is None and "<unk>" in tokens:
                unk_id = tokens.index("<unk>")
        self.unk_id = unk_id

    def special_ids(self) -> list[int]:
        """Tokens matched verbatim in the input text (HF added tokens, llama.cpp's special tokens).

        SentencePiece vocabularies also count their unknown token (HF's LlamaTokenizerFast lists
        `<unk>` among the added tokens; llama.cpp matches it as a special token too).
        """
        kinds = (TT_CONTROL, TT_USER_DEFINED) + ((TT_UNKNOWN,) if self.model == "llama" else ())
        return [i for i, t in enumerate(self.types) if t in kinds]


def _vocab(tokens: list[str]) -> dict[str, int]:
    vocab: dict[str, int] = {}
    for i, tok in enumerate(tokens):
        vocab.setdefault(tok, i)  # duplicates (rare padding entries): the first id wins, as in llama.cpp
    return vocab


def _added_tokens(info: TokenizerInfo) -> list[dict]:
    return [{"id": i, "content": info.tokens[i], "single_word": False, "lstrip": False, "rstrip": False,
             "normalized": False, "special": True} for i in info.special_ids()]


def _bos_post_processor(info: TokenizerInfo) -> dict | None:
    """TemplateProcessing that prepends BOS when the GGUF says `add_bos_token`."""
    if not (info.add_bos and info.bos_id is not None):
        return None
    tok = info.tokens[info.bos_id]
    single = [{"SpecialToken": {"id": tok, "type_id": 0}}]
    a = {"Sequence": {"id": "A", "type_id": 0}}
    b = {"Sequence": {"id": "B", "type_id": 1}}
    return {"type": "TemplateProcessing", "single": single + [a], "pair": single + [a] + single + [b],
            "special_tokens": {tok: {"id": tok, "ids": [info.bos_id], "tokens": [tok]}}}


def build_tokenizer_json(info: TokenizerInfo) -> dict:
    """Return the HF `tokenizers` JSON document for `info`."""
    if info.model == "llama":
        return build_spm_json(info)
    vocab = _vocab(info.tokens)
    added = _added_tokens(info)
    pre = [{"type": "Split", "pattern": {"Regex": rx}, "behavior": "Isolated", "invert": False}
           for rx in PRE_TOKENIZERS[info.pre]]
    pre.append({"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False})
    merges = [m.split(" ", 1) for m in info.merges]
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": pre},
        "post_processor": _bos_post_processor(info),
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                  "ignore_merges": info.pre in IGNORE_MERGES, "vocab": vocab, "merges": merges},
    }


# --- SentencePiece (tokenizer.ggml.model == "llama") ---------------------------------------------
SPM_SPACE = "\u2581"  # "▁", SentencePiece's whitespace symbol


def spm_merges(tokens: list[str], scores: list[float]) -> list[tuple[str, str]]:
    """BPE merges equivalent to SentencePiece BPE over `tokens` / `scores`.

    As HF's SentencePiece -> BPE conversion (transformers' `SentencePieceExtractor`): every split of
    a token into two pieces that are both in the vocabulary is a merge; merges are ranked by the
    score of the merged token (higher first), ties by the merged token's id, then by the pieces' ids.
    SentencePiece merges the adjacent pair whose concatenation scores highest, so the lowest rank
    is the same choice (tokens of equal score are the only place the two can differ).
    """
    vocab = _vocab(tokens)
    ranked = []
    for tok, tid in vocab.items():
        for k in range(1, len(tok)):
            left, right = tok[:k], tok[k:]
            if left in vocab and right in vocab:
                ranked.append((-scores[tid], tid, vocab[left], vocab[right], left, right))
    ranked.sort(key=lambda m: m[:4])
    return [(m[4], m[5]) for m in ranked]


def has_byte_tokens(tokens: list[str]) -> bool:
    vocab = set(tokens)
    return all(f"<0x{b:02X}>" in vocab for b in range(256))


def build_spm_json(info: TokenizerInfo) -> dict:
    """HF `tokenizers` JSON equivalent to HF's LlamaTokenizerFast (legacy) for a SentencePiece vocab.

        added_tokens (control / user-defined / unknown tokens, special=true)
        -> normalizer: Prepend("▁") (add_dummy_prefix), Replace(" " -> "▁")
        -> model: BPE(vocab, merges from scores), byte_fallback, fuse_unk, unk_token
        -> decoder: Replace("▁" -> " "), ByteFallback, Fuse, Strip(" ", 1, 0)

    The normalizer runs on each stretch of text between added tokens, so "▁" is prepended at the
    start and after every special token, as llama.cpp does.  (The `Metaspace` pre-tokenizer with
    prepend_scheme "first" is not equivalent: it prepends nothing to text that already starts with
    a space, where SentencePiece gives "▁▁", nor after special tokens.)  With no pre-tokenizer the
    whole stretch is one BPE word: SentencePiece does not split on whitespace either.
    """
    vocab = _vocab(info.tokens)
    byte_fallback = has_byte_tokens(info.tokens)
    unk = info.tokens[info.unk_id] if info.unk_id is not None else None
    if unk is None and not byte_fallback:
        raise ValueError("SentencePiece vocabulary with neither byte tokens <0x00>..<0xFF> nor an unknown token")
    norm = [{"type": "Replace", "pattern": {"String": " "}, "content": SPM_SPACE}]
    decoders = [{"type": "Replace", "pattern": {"String": SPM_SPACE}, "content": " "},
                {"type": "ByteFallback"}, {"type": "Fuse"}]
    if info.add_space_prefix:
        norm.insert(0, {"type": "Prepend", "prepend": SPM_SPACE})
        decoders.append({"type": "Strip", "content": " ", "start": 1, "stop": 0})
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": _added_tokens(info),
        "normalizer": {"type": "Sequence", "normalizers": norm},
        "pre_tokenizer": None,
        "post_processor": _bos_post_processor(info),
        "decoder": {"type": "Sequence", "decoders": decoders},
        "model": {"type": "BPE", "dropout": None, "unk_token": unk, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": byte_fallback,
                  "ignore_merges": False, "vocab": vocab,
                  "merges": [list(m) for m in spm_merges(info.tokens, info.scores)]},
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
        self.special_rx = _special_rx(info)
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
        for chunk, special in split_specials(self.special_rx, text):
            if special:
                ids.append(self.vocab[chunk])
                continue
            for piece in self._split(chunk):
                word = "".join(self.byte_map[b] for b in piece.encode("utf-8"))
                ids.extend(self.vocab[s] for s in self._bpe(word))
        return ids

    def expected_decode(self, text: str) -> str:
        """What decode(encode(text)) (without BOS) must give: byte-level BPE is lossless."""
        return text


def _special_rx(info: TokenizerInfo):
    import regex

    specials = sorted({info.tokens[i] for i in info.special_ids()}, key=len, reverse=True)
    return regex.compile("|".join(regex.escape(s) for s in specials)) if specials else None


def split_specials(special_rx, text: str) -> list[tuple[str, bool]]:
    """[(chunk, is_special)], leftmost-longest special-token matches; empty text chunks dropped."""
    chunks, last = [], 0
    if special_rx is not None:
        for m in special_rx.finditer(text):
            chunks.append((text[last:m.start()], False))
            chunks.append((m.group(), True))
            last = m.end()
    chunks.append((text[last:], False))
    return [(c, sp) for c, sp in chunks if sp or c]


class ReferenceSPM:
    """Naive SentencePiece BPE (with byte fallback) straight from the GGUF vocabulary and scores.

    Independent of the JSON builder's merge table: it works like SentencePiece's bpe_model.cc /
    llama.cpp's llm_tokenizer_spm.  Each stretch of text between special tokens gets " " prepended
    (add_dummy_prefix; llama.cpp also prepends after every special token), spaces become "▁", the
    text is split into characters, and the adjacent pair whose concatenation is a vocabulary token
    with the highest score is merged (leftmost on ties) until no pair is in the vocabulary.  Final
    symbols that are not tokens become their UTF-8 bytes' `<0xXX>` tokens (else the unknown token,
    consecutive unknowns fused).
    """

    def __init__(self, info: TokenizerInfo):
        self.info = info
        self.vocab = _vocab(info.tokens)
        self.scores = info.scores
        self.byte_ids = {b: self.vocab.get(f"<0x{b:02X}>") for b in range(256)}
        self.byte_fallback = None not in self.byte_ids.values()
        self.special_rx = _special_rx(info)

    def _spm(self, text: str) -> list[int]:
        syms = list(text)
        while len(syms) > 1:
            best, best_score = -1, None
            for i in range(len(syms) - 1):
                tid = self.vocab.get(syms[i] + syms[i + 1])
                if tid is not None and (best_score is None or self.scores[tid] > best_score):
                    best, best_score = i, self.scores[tid]
            if best < 0:
                break
            syms[best:best + 2] = [syms[best] + syms[best + 1]]
        ids: list[int] = []
        unk_pending = False
        for s in syms:
            if s in self.vocab:
                ids.append(self.vocab[s])
                unk_pending = False
            elif self.byte_fallback:
                ids.extend(self.byte_ids[b] for b in s.encode("utf-8"))
                unk_pending = False
            elif not unk_pending:
                ids.append(self.info.unk_id)
                unk_pending = True
        return ids

    def encode(self, text: str) -> list[int]:
        ids = [self.info.bos_id] if self.info.add_bos and self.info.bos_id is not None else []
        for chunk, special in split_specials(self.special_rx, text):
            if special:
                ids.append(self.vocab[chunk])
            else:
                if self.info.add_space_prefix:
                    chunk = " " + chunk
                ids.extend(self._spm(chunk.replace(" ", SPM_SPACE)))
        return ids

    def expected_decode(self, text: str) -> str:
        """What decode(encode(text)) (without BOS) must give, as llama.cpp / HF decode SentencePiece
        output: the text with " " prepended to each stretch between special tokens
        (add_dummy_prefix), every "▁" shown as " ", and the first leading space dropped."""
        pre = " " if self.info.add_space_prefix else ""
        out = "".join(c if special else pre + c for c, special in split_specials(self.special_rx, text))
        out = out.replace(SPM_SPACE, " ")
        return out[1:] if self.info.add_space_prefix and out.startswith(" ") else out


def reference_tokenizer(info: TokenizerInfo):
    """The independent reference implementation for `info`'s tokenizer kind."""
    return ReferenceSPM(info) if info.model == "llama" else ReferenceBPE(info)


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
