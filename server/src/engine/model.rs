//! A model directory (`models/README.md` documents the format): `model.onnx`, `tokenizer.json`,
//! and `nib.json` with what the graph cannot tell (prompt format, stop tokens, context length,
//! chat format). Everything about tensor names and shapes is read from the graph instead.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;
use tokenizers::Tokenizer;

use super::EngineError;
use super::session::KvLayout;

/// `nib.json`, as written by `models/convert.py` (or by hand for other exports).
#[derive(Clone, Debug, Default, Deserialize)]
struct NibJson {
    name: Option<String>,
    /// `null` means "no FIM"; absent means "detect from the tokenizer".
    #[serde(default, deserialize_with = "present")]
    fim: Option<Value>,
    #[serde(default)]
    stop_tokens: Vec<String>,
    context_length: Option<usize>,
    chat: Option<ChatJson>,
    #[serde(default)]
    add_bos: bool,
    /// `"shared_buffer"`: the graph's attention writes in place into a past buffer bound as
    /// its present output. Absent: the copying layout (any Optimum-style export).
    kv_cache: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
struct ChatJson {
    format: Option<String>,
}

/// Distinguishes `"fim": null` (Some(Null)) from a missing key (None).
fn present<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(deserializer).map(Some)
}

/// How the model wants chat prompts (for docstrings and tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChatFormat {
    /// `<|im_start|>role\n...<|im_end|>\n`
    ChatMl,
}

/// What the rest of nib needs to know about a loaded model.
#[derive(Clone, Debug, Default)]
pub struct ModelInfo {
    pub dir: PathBuf,
    pub name: String,
    pub context_length: usize,
    /// FIM family named in `nib.json` (`Some("")` never happens); `None` with
    /// `fim_declared_absent == false` means "detect from special tokens".
    pub fim_family: Option<String>,
    pub fim_declared_absent: bool,
    /// The FIM markers `nib.json` spells out; they win over `models/fim.json`'s spellings.
    pub fim_markers: Option<super::fim::Markers>,
    /// The repository tokens `nib.json` spells out (`fim.repository`); they win over the table's.
    pub fim_repository: Option<super::fim::RepositoryTokens>,
    /// Every special (added) token of the tokenizer, for FIM detection and stop tokens.
    pub special_tokens: Vec<String>,
    /// Special tokens are sent as text and read by a remote server's tokenizer, so any FIM
    /// family's markers can be used (there is no vocabulary here to check them against).
    pub markers_are_text: bool,
    pub chat_format: Option<ChatFormat>,
}

pub struct ModelFiles {
    pub info: ModelInfo,
    pub onnx: PathBuf,
    pub tokenizer: Tokenizer,
    pub stop_token_ids: Vec<u32>,
    pub bos_token_id: Option<u32>,
    pub kv_layout: KvLayout,
}

/// The model directory to use: the configured one, else the first default that exists.
pub fn resolve_dir(configured: Option<&Path>) -> Result<PathBuf, EngineError> {
    if let Some(dir) = configured {
        return Ok(dir.to_path_buf());
    }
    let candidates = crate::paths::default_model_candidates();
    candidates.iter().find(|dir| dir.join("model.onnx").is_file()).cloned().ok_or_else(|| {
        let looked: Vec<String> = candidates.iter().map(|c| c.display().to_string()).collect();
        EngineError::Model(format!(
            "no model configured and the default model is not installed (looked in {}); run `make setup` \
             or set `nib.modelPath` to a model directory",
            looked.join(", ")
        ))
    })
}

fn model_error(dir: &Path, what: impl std::fmt::Display) -> EngineError {
    EngineError::Model(format!("model directory {}: {what}", dir.display()))
}

pub fn load(dir: &Path) -> Result<ModelFiles, EngineError> {
    if !dir.is_dir() {
        return Err(model_error(dir, "does not exist; see models/README.md for the format"));
    }
    let onnx = dir.join("model.onnx");
    if !onnx.is_file() {
        return Err(model_error(dir, "has no model.onnx"));
    }
    let tokenizer = Tokenizer::from_file(dir.join("tokenizer.json"))
        .map_err(|error| model_error(dir, format_args!("cannot read tokenizer.json: {error}")))?;
    let nib = read_nib_json(dir)?;
    let config: Value = std::fs::read_to_string(dir.join("config.json"))
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or(Value::Null);
    let bos_token_id =
        if nib.add_bos { config.get("bos_token_id").and_then(Value::as_u64).map(|id| id as u32) } else { None };
    let context_length = nib
        .context_length
        .or_else(|| config.get("max_position_embeddings").and_then(Value::as_u64).map(|n| n as usize))
        .unwrap_or(2048);
    let (fim_family, fim_declared_absent) = match &nib.fim {
        None => (None, false),
        Some(Value::Null) => (None, true),
        Some(value) => (value.get("family").and_then(Value::as_str).map(str::to_string), false),
    };
    let name =
        nib.name.clone().unwrap_or_else(|| dir.file_name().map_or("model".into(), |n| n.to_string_lossy().into()));
    Ok(ModelFiles {
        info: ModelInfo {
            dir: dir.to_path_buf(),
            name,
            context_length,
            fim_family,
            fim_declared_absent,
            fim_markers: nib.fim.as_ref().and_then(|value| serde_json::from_value(value.clone()).ok()),
            fim_repository: nib
                .fim
                .as_ref()
                .and_then(|value| serde_json::from_value(value.get("repository")?.clone()).ok()),
            special_tokens: special_tokens(&tokenizer),
            markers_are_text: false,
            chat_format: chat_format(&nib, &tokenizer),
        },
        onnx,
        stop_token_ids: stop_token_ids(&nib, &tokenizer, &config),
        tokenizer,
        bos_token_id,
        kv_layout: kv_layout(dir, &nib)?,
    })
}

/// `nib.json`, or the defaults (the prompt format detected from the tokenizer) without one.
fn read_nib_json(dir: &Path) -> Result<NibJson, EngineError> {
    match std::fs::read_to_string(dir.join("nib.json")) {
        Ok(text) => {
            serde_json::from_str(&text).map_err(|error| model_error(dir, format_args!("invalid nib.json: {error}")))
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            tracing::warn!("{} has no nib.json; detecting the prompt format from the tokenizer", dir.display());
            Ok(NibJson::default())
        }
        Err(error) => Err(model_error(dir, format_args!("cannot read nib.json: {error}"))),
    }
}

/// The vocabulary's special tokens, in id order.
fn special_tokens(tokenizer: &Tokenizer) -> Vec<String> {
    let mut special: Vec<(u32, String)> = tokenizer
        .get_added_tokens_decoder()
        .into_iter()
        .filter(|(_, token)| token.special)
        .map(|(id, token)| (id, token.content))
        .collect();
    special.sort();
    special.into_iter().map(|(_, content)| content).collect()
}

/// The ids generation stops at: `nib.json`'s stop tokens (else the usual end-of-text markers
/// this vocabulary has), and `config.json`'s end-of-sequence id.
fn stop_token_ids(nib: &NibJson, tokenizer: &Tokenizer, config: &Value) -> Vec<u32> {
    let mut stop_tokens = nib.stop_tokens.clone();
    if stop_tokens.is_empty() {
        stop_tokens = ["<|endoftext|>", "</s>", "<|im_end|>", "<|EOT|>", "<EOT>", "<file_sep>"]
            .iter()
            .filter(|token| tokenizer.token_to_id(token).is_some())
            .map(|token| token.to_string())
            .collect();
    }
    let mut ids = Vec::new();
    for token in &stop_tokens {
        match tokenizer.token_to_id(token) {
            Some(id) => ids.push(id),
            None => tracing::warn!("stop token {token:?} from nib.json is not in the vocabulary"),
        }
    }
    if let Some(eos) = config.get("eos_token_id").and_then(Value::as_u64)
        && !ids.contains(&(eos as u32))
    {
        ids.push(eos as u32);
    }
    ids
}

/// The chat template: `nib.json`'s, else ChatML when the vocabulary has its markers.
fn chat_format(nib: &NibJson, tokenizer: &Tokenizer) -> Option<ChatFormat> {
    match nib.chat.as_ref().and_then(|chat| chat.format.as_deref()) {
        Some("chatml") => Some(ChatFormat::ChatMl),
        _ if tokenizer.token_to_id("<|im_start|>").is_some() && tokenizer.token_to_id("<|im_end|>").is_some() => {
            Some(ChatFormat::ChatMl)
        }
        _ => None,
    }
}

fn kv_layout(dir: &Path, nib: &NibJson) -> Result<KvLayout, EngineError> {
    match nib.kv_cache.as_deref() {
        None => Ok(KvLayout::Copying),
        Some("shared_buffer") => Ok(KvLayout::SharedBuffer),
        Some(other) => Err(model_error(
            dir,
            format_args!("nib.json: unknown kv_cache {other:?} (known: \"shared_buffer\", or leave it out)"),
        )),
    }
}
