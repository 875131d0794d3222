"""FIM family detection, stop tokens and nib.json contents."""

import json
import os

import pytest

from nib_convert.meta import detect_fim, stop_tokens

BASE = ["a", "b", "<|endoftext|>"]


@pytest.mark.parametrize("tokens,family", [
    (["<fim_prefix>", "<fim_suffix>", "<fim_middle>"], "starcoder"),
    (["<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"], "qwen"),
    (["▁<PRE>", "▁<SUF>", "▁<MID>"], "codellama"),
    (["<PRE>", "<SUF>", "<MID>"], "codellama"),
    (["<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>"], "deepseek"),
    (["[PREFIX]", "[SUFFIX]"], "codestral"),
    ([], None),
    (["<fim_prefix>", "<fim_suffix>"], None),      # a family needs every marker as one token
])
def test_detect_fim(tokens, family):
    fim = detect_fim(BASE + tokens)
    assert (fim["family"] if fim else None) == family
    if fim:
        for key in ("prefix", "suffix"):
            assert fim[key] in tokens


@pytest.mark.parametrize("tokens,repository", [
    (["<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>", "<|repo_name|>", "<|file_sep|>"],
     {"name": "<|repo_name|>", "fileSeparator": "<|file_sep|>"}),
    (["<fim_prefix>", "<fim_suffix>", "<fim_middle>", "<repo_name>", "<file_sep>"],
     {"name": "<repo_name>", "fileSeparator": "<file_sep>"}),
    (["<fim_prefix>", "<fim_suffix>", "<fim_middle>", "<file_sep>"], None),  # both tokens, or none
    (["<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>", "<repo_name>", "<file_sep>"], None),  # not the family's
])
def test_detect_repository_tokens(tokens, repository):
    assert detect_fim(BASE + tokens)["repository"] == repository


def test_stop_tokens_eos_first():
    toks = ["<|im_end|>", "x", "<|endoftext|>", "<file_sep>"]
    assert stop_tokens(toks, 2) == ["<|endoftext|>", "<|im_end|>", "<file_sep>"]


def test_nib_json_of_synthetic(synthetic, tmp_path):
    from nib_convert.convert import convert
    from nib_convert.graph import GraphOptions

    convert(synthetic("llama-mixed"), str(tmp_path), GraphOptions(precision="fp32"), log=lambda *a: None)
    nib = json.load(open(tmp_path / "nib.json"))
    assert nib["format_version"] == 1 and nib["precision"] == "fp32" and nib["architecture"] == "llama"
    assert nib["fim"] == {"family": "starcoder", "prefix": "<fim_prefix>", "suffix": "<fim_suffix>",
                          "middle": "<fim_middle>", "repository": None}
    assert nib["stop_tokens"][0] == "<|endoftext|>" and "<file_sep>" in nib["stop_tokens"]
    assert nib["add_bos"] is False and nib["chat"] is None and nib["context_length"] == 256
    assert nib["kv_cache"] == "shared_buffer"
    assert len(nib["source"]["sha256"]) == 64
    cfg = json.load(open(tmp_path / "config.json"))
    assert (cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]) == (4, 2, 16)
    assert os.path.exists(tmp_path / "tokenizer.json")
