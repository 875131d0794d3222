"""SentencePiece GGUFs (tokenizer.ggml.model "llama": TinyLlama, CodeLlama, Mistral-style vocabularies).

A synthetic SPM vocabulary (byte-fallback tokens, scored "▁" pieces, `<unk>` `<s>` `</s>`, CodeLlama
FIM tokens) is converted; tokenizer.json must give the ids of the independent SentencePiece
reference (`ReferenceSPM`) on the test corpus and decode back to the text, and the numerics must
hold as for the byte-level BPE synthetic models.
"""

import json
import random

import pytest
from tokenizers import Tokenizer

from nib_convert.check import check_numerics, check_tokenizer
from nib_convert.convert import convert
from nib_convert.gguf_model import GGUFModel
from nib_convert.graph import GraphOptions
from nib_convert.tokenizer import TEST_CORPUS, ReferenceSPM, TokenizerInfo, build_tokenizer_json, spm_merges

PROMPTS = ["def add(a, b):\n    return a + b\n", "class Point:\n    def norm(self):", "x"]
FIM = ["▁<PRE>", "▁<SUF>", "▁<MID>", "▁<EOT>"]


@pytest.fixture(scope="module")
def spm_fp32(synthetic, tmp_path_factory):
    gguf = synthetic("llama-spm")
    out = tmp_path_factory.mktemp("spm-fp32")
    convert(gguf, str(out), GraphOptions(precision="fp32"), log=lambda *a: None)
    return gguf, str(out)


def test_spm_tokenizer_matches_reference(spm_fp32):
    gguf, out = spm_fp32
    extra = ["▁<PRE> def f():\n▁<SUF>\n    return 1\n▁<MID>", "<s>hello</s>", "a▁<EOT>", "  two  spaces  ",
             "<unk>x<unk>", "tab\tand\r\nCRLF"]
    assert check_tokenizer(gguf, out, extra=extra) == []


def test_spm_roundtrip_and_json_shape(spm_fp32):
    gguf, out = spm_fp32
    tok = Tokenizer.from_file(f"{out}/tokenizer.json")
    info = GGUFModel(gguf).tokenizer()
    ref = ReferenceSPM(info)
    for text in TEST_CORPUS:
        ids = tok.encode(text).ids
        assert ids == ref.encode(text), text
        assert ids[0] == tok.token_to_id("<s>")                       # add_bos defaults to true
        assert tok.decode(ids[1:], skip_special_tokens=False) == text
        assert tok.decode(ids) == text                                 # <s> skipped as a special token
    doc = json.load(open(f"{out}/tokenizer.json"))
    m = doc["model"]
    assert m["type"] == "BPE" and m["byte_fallback"] and m["fuse_unk"] and m["unk_token"] == "<unk>"
    assert [n["type"] for n in doc["normalizer"]["normalizers"]] == ["Prepend", "Replace"]
    assert [d["type"] for d in doc["decoder"]["decoders"]] == ["Replace", "ByteFallback", "Fuse", "Strip"]
    assert doc["pre_tokenizer"] is None
    assert {t["content"] for t in doc["added_tokens"]} == {"<unk>", "<s>", "</s>", *FIM}
    assert all(t["special"] for t in doc["added_tokens"])
    # bytes outside the vocabulary go through <0xXX> tokens, including for text right after a special
    ids = tok.encode("▁<PRE>\x00é😀").ids
    assert tok.id_to_token(ids[1]) == "▁<PRE>" and tok.id_to_token(ids[-1]) == "<0x80>"


def test_spm_nib_json(spm_fp32):
    _, out = spm_fp32
    nib = json.load(open(f"{out}/nib.json"))
    assert nib["fim"] == {"family": "codellama", "prefix": "▁<PRE>", "suffix": "▁<SUF>", "middle": "▁<MID>",
                          "repository": None}
    assert nib["add_bos"] is True
    assert nib["stop_tokens"] == ["</s>", "▁<EOT>"]
    cfg = json.load(open(f"{out}/config.json"))
    assert (cfg["bos_token_id"], cfg["eos_token_id"]) == (1, 2)


@pytest.mark.parametrize("precision", ["fp32", "int8", "int4"])
def test_spm_numerics(spm_fp32, tmp_path, precision):
    gguf, out = spm_fp32
    if precision != "fp32":
        out = str(tmp_path)
        convert(gguf, out, GraphOptions(precision=precision), log=lambda *a: None)
    r = check_numerics(gguf, out, prompts=PROMPTS, steps=32, threads=1)
    assert all(p["prompt_tokens"] > 1 for p in r["per_prompt"])      # BOS + "▁x" for "x"
    assert r["prefix_match"], r
    if precision == "fp32":
        assert r["max_abs_diff"] < 1e-3 and r["greedy_match"], r
    else:
        assert r["rel_diff"] < 0.15 and r["top1_agreement"] >= 0.8, r


def test_spm_random_text_matches_reference(spm_fp32):
    """Random strings over the vocabulary's characters, spaces, newlines and non-vocabulary characters."""
    gguf, out = spm_fp32
    tok = Tokenizer.from_file(f"{out}/tokenizer.json")
    info = GGUFModel(gguf).tokenizer()
    ref = ReferenceSPM(info)
    alphabet = sorted({c for t in info.tokens[259:] if not t.startswith("▁<") for c in t} - {"▁"})
    alphabet += [" ", " ", " ", "\n", "\t", "é", "日", "😀", "▁", "<s>", "▁<MID>"]
    rng = random.Random(0)
    for _ in range(300):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        assert tok.encode(text).ids == ref.encode(text), text
        assert tok.decode(tok.encode(text).ids[1:], skip_special_tokens=False) == ref.expected_decode(text), text


def test_spm_merges_follow_scores():
    """Merges are ranked by the merged token's score; every split into two vocabulary pieces counts."""
    tokens = ["<unk>", "a", "b", "c", "ab", "bc", "abc"]
    scores = [0.0, -10.0, -11.0, -12.0, -2.0, -1.0, -3.0]
    assert spm_merges(tokens, scores) == [("b", "c"), ("a", "b"), ("a", "bc"), ("ab", "c")]
    info = TokenizerInfo("llama", "default", tokens, [2, 1, 1, 1, 1, 1, 1], [], None, None, add_bos=False,
                         scores=scores, unk_id=0)
    tok = Tokenizer.from_str(json.dumps(build_tokenizer_json(info)))
    ref = ReferenceSPM(info)
    for text in ["abc", "ab", "abcabc", "cab", "x", "a b"]:
        assert tok.encode(text).ids == ref.encode(text), text
    assert tok.encode("xyz").tokens == ["<unk>"]                       # no byte tokens: one fused unk


def test_spm_needs_scores():
    with pytest.raises(ValueError, match="scores"):
        TokenizerInfo("llama", "default", ["<unk>", "a"], [2, 1], [], None, None, add_bos=True)
