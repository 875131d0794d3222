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
    /// How long an automatic completion may spend prefilling a cold prompt (0: no limit).
    pub prefill_budget_ms: u64,
    /// Language ids completions are offered for; empty means every language.
    pub languages: Vec<String>,
}

/// Context retrieved from the workspace index for completions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContextConfig {
    /// Index the workspace folders and retrieve from them (off: open buffers only).
    pub workspace: bool,
    /// The most files the index takes (it also stops at a memory cap).
    pub max_files: usize,
}

/// Where generations run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendKind {
    /// The in-process ONNX model.
    Local,
    /// An OpenAI-compatible completions server (`nib.remote.*`).
    Remote,
}

/// A setting that is detected unless the user names a value (or turns it off).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Choice {
    Auto,
    Off,
    Named(String),
}

/// The OpenAI-compatible completions server used when `nib.backend` is `"remote"`.
#[derive(Clone, Debug, PartialEq)]
pub struct RemoteConfig {
    /// Base URL of the API, e.g. `http://gpu-box:8000/v1`; nib posts to `{url}/completions`.
    pub url: String,
    /// The `model` field of requests; empty means "the one the server serves".
    pub model: String,
    /// Name of the environment variable holding the API key (the key itself is never a setting).
    /// Only names that look like an API key's variable are accepted (see `api_key_env_refusal`).
    pub api_key_env: String,
    /// Also accept `*_TOKEN` variables in `api_key_env` (off: a token for something else, such
    /// as `GITHUB_TOKEN`, must not be sent to a completions server by mistake or by a repository).
    pub allow_token_env: bool,
    /// FIM family (`starcoder`, `codellama`, `deepseek`, `qwen`, `codestral`), detected from the
    /// model name when `Auto`, plain prefix prompts when `Off`.
    pub fim: Choice,
    /// Chat format for code actions (`chatml`), detected from the model name when `Auto`.
    pub chat: Choice,
    /// The served model's context window in tokens (prompts are sized to fit it).
    pub context_length: usize,
    pub connect_timeout_ms: u64,
    /// Longest wait for the response to start and, after that, for each streamed piece.
    pub timeout_ms: u64,
    pub max_concurrent_requests: usize,
    /// Answer from the local model when the server cannot be reached or fails.
    pub fallback_to_local: bool,
}

impl Default for RemoteConfig {
    fn default() -> Self {
        RemoteConfig {
            url: String::new(),
            model: String::new(),
            api_key_env: String::new(),
            allow_token_env: false,
            fim: Choice::Auto,
            chat: Choice::Auto,
            context_length: 4096,
            connect_timeout_ms: 3_000,
            timeout_ms: 15_000,
            max_concurrent_requests: 4,
            fallback_to_local: false,
        }
    }
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
    /// Completion context from the whole workspace (`nib.context.*`).
    pub context: ContextConfig,
    pub docstring_style: DocstringStyle,
    /// How long a generation may run before it is stopped and answered with an error.
    pub request_timeout_ms: u64,
    /// The workspace's Python interpreter: generated tests run under it.
    pub python_interpreter: Option<PathBuf>,
    /// `nib.tests.verify`: run generated tests and keep those that pass (`true`, "auto"), or
    /// write them unverified (`false`, "off").
    pub verify_tests: bool,
    /// `nib.tests.timeBudgetSeconds`: the most time one **Generate unit tests** takes.
    pub tests_time_budget: std::time::Duration,
    pub backend: BackendKind,
    pub remote: RemoteConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            model_path: None,
            onnx_runtime_path: None,
            threads: None,
            completion: CompletionConfig {
                enabled: true,
                max_tokens: 64,
                context_tokens: 1024,
                prefill_budget_ms: 300,
                languages: Vec::new(),
            },
            context: ContextConfig { workspace: true, max_files: 20_000 },
            docstring_style: DocstringStyle::Google,
            request_timeout_ms: 30_000,
            python_interpreter: None,
            verify_tests: true,
            tests_time_budget: std::time::Duration::from_secs(crate::actions::verify::budget::DEFAULT_SECONDS),
            backend: BackendKind::Local,
            remote: RemoteConfig::default(),
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
            "tests" => {
                nested(value, "nib.tests", warnings, |inner_key, inner_value| match (inner_key, inner_value.as_str()) {
                    ("verify", Some(mode @ ("auto" | "off"))) => {
                        config.verify_tests = mode == "auto";
                        Ok(())
                    }
                    ("verify", _) => Err(format!("expected \"auto\" or \"off\", got {inner_value}")),
                    ("timeBudgetSeconds", _) => integer(inner_value, 5, 3600)
                        .map(|seconds| config.tests_time_budget = std::time::Duration::from_secs(seconds as u64)),
                    _ => Err("unknown setting".to_string()),
                })
            }
            "completion" => nested(value, "nib.completion", warnings, |inner_key, inner_value| {
                read_completion_key(&mut config.completion, inner_key, inner_value)
            }),
            "context" => nested(value, "nib.context", warnings, |inner_key, inner_value| match inner_key {
                "workspace" => inner_value
                    .as_bool()
                    .map(|b| config.context.workspace = b)
                    .ok_or_else(|| "expected true or false".into()),
                "maxFiles" => integer(inner_value, 1, 200_000).map(|n| config.context.max_files = n),
                _ => Err("unknown setting".to_string()),
            }),
            "backend" => match value.as_str() {
                Some("local") => Ok(BackendKind::Local),
                Some("remote") => Ok(BackendKind::Remote),
                _ => Err(format!("expected \"local\" or \"remote\", got {value}")),
            }
            .map(|kind| config.backend = kind),
            "remote" => nested(value, "nib.remote", warnings, |inner_key, inner_value| {
                read_remote_key(&mut config.remote, inner_key, inner_value)
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
    // Checked after every key is read: whether the name is accepted depends on allowTokenEnv.
    if let Some(why) = api_key_env_refusal(&config.remote) {
        warnings.push(format!("nib.remote.apiKeyEnv: {why}; no API key is sent"));
        config.remote.api_key_env.clear();
    }
}

/// Why `remote.api_key_env` may not be used, if it may not. The variable's value is sent to
/// the configured server, so the name must say it is meant for that: `NIB_*` or `*_API_KEY`,
/// and `*_TOKEN` only when the user opted in with `nib.remote.allowTokenEnv`. Anything else
/// (`HOME`, `AWS_SECRET_ACCESS_KEY`, `GITHUB_TOKEN` without the opt-in) is refused, so that
/// settings written by someone else cannot send an unrelated secret. docs/configuration.md.
pub fn api_key_env_refusal(remote: &RemoteConfig) -> Option<String> {
    let name = remote.api_key_env.to_ascii_uppercase();
    let accepted = name.is_empty()
        || name.starts_with("NIB_")
        || name.ends_with("_API_KEY")
        || (name.ends_with("_TOKEN") && remote.allow_token_env);
    if accepted {
        return None;
    }
    Some(if name.ends_with("_TOKEN") {
        format!(
            "{} is a token variable; set nib.remote.allowTokenEnv to true (a user setting) to send it to the \
             server, or copy the key into a variable named NIB_API_KEY",
            remote.api_key_env
        )
    } else {
        format!(
            "{} does not look like an API key variable (accepted: NIB_*, *_API_KEY, and *_TOKEN with \
             nib.remote.allowTokenEnv); copy the key into a variable named NIB_API_KEY",
            remote.api_key_env
        )
    })
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
        "prefillBudgetMs" => integer(value, 0, 60_000).map(|n| completion.prefill_budget_ms = n as u64),
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

fn read_remote_key(remote: &mut RemoteConfig, key: &str, value: &Value) -> Result<(), String> {
    match key {
        "url" => match value.as_str() {
            Some("") => {
                remote.url.clear();
                Ok(())
            }
            Some(url) => server_url(url).map(|url| remote.url = url),
            None => Err(format!("expected an http:// or https:// URL, got {value}")),
        },
        "model" => string(value).map(|name| remote.model = name),
        "apiKeyEnv" => match value.as_str() {
            Some(name) if name.is_empty() || is_env_var_name(name) => Ok(name.to_string()),
            _ => Err(format!("expected the name of an environment variable, got {value}")),
        }
        .map(|name| remote.api_key_env = name),
        "apiKey" => Err("API keys are never read from settings (they end up in dotfiles and logs); put the key \
                         in an environment variable and name it in nib.remote.apiKeyEnv"
            .to_string()),
        "allowTokenEnv" => {
            value.as_bool().map(|b| remote.allow_token_env = b).ok_or_else(|| "expected true or false".into())
        }
        "fim" => choice(value, &crate::engine::fim::family_names()).map(|c| remote.fim = c),
        "chat" => choice(value, &["chatml"]).map(|c| remote.chat = c),
        "contextLength" => integer(value, 256, 1_048_576).map(|n| remote.context_length = n),
        "connectTimeoutMs" => integer(value, 100, 600_000).map(|n| remote.connect_timeout_ms = n as u64),
        "timeoutMs" => integer(value, 100, 600_000).map(|n| remote.timeout_ms = n as u64),
        "maxConcurrentRequests" => integer(value, 1, 64).map(|n| remote.max_concurrent_requests = n),
        "fallbackToLocal" => {
            value.as_bool().map(|b| remote.fallback_to_local = b).ok_or_else(|| "expected true or false".into())
        }
        _ => Err("unknown setting".to_string()),
    }
}

/// A server's base URL: http or https, with a host, without credentials (they would be shown
/// in status, logs and errors; the key belongs in `apiKeyEnv`), a query or a fragment (nib
/// appends `/completions`). Messages about a URL with credentials never repeat it.
fn server_url(text: &str) -> Result<String, String> {
    let shown = redact_credentials(text);
    let url = reqwest::Url::parse(text)
        .map_err(|error| format!("expected an http:// or https:// URL, got {shown:?} ({error})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("expected an http:// or https:// URL, got {shown:?}"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "the URL {shown:?} carries credentials (user:password@); they would appear in status, logs and errors: \
             put the key in an environment variable and name it in nib.remote.apiKeyEnv"
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("the URL {shown:?} has no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "the URL {shown:?} has a query or fragment; give the API's base URL (nib appends /completions)"
        ));
    }
    Ok(text.trim_end_matches('/').to_string())
}

/// `text` with any `user:password@` of a URL replaced by `***@`.
pub fn redact_credentials(text: &str) -> String {
    let Some((scheme, rest)) = text.split_once("://") else { return text.to_string() };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
        None => text.to_string(),
    }
}

fn is_env_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn string(value: &Value) -> Result<String, String> {
    value.as_str().map(str::to_string).ok_or_else(|| format!("expected a string, got {value}"))
}

/// `"auto"`, `"none"` or one of `names`.
fn choice(value: &Value, names: &[&str]) -> Result<Choice, String> {
    match value.as_str() {
        Some("auto") => Ok(Choice::Auto),
        Some("none") => Ok(Choice::Off),
        Some(name) if names.contains(&name) => Ok(Choice::Named(name.to_string())),
        _ => Err(format!("expected \"auto\", \"none\" or one of {}, got {value}", names.join(", "))),
    }
}

/// A path setting: absolute (after `~/`), since a relative one would be resolved against
/// whatever folder nib was started in — usually the workspace, whose files are not the user's
/// choice to load as a library, a model or an interpreter.
fn path(value: &Value) -> Result<Option<PathBuf>, String> {
    match value.as_str() {
        Some("") => Ok(None),
        Some(text) => {
            let path = expand_home(text);
            if path.is_absolute() {
                Ok(Some(path))
            } else {
                Err(format!("expected an absolute path (or one starting with ~/), got {value}"))
            }
        }
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
    fn tests_verify_is_auto_or_off_and_the_time_budget_is_bounded() {
        assert!(Config::default().verify_tests);
        let (config, warnings) = parse(&Config::default(), &json!({"tests": {"verify": "off"}}));
        assert!(warnings.is_empty() && !config.verify_tests, "{warnings:?}");
        let (config, warnings) = parse(&config, &json!({"tests": {"verify": "sometimes"}}));
        assert!(!config.verify_tests && warnings[0].contains("nib.tests.verify"), "{warnings:?}");
        assert_eq!(Config::default().tests_time_budget.as_secs(), 30);
        let (config, warnings) = parse(&config, &json!({"tests": {"timeBudgetSeconds": 90}}));
        assert!(warnings.is_empty() && config.tests_time_budget.as_secs() == 90, "{warnings:?}");
        let (config, warnings) = parse(&config, &json!({"tests": {"timeBudgetSeconds": 0}}));
        assert!(config.tests_time_budget.as_secs() == 90 && warnings[0].contains("timeBudgetSeconds"), "{warnings:?}");
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

    #[test]
    fn remote_settings_are_validated_and_keys_never_accepted() {
        let settings = json!({"backend": "remote", "remote": {
            "url": "http://gpu-box:8000/v1/", "model": "qwen2.5-coder-7b", "apiKeyEnv": "TEAM_API_KEY",
            "fim": "qwen", "maxConcurrentRequests": 2, "fallbackToLocal": true
        }});
        let (config, warnings) = parse(&Config::default(), &settings);
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(config.backend, BackendKind::Remote);
        assert_eq!(config.remote.url, "http://gpu-box:8000/v1", "the trailing slash is dropped");
        assert_eq!((config.remote.fim, config.remote.chat), (Choice::Named("qwen".into()), Choice::Auto));
        assert_eq!((config.remote.max_concurrent_requests, config.remote.fallback_to_local), (2, true));

        let bad = json!({"backend": "cloud", "remote": {
            "url": "gpu-box:8000", "apiKey": "sk-secret", "apiKeyEnv": "not a name", "fim": "gpt"
        }});
        let (config, warnings) = parse(&Config::default(), &bad);
        assert_eq!(config.backend, BackendKind::Local);
        assert_eq!(warnings.len(), 5, "{warnings:?}");
        assert!(warnings.iter().all(|w| !w.contains("sk-secret")), "a key given in settings is not echoed back");
        assert!(warnings.iter().any(|w| w.starts_with("nib.remote.apiKey:") && w.contains("apiKeyEnv")));
    }

    #[test]
    fn workspace_context_settings() {
        let (config, warnings) = parse(&Config::default(), &json!({"context": {"workspace": false, "maxFiles": 500}}));
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(config.context, ContextConfig { workspace: false, max_files: 500 });
        let (config, warnings) = parse(&Config::default(), &json!({"context": {"workspace": "yes", "maxFiles": 0}}));
        assert_eq!(config.context, Config::default().context);
        assert_eq!(warnings.len(), 2, "{warnings:?}");
    }

    #[test]
    fn relative_paths_are_refused_so_a_workspace_cannot_name_its_own_files() {
        for key in ["modelPath", "onnxRuntimePath"] {
            for relative in ["libonnxruntime.so", "./evil/lib.so", "models/x", "~user/x"] {
                let (config, warnings) = parse(&Config::default(), &json!({ key: relative }));
                assert_eq!(config, Config::default(), "{key} = {relative}");
                assert!(warnings[0].starts_with(&format!("nib.{key}: expected an absolute path")), "{warnings:?}");
            }
        }
        let (config, warnings) = parse(&Config::default(), &json!({"python": {"interpreter": ".venv/bin/python"}}));
        assert_eq!((config.python_interpreter, warnings.len()), (None, 1));
        let (config, warnings) =
            parse(&Config::default(), &json!({"modelPath": "/opt/m", "onnxRuntimePath": "~/lib.so"}));
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(config.model_path.as_deref(), Some(std::path::Path::new("/opt/m")));
        assert!(config.onnx_runtime_path.is_some_and(|p| p.is_absolute()));
    }

    #[test]
    fn only_api_key_variables_may_be_sent_to_the_server() {
        let key_env = |settings: Value| {
            let (config, warnings) = parse(&Config::default(), &json!({ "remote": settings }));
            (config.remote.api_key_env, warnings)
        };
        for accepted in ["NIB_API_KEY", "NIB_KEY", "OPENAI_API_KEY", "team_api_key"] {
            let (name, warnings) = key_env(json!({ "apiKeyEnv": accepted }));
            assert_eq!((name.as_str(), warnings.len()), (accepted, 0), "{warnings:?}");
        }
        for refused in ["GITHUB_TOKEN", "HOME", "AWS_SECRET_ACCESS_KEY", "SSH_AUTH_SOCK", "PATH"] {
            let (name, warnings) = key_env(json!({ "apiKeyEnv": refused }));
            assert_eq!(name, "", "{refused} is refused");
            assert!(
                warnings[0].starts_with("nib.remote.apiKeyEnv:") && warnings[0].contains("NIB_API_KEY"),
                "{warnings:?}"
            );
        }
        let (name, warnings) = key_env(json!({ "apiKeyEnv": "HF_TOKEN", "allowTokenEnv": true }));
        assert_eq!((name.as_str(), warnings.len()), ("HF_TOKEN", 0), "{warnings:?}");
        let (_, warnings) = key_env(json!({ "apiKeyEnv": "HF_TOKEN" }));
        assert!(warnings[0].contains("nib.remote.allowTokenEnv"), "{warnings:?}");
    }

    #[test]
    fn urls_with_credentials_queries_or_odd_schemes_are_refused_without_repeating_the_password() {
        for (url, says) in [
            ("https://alice:hunter2@gpu-box/v1", "carries credentials"),
            ("https://hunter2@gpu-box/v1", "carries credentials"),
            ("http://gpu-box:8000/v1?key=hunter2", "query"),
            ("http://gpu-box/v1#x", "query or fragment"),
            ("ftp://gpu-box/v1", "expected an http:// or https:// URL"),
            ("gpu-box:8000", "expected an http:// or https:// URL"),
            ("http://", "expected an http:// or https:// URL"),
        ] {
            let (config, warnings) = parse(&Config::default(), &json!({ "remote": { "url": url } }));
            assert_eq!(config.remote.url, "", "{url}");
            assert!(warnings[0].contains(says), "{url}: {warnings:?}");
            if url.contains('@') {
                assert!(!warnings[0].contains("hunter2") && warnings[0].contains("***@gpu-box"), "{warnings:?}");
            }
        }
        assert_eq!(redact_credentials("http://a:b@h:1/x@y"), "http://***@h:1/x@y");
        assert_eq!(redact_credentials("http://h/x@y"), "http://h/x@y");
    }

    #[test]
    fn the_defaults_as_editors_send_them_are_accepted() {
        let settings = json!({"backend": "local", "context": {"workspace": true, "maxFiles": 20000}, "remote": {
            "url": "", "model": "", "apiKeyEnv": "", "allowTokenEnv": false, "fim": "auto", "chat": "auto", "contextLength": 4096,
            "connectTimeoutMs": 3000, "timeoutMs": 15000, "maxConcurrentRequests": 4, "fallbackToLocal": false
        }});
        let (config, warnings) = parse(&Config::default(), &settings);
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(config, Config::default());
    }
}
