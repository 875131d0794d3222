"""tokenizer.json (HF tokenizers, as the Rust server loads it) vs the reference BPE from GGUF data."""

import json

import pytest

from nib_convert.check import check_tokenizer
from nib_convert.convert import convert
from nib_convert.graph import GraphOptions
from nib_convert.tokenizer import PRE_TOKENIZERS


@pytest.mark.parametrize("pre", sorted(PRE_TOKENIZERS))
def test_tokenizer_matches_reference(synthetic, tmp_path, pre):
    gguf = synthetic("llama-mixed", pre=pre)
    convert(gguf, str(tmp_path), GraphOptions(precision="int4"), log=lambda *a: None)
    assert check_tokenizer(gguf, str(tmp_path), extra=["<fim_prefix>a<fim_suffix>b<fim_middle>"]) == []


def test_tokenizer_json_shape(synthetic, tmp_path):
    from tokenizers import Tokenizer

    gguf = synthetic("llama-mixed")
    convert(gguf, str(tmp_path), GraphOptions(precision="fp32"), log=lambda *a: None)
    doc = json.load(open(tmp_path / "tokenizer.json"))
    assert doc["model"]["type"] == "BPE" and doc["decoder"]["type"] == "ByteLevel"
    assert all(t["special"] for t in doc["added_tokens"])
    assert doc["post_processor"] is None          # add_bos_token is false in the GGUF
    tok = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    ids = tok.encode("<fim_prefix>def f():<fim_suffix>\n<fim_middle>").ids
    assert ids[0] == tok.token_to_id("<fim_prefix>") and tok.token_to_id("<fim_middle>") == ids[-1]
    # every byte is representable (no unknown token in byte-level BPE)
    assert tok.decode(tok.encode("\x00\x7f\u00ff\U0001F600").ids) == "\x00\x7f\u00ff\U0001F600"
