"""`config.json` and `nib.json`: what the Rust server needs to know that the graph cannot tell.

FIM (fill-in-the-middle) support is detected from the vocabulary: a family counts only when
each of its markers is a *single* token, because the server inserts them as token ids.
"""

from __future__ import annotations

import hashlib
import json
import os

from . import __version__

# The FIM table shared with the server (models/fim.json): family -> candidate (prefix, suffix,
# middle) marker triples, first match wins; "" for Codestral's missing middle marker (the model
# generates after `[SUFFIX]S[PREFIX]P`). Then the family's repository tokens (name, file
# separator), or None.
FIM_TABLE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fim.json")
with open(FIM_TABLE, encoding="utf-8") as _table:
    FIM_FAMILIES: list[tuple[str, list[tuple[str, str, str]], tuple[str, str] | None]] = [
        (family["name"], [(s["prefix"], s["suffix"], s["middle"] or "") for s in family["spellings"]],
         (family["repository"]["name"], family["repository"]["fileSeparator"]) if family["repository"] else None)
        for family in json.load(_table)["families"]]

# Tokens that end a completion when present in the vocabulary (the GGUF's eos is added first).
STOP_CANDIDATES = ["<|im_end|>", "<|endoftext|>", "<file_sep>", "<|file_sep|>", "<|EOT|>", "<EOT>", "▁<EOT>",
                   "<|eot_id|>", "<|end|>", "</s>", "<｜end▁of▁sentence｜>"]


def detect_fim(tokens: list[str]) -> dict | None:
    """The FIM family whose markers are all tokens of the vocabulary, with its repository tokens
    when the vocabulary has both (else `repository` is None)."""
    vocab = set(tokens)
    for family, triples, repository in FIM_FAMILIES:
        for pre, suf, mid in triples:
            if pre in vocab and suf in vocab and (mid == "" or mid in vocab):
                has_repository = repository is not None and all(token in vocab for token in repository)
                return {"family": family, "prefix": pre, "suffix": suf, "middle": mid or None,
                        "repository": {"name": repository[0], "fileSeparator": repository[1]}
                        if has_repository else None}
    return None


def stop_tokens(tokens: list[str], eos_id: int | None) -> list[str]:
    vocab = set(tokens)
    out = []
    if eos_id is not None and 0 <= eos_id < len(tokens):
        out.append(tokens[eos_id])
    out += [t for t in STOP_CANDIDATES if t in vocab and t not in out]
    return out


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_config(cfg, out_dir: str) -> None:
    """HF-style config.json (also carries HF's own keys so generic tools can read it)."""
    hf_arch = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}[cfg.arch]
    doc = {
        "architecture": cfg.arch,
        "architectures": [hf_arch],
        "model_type": cfg.arch,
        "hidden_size": cfg.hidden,
        "num_hidden_layers": cfg.layers,
        "num_attention_heads": cfg.heads,
        "num_key_value_heads": cfg.kv_heads,
        "head_dim": cfg.head_dim,
        "intermediate_size": cfg.ffn,
        "vocab_size": cfg.vocab,
        "max_position_embeddings": cfg.context,
        "rope_theta": cfg.rope_theta,
        "rms_norm_eps": cfg.eps,
        "bos_token_id": cfg.bos_id,
        "eos_token_id": cfg.eos_id,
        "tie_word_embeddings": cfg.tied,
        "torch_dtype": "float32",
    }
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(doc, f, indent=2)


def write_nib_json(cfg, tok, out_dir: str, name: str, precision: str, source_path: str,
                   source_sha256: str, chat_template: str | None) -> dict:
    vocab = set(tok.tokens)
    chat = None
    if chat_template or {"<|im_start|>", "<|im_end|>"} <= vocab:
        chat = {"format": "chatml" if {"<|im_start|>", "<|im_end|>"} <= vocab else None,
                "template": chat_template}
    doc = {
        "format_version": 1,
        "name": name,
        "architecture": cfg.arch,
        "precision": precision,
        "context_length": cfg.context,
        "fim": detect_fim(tok.tokens),
        "stop_tokens": stop_tokens(tok.tokens, cfg.eos_id),
        "chat": chat,
        "add_bos": bool(tok.add_bos),
        # GroupQueryAttention writes into a past buffer bound as its present output (graph.py).
        "kv_cache": "shared_buffer",
        "source": {"file": os.path.basename(source_path), "sha256": source_sha256},
        "converter": {"version": __version__, "precision": precision},
    }
    with open(os.path.join(out_dir, "nib.json"), "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=2, ensure_ascii=False)
    return doc
