//! User settings: parsed from `initializationOptions` and `workspace/didChangeConfiguration`,
//! validated key by key. A bad value is reported (by its full key) and its default kept, so a
//! typo in one setting never takes the others down. Documented in `docs/configuration.md`.

use std::path::PathBuf;

use serde_json::{Map, Value};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DocstringStyle {
    Google,
    Numpy,
    Rest,
}

#[derive(Clone, Debug, PartialEq)]
pub struct CompletionConfig {
    pub enabled: bool,
    /// Upper bound on generated tokens per completion.
    pub max_tokens: usize,
    /// Prompt budget in tokens (prefix, suffix and cross-file context together).
    pub context_tokens: usize,
    /// Language ids completions are offered for; empty means every language.
    pub languages: Vec<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Model directory; `None` means the default model.
    pub model_path: Option<PathBuf>,
    /// `libonnxruntime.so`; `None` means search (see `engine::runtime`).
    pub onnx_runtime_path: Option<PathBuf>,
    /// Inference threads; `None` means one per physical core.
    pub threads: Option<usize>,
    pub completion: CompletionConfig,
    pub docstring_style: DocstringStyle,
    /// How long a generation may run before it is stopped and answered with an error.
    pub request_timeout_ms: u64,
    /// The workspace's Python interpreter: generated test modules must import under it.
    pub python_interpreter: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            model_path: None,
            onnx_runtime_path: None,
            threads: None,
            completion: CompletionConfig { enabled: true, max_tokens: 64, context_tokens: 1024, languages: Vec::new() },
            docstring_style: DocstringStyle::Google,
            request_timeout_ms: 30_000,
            python_interpreter: None,
        }
    }
}

/// Reads settings on top of `base`. Accepts both `{"nib": {...}}` (a client sending its whole
/// settings tree) and the `nib` section itself. Returns the result and one warning per
/// rejected key.
pub fn parse(base: &Config, settings: &Value) -> (Config, Vec<String>) {
    let mut config = base.clone();
    let mut warnings = Vec::new();
    let section = match settings.get("nib") {
        Some(section) => section,
        None => settings,
    };
    match section {
        Value::Null => {}
        Value::Object(map) => read_section(&mut config, map, &mut warnings),
        _ => warnings.push("settings must be an object; ignoring them".to_string()),
    }
    (config, warnings)
}

fn read_section(config: &mut Config, map: &Map<String, Value>, warnings: &mut Vec<String>) {
    for (key, value) in map {
        if value.is_null() {
            continue; // An unset setting keeps its default.
        }
        let outcome = match key.as_str() {
            "modelPath" => path(value).map(|p| config.model_path = p),
            "onnxRuntimePath" => path(value).map(|p| config.onnx_runtime_path = p),
            "threads" => integer(value, 0, 256).map(|n| config.threads = (n > 0).then_some(n)),
            "requestTimeoutMs" => integer(value, 100, 600_000).map(|n| config.request_timeout_ms = n as u64),
            "python" => nested(value, "nib.python", warnings, |inner_key, inner_value| match inner_key {
                "interpreter" => path(inner_value).map(|p| config.python_interpreter = p),
                _ => Err("unknown setting".to_string()),
            }),
            "completion" => nested(value, "nib.completion", warnings, |inner_key, inner_value| {
                read_completion_key(&mut config.completion, inner_key, inner_value)
            }),
            "docstring" => nested(value, "nib.docstring", warnings, |inner_key, inner_value| match inner_key {
                "style" => docstring_style(inner_value).map(|s| config.docstring_style = s),
                _ => Err("unknown setting".to_string()),
            }),
            _ => Err("unknown setting".to_string()),
        };
        if let Err(why) = outcome {
            warnings.push(format!("nib.{key}: {why}; keeping the default"));
        }
    }
}

/// Reads a section object key by key with `read_key`, warning (as `{prefix}.{key}`) for each
/// rejected key. Errs only when the section is not an object.
fn nested(
    value: &Value,
    prefix: &str,
    warnings: &mut Vec<String>,
    mut read_key: impl FnMut(&str, &Value) -> Result<(), String>,
) -> Result<(), String> {
    let map = value.as_object().ok_or_else(|| "expected an object".to_string())?;
    for (key, value) in map {
        if value.is_null() {
            continue;
        }
        if let Err(why) = read_key(key, value) {
            warnings.push(format!("{prefix}.{key}: {why}; keeping the default"));
        }
    }
    Ok(())
}

fn read_completion_key(completion: &mut CompletionConfig, key: &str, value: &Value) -> Result<(), String> {
    match key {
        "enabled" => value.as_bool().map(|b| completion.enabled = b).ok_or_else(|| "expected true or false".into()),
        "maxTokens" => integer(value, 1, 1024).map(|n| completion.max_tokens = n),
        "contextTokens" => integer(value, 64, 32_768).map(|n| completion.context_tokens = n),
        "languages" => match value.as_array() {
            Some(items) if items.iter().all(Value::is_string) => {
                completion.languages = items.iter().filter_map(|v| v.as_str().map(str::to_string)).collect();
                Ok(())
            }
            _ => Err("expected a list of language ids".to_string()),
        },
        _ => Err("unknown setting".to_string()),
    }
}

fn path(value: &Value) -> Result<Option<PathBuf>, String> {
    match value.as_str() {
        Some("") => Ok(None),
        Some(text) => Ok(Some(expand_home(text))),
        None => Err("expected a path string".to_string()),
    }
}

/// `~/x` means the user's home, as users write it in editor settings.
fn expand_home(text: &str) -> PathBuf {
    match (text.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => PathBuf::from(text),
    }
}

fn integer(value: &Value, min: u64, max: u64) -> Result<usize, String> {
    match value.as_u64() {
        Some(n) if (min..=max).contains(&n) => Ok(n as usize),
        _ => Err(format!("expected an integer from {min} to {max}, got {value}")),
    }
}

fn docstring_style(value: &Value) -> Result<DocstringStyle, String> {
    match value.as_str() {
        Some("google") => Ok(DocstringStyle::Google),
        Some("numpy") => Ok(DocstringStyle::Numpy),
        Some("rest") => Ok(DocstringStyle::Rest),
        _ => Err(format!("expected \"google\", \"numpy\" or \"rest\", got {value}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_nested_and_flat_sections() {
        let (config, warnings) =
            parse(&Config::default(), &json!({"nib": {"completion": {"maxTokens": 32}, "threads": 1}}));
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!((config.completion.max_tokens, config.threads), (32, Some(1)));
        let (config, _) = parse(&Config::default(), &json!({"docstring": {"style": "numpy"}}));
        assert_eq!(config.docstring_style, DocstringStyle::Numpy);
    }

    #[test]
    fn bad_values_warn_by_key_and_keep_defaults() {
        let settings = json!({
            "completion": {"maxTokens": "many", "enabled": false, "languages": [1]},
            "docstring": {"style": "haiku"},
            "modelPath": 3,
            "colour": "blue"
        });
        let (config, warnings) = parse(&Config::default(), &settings);
        assert_eq!(config.completion.max_tokens, 64);
        assert!(!config.completion.enabled, "valid keys next to invalid ones still apply");
        let mut keys: Vec<&str> = warnings.iter().map(|w| w.split(':').next().unwrap()).collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "nib.colour",
                "nib.completion.languages",
                "nib.completion.maxTokens",
                "nib.docstring.style",
                "nib.modelPath"
            ]
        );
        let (_, warnings) = parse(&Config::default(), &json!(["not", "an", "object"]));
        assert_eq!(warnings.len(), 1);
    }
}
