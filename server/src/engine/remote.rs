//! The remote backend: generations run on an OpenAI-compatible completions server (vLLM, TGI,
//! llama.cpp's server, Ollama, ...) through `POST {url}/completions` with a raw prompt, streamed
//! as server-sent events. nib still builds every prompt and post-processes every answer; the
//! server only generates.
//!
//! Each generation is one HTTP request on a shared connection pool. Cancellation, the request
//! deadline and the idle timeout are checked while waiting for every piece of the stream, and
//! giving up drops the response, which closes its connection, so the server stops generating.
//! The API key is read from the environment variable the settings name and appears nowhere
//! else: not in settings, logs, errors or `Debug` output.
//!
//! The server is not trusted further than it must be (docs/security.md): redirects are not
//! followed (a 3xx is an error naming its `Location`), an https URL never falls back to plain
//! http, every generation has a deadline (`nib.requestTimeoutMs` unless the caller set one), a
//! token limit and a byte limit that keep-alive lines cannot stretch, the stream's buffers and
//! every body nib reads are capped, and text from the server is cut short before it is shown.

use std::future::Future;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{
    ChatFormat, EngineError, EngineStats, FinishReason, Flow, Generation, GenerationRequest, GenerationStats,
    ModelInfo, PromptPiece,
};
use crate::config::{Choice, RemoteConfig};

/// How often a wait on the server checks for cancellation and the request deadline.
const POLL: Duration = Duration::from_millis(20);

/// OpenAI's API accepts at most four stop sequences; nib enforces all of them itself anyway.
const MAX_SERVER_STOPS: usize = 4;

/// Generated text kept per requested token: a token is a few bytes, so a server sending more
/// is not generating what was asked and is cut off.
const MAX_BYTES_PER_TOKEN: usize = 64;

/// The longest line, and the largest event, of a stream; and the largest body of an error
/// reply or of `GET /models` nib reads.
const MAX_LINE_BYTES: usize = 1 << 20;
const MAX_ERROR_BODY_BYTES: usize = 64 << 10;
const MAX_MODELS_BODY_BYTES: usize = 1 << 20;

/// Characters of text from the server (an error message, a model name) shown to the user.
const MAX_FOREIGN_CHARS: usize = 200;

/// A value that must never be printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// The remote backend's settings, with the API key read from its environment variable.
#[derive(Clone, Debug, PartialEq)]
pub struct RemoteSettings {
    pub config: RemoteConfig,
    pub api_key: Option<Secret>,
    /// The deadline of a generation whose caller set none (`nib.requestTimeoutMs`).
    pub request_timeout_ms: u64,
}

impl RemoteSettings {
    pub fn from_config(config: &RemoteConfig) -> Self {
        let api_key = (!config.api_key_env.is_empty())
            .then(|| std::env::var(&config.api_key_env).ok())
            .flatten()
            .filter(|key| !key.is_empty())
            .map(Secret);
        let request_timeout_ms = crate::config::Config::default().request_timeout_ms;
        RemoteSettings { config: config.clone(), api_key, request_timeout_ms }
    }
}

/// Bounds the requests in flight to `nib.remote.maxConcurrentRequests`.
struct Permits {
    free: Mutex<usize>,
    released: Condvar,
}

struct Permit<'a>(&'a Permits);

impl Permits {
    /// Waits for a free slot, giving up when the request is cancelled or out of time.
    fn acquire(&self, request: &GenerationRequest, deadline: Instant) -> Result<Permit<'_>, EngineError> {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            interrupted(request, deadline)?;
            if *free > 0 {
                *free -= 1;
                return Ok(Permit(self));
            }
            free = self.released.wait_timeout(free, POLL).unwrap_or_else(|e| e.into_inner()).0;
        }
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        *self.0.free.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        self.0.released.notify_one();
    }
}

fn interrupted(request: &GenerationRequest, deadline: Instant) -> Result<(), EngineError> {
    if request.cancel.is_cancelled() {
        return Err(EngineError::Cancelled);
    }
    if Instant::now() >= deadline {
        return Err(EngineError::TimedOut);
    }
    Ok(())
}

/// A backend ready to send requests, and what its first contact with the server showed.
pub struct Connection {
    pub backend: RemoteBackend,
    /// Something to tell the user: the server did not answer, the model is not served, the API
    /// key variable is not set.
    pub warning: Option<String>,
    /// Whether the server answered (a failing server is not an error: it may come up later).
    pub reachable: bool,
}

pub struct RemoteBackend {
    settings: RemoteSettings,
    info: ModelInfo,
    /// The `model` field sent with every request (may be empty).
    model: String,
    client: reqwest::Client,
    runtime: tokio::runtime::Runtime,
    permits: Permits,
    stats: Mutex<EngineStats>,
}

impl RemoteBackend {
    /// Prepares the client and asks the server which models it serves.
    pub fn connect(settings: RemoteSettings) -> Result<Connection, EngineError> {
        let config = &settings.config;
        if config.url.is_empty() {
            return Err(EngineError::Model(
                "nib.backend is \"remote\" but nib.remote.url is not set (e.g. \"http://gpu-box:8000/v1\")".into(),
            ));
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("nib-remote-io")
            .enable_all()
            .build()
            .map_err(|error| EngineError::Runtime(format!("cannot start the HTTP runtime: {error}")))?;
        // No redirects: reqwest would follow ten, resend the body on 307/308 and keep the API
        // key on a change of scheme. An https URL never talks plain http.
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(config.connect_timeout_ms))
            .pool_idle_timeout(Duration::from_secs(90))
            .redirect(reqwest::redirect::Policy::none())
            .https_only(config.url.starts_with("https://"))
            .user_agent(concat!("nib/", env!("CARGO_PKG_VERSION")));
        if is_loopback(&config.url) {
            builder = builder.no_proxy(); // A proxy cannot reach this machine's own server.
        }
        let client = builder
            .build()
            .map_err(|error| EngineError::Runtime(format!("cannot create the HTTP client: {}", chain(&error))))?;
        let mut backend = RemoteBackend {
            info: ModelInfo::default(),
            model: config.model.clone(),
            client,
            runtime,
            permits: Permits { free: Mutex::new(config.max_concurrent_requests.max(1)), released: Condvar::new() },
            stats: Mutex::new(EngineStats::default()),
            settings,
        };
        let mut warnings = Vec::new();
        let mut reachable = true;
        let key_env = &backend.settings.config.api_key_env;
        if backend.settings.api_key.is_none() && !key_env.is_empty() {
            warnings.push(format!(
                "the environment variable {key_env} (nib.remote.apiKeyEnv) is not set; requests are sent without an API key"
            ));
        }
        if backend.settings.api_key.is_some() && plain_http_to_another_host(&backend.settings.config.url) {
            warnings.push(format!(
                "the API key from ${key_env} travels unencrypted to {} (plain http): anyone on the network \
                 between can read it; use an https URL",
                backend.settings.config.url
            ));
        }
        match backend.served_models() {
            Ok(served) => {
                if backend.model.is_empty() && served.len() == 1 && is_plain_name(&served[0]) {
                    backend.model = served[0].clone();
                } else if !backend.model.is_empty() && !served.is_empty() && !served.contains(&backend.model) {
                    let listed: Vec<String> = served.iter().take(10).map(|name| foreign(name)).collect();
                    let more =
                        if served.len() > 10 { format!(" and {} more", served.len() - 10) } else { String::new() };
                    warnings.push(format!(
                        "{} does not list the model {:?} (nib.remote.model); it serves {}{more}",
                        backend.settings.config.url,
                        backend.model,
                        listed.join(", ")
                    ));
                }
            }
            Err(error) => {
                warnings.push(error.to_string());
                reachable = false;
            }
        }
        backend.info = remote_info(&backend.settings.config, &backend.model);
        let warning = (!warnings.is_empty()).then(|| warnings.join("; "));
        Ok(Connection { backend, warning, reachable })
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    pub fn url(&self) -> &str {
        &self.settings.config.url
    }

    pub fn stats(&self) -> EngineStats {
        self.stats.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// `GET {url}/models`: the ids the server serves.
    fn served_models(&self) -> Result<Vec<String>, EngineError> {
        let url = format!("{}/models", self.settings.config.url);
        let timeout = Duration::from_millis(self.settings.config.connect_timeout_ms + 2_000);
        self.runtime.block_on(async {
            // A one-off question: do not keep its connection idle in the pool.
            let probe = self.client.get(&url).header(reqwest::header::CONNECTION, "close");
            let response = tokio::time::timeout(timeout, self.authorized(probe).send())
                .await
                .map_err(|_| self.error(format!("{url} did not answer within {} ms", timeout.as_millis())))?
                .map_err(|error| self.transport_error(&error))?;
            let status = response.status();
            let location = location(&response);
            let body = tokio::time::timeout(timeout, read_capped(response, MAX_MODELS_BODY_BYTES))
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default();
            if !status.is_success() {
                return Err(self.status_error(status, &body, location.as_deref()));
            }
            let listing: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            Ok(listing["data"]
                .as_array()
                .map(|models| models.iter().filter_map(|m| m["id"].as_str().map(str::to_string)).collect())
                .unwrap_or_default())
        })
    }

    fn authorized(&self, builder: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.settings.api_key {
            Some(Secret(key)) => builder.bearer_auth(key),
            None => builder,
        }
    }

    /// Runs one generation on the server. Blocks the calling thread; many threads may call it
    /// at once (up to `maxConcurrentRequests` requests are sent, the others wait).
    pub fn generate(
        &self,
        request: &GenerationRequest,
        observer: &mut dyn FnMut(&str) -> Flow,
    ) -> Result<Generation, EngineError> {
        let deadline = request
            .deadline
            .unwrap_or_else(|| Instant::now() + Duration::from_millis(self.settings.request_timeout_ms));
        let _permit = self.permits.acquire(request, deadline)?;
        let result = self.runtime.block_on(self.stream(request, deadline, observer));
        if let Ok(generation) = &result {
            self.stats.lock().unwrap_or_else(|e| e.into_inner()).record(&generation.stats);
        }
        result
    }

    fn body(&self, request: &GenerationRequest) -> Value {
        let prompt: String = request
            .prompt
            .iter()
            .map(|piece| match piece {
                PromptPiece::Text(text) | PromptPiece::Special(text) => text.as_str(),
            })
            .collect();
        let stops: Vec<&String> =
            request.stop_tokens.iter().chain(&request.stop_strings).take(MAX_SERVER_STOPS).collect();
        let mut body = json!({
            "prompt": prompt,
            "max_tokens": request.max_tokens,
            "temperature": request.sampling.temperature,
            "top_p": request.sampling.top_p,
            "stream": true,
        });
        if !self.model.is_empty() {
            body["model"] = json!(self.model);
        }
        if !stops.is_empty() {
            body["stop"] = json!(stops);
        }
        if request.sampling.temperature > 0.0 {
            body["seed"] = json!(request.sampling.seed);
        }
        body
    }

    async fn stream(
        &self,
        request: &GenerationRequest,
        deadline: Instant,
        observer: &mut dyn FnMut(&str) -> Flow,
    ) -> Result<Generation, EngineError> {
        let started = Instant::now();
        let idle = Duration::from_millis(self.settings.config.timeout_ms);
        let mut response = self.open_stream(request, deadline, started + idle).await?;
        let mut stats = GenerationStats::default();
        let mut events = EventStream::default();
        let mut received = Received::new(request.max_tokens.max(1) * MAX_BYTES_PER_TOKEN);
        // Any bytes keep the connection alive (servers send keep-alive comments during a long
        // prefill), but nothing extends the generation's `deadline`.
        let mut progress = Instant::now();
        let finish = 'stream: loop {
            let chunk =
                self.interruptible(request, deadline, progress + idle, response.chunk()).await?.map_err(|error| {
                    self.error(format!("the connection to {} broke mid-stream: {}", self.url(), chain(&error)))
                })?;
            let Some(chunk) = chunk else {
                return Err(self.error(format!("{} closed the stream before it was complete", self.url())));
            };
            progress = Instant::now();
            for event in events.push(&chunk) {
                match event.map_err(|why| self.error(format!("{} sent {why}", self.url())))? {
                    Event::Done => break 'stream FinishReason::Length,
                    Event::Usage { prompt_tokens } => stats.prompt_tokens = prompt_tokens,
                    Event::Piece { text, finish } => {
                        let ended =
                            received.push(&text, request, observer).or_else(|| server_finish(finish.as_deref()));
                        if let Some(reason) = ended {
                            break 'stream reason;
                        }
                    }
                }
            }
        };
        // Returning drops `response`: an unfinished stream's connection is closed, not reused.
        let first = received.first_piece.unwrap_or_else(Instant::now);
        stats.prefill_ms = (first - started).as_secs_f64() * 1e3;
        stats.decode_ms = first.elapsed().as_secs_f64() * 1e3;
        stats.generated_tokens = received.pieces;
        Ok(Generation { text: received.text, tokens: Vec::new(), finish, stats })
    }

    /// Sends `request` and waits for the response's head, giving up at `idle_until`; a status
    /// other than success is the error the server's (capped) body explains.
    async fn open_stream(
        &self,
        request: &GenerationRequest,
        deadline: Instant,
        idle_until: Instant,
    ) -> Result<reqwest::Response, EngineError> {
        let endpoint = format!("{}/completions", self.settings.config.url);
        let body = serde_json::to_vec(&self.body(request)).map_err(|error| self.error(error.to_string()))?;
        let http = self
            .authorized(self.client.post(&endpoint))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .body(body);
        let response = self
            .interruptible(request, deadline, idle_until, http.send())
            .await?
            .map_err(|error| self.transport_error(&error))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let location = location(&response);
        let idle = Duration::from_millis(self.settings.config.timeout_ms);
        let body = self
            .interruptible(request, deadline, Instant::now() + idle, read_capped(response, MAX_ERROR_BODY_BYTES))
            .await?
            .unwrap_or_default();
        Err(self.status_error(status, &body, location.as_deref()))
    }

    /// Awaits `future` while checking cancellation and the request deadline, giving up at
    /// `idle_until` (the idle timeout: the last bytes received plus `nib.remote.timeoutMs`).
    async fn interruptible<T>(
        &self,
        request: &GenerationRequest,
        deadline: Instant,
        idle_until: Instant,
        future: impl Future<Output = T>,
    ) -> Result<T, EngineError> {
        let idle_ms = self.settings.config.timeout_ms;
        let idle = tokio::time::sleep_until(idle_until.into());
        tokio::pin!(future, idle);
        let mut ticker = tokio::time::interval(POLL);
        loop {
            tokio::select! {
                output = &mut future => return Ok(output),
                () = &mut idle => {
                    return Err(self.error(format!(
                        "{} sent nothing for {idle_ms} ms (nib.remote.timeoutMs)",
                        self.url()
                    )));
                }
                _ = ticker.tick() => interrupted(request, deadline)?,
            }
        }
    }

    fn error(&self, message: String) -> EngineError {
        EngineError::Remote(message)
    }

    fn transport_error(&self, error: &reqwest::Error) -> EngineError {
        let url = self.url();
        let detail = chain(error);
        if error.is_connect() {
            let hint = if detail.contains("refused") { " (is the server running?)" } else { "" };
            self.error(format!("cannot connect to {url}: {detail}{hint}"))
        } else if error.is_timeout() {
            self.error(format!(
                "{url} did not accept the connection within {} ms",
                self.settings.config.connect_timeout_ms
            ))
        } else {
            self.error(format!("the request to {url} failed: {detail}"))
        }
    }

    fn status_error(&self, status: reqwest::StatusCode, body: &str, location: Option<&str>) -> EngineError {
        let url = self.url();
        let detail = server_message(body);
        let code = status.as_u16();
        if status.is_redirection() {
            let to = location.map_or_else(|| "no Location".to_string(), |to| format!("to {}", foreign(to)));
            return self.error(format!(
                "{url} answered HTTP {code}, a redirect {to}; nib does not follow redirects (they could take the \
                 request and its API key elsewhere): set nib.remote.url to the address that answers"
            ));
        }
        self.error(match code {
            401 | 403 if self.settings.api_key.is_none() => format!(
                "{url} requires an API key (HTTP {code}); put it in an environment variable and name that variable in \
                 nib.remote.apiKeyEnv"
            ),
            401 | 403 => {
                format!("{url} rejected the API key from ${} (HTTP {code}){detail}", self.settings.config.api_key_env)
            }
            404 => format!("{url} has no /completions endpoint or no model {:?} (HTTP 404){detail}", self.model),
            _ => format!("{url} answered HTTP {code}{detail}"),
        })
    }
}

impl super::Backend for RemoteBackend {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn generate(
        &mut self,
        request: &GenerationRequest,
        observer: &mut dyn FnMut(&str) -> Flow,
    ) -> Result<Generation, EngineError> {
        RemoteBackend::generate(self, request, observer)
    }
}

/// The error message in a server's error body (`{"error": {"message": ...}}` or `{"detail": ...}`),
/// or the start of the body, as `": message"`, cut to `MAX_FOREIGN_CHARS`.
fn server_message(body: &str) -> String {
    let parsed: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let message = [&parsed["error"]["message"], &parsed["error"], &parsed["detail"], &parsed["message"]]
        .into_iter()
        .find_map(|value| value.as_str().map(str::to_string))
        .unwrap_or_else(|| body.to_string());
    let message = foreign(&message);
    if message.is_empty() { String::new() } else { format!(": {message}") }
}

/// Text from the server made fit to show: control characters (terminal escapes, line breaks)
/// become spaces and it is cut to `MAX_FOREIGN_CHARS`, marked with an ellipsis.
fn foreign(text: &str) -> String {
    let text = text.trim();
    let mut shown: String =
        text.chars().take(MAX_FOREIGN_CHARS).map(|c| if c.is_control() { ' ' } else { c }).collect();
    if text.chars().nth(MAX_FOREIGN_CHARS).is_some() {
        shown.push('…');
    }
    shown
}

/// Whether a served model's name can be used as given (sent back, shown in the status).
fn is_plain_name(name: &str) -> bool {
    !name.is_empty() && name.chars().count() <= MAX_FOREIGN_CHARS && !name.chars().any(char::is_control)
}

/// A redirect's `Location` header.
/// The text a stream has delivered so far, and the limits that end it.
struct Received {
    text: String,
    pieces: usize,
    first_piece: Option<Instant>,
    max_bytes: usize,
}

impl Received {
    fn new(max_bytes: usize) -> Received {
        Received { text: String::new(), pieces: 0, first_piece: None, max_bytes }
    }

    /// Adds a piece of the answer; says why the generation ends here, if it does: the byte
    /// limit, a stop string (cut off), the observer, or the token limit.
    fn push(
        &mut self,
        piece: &str,
        request: &GenerationRequest,
        observer: &mut dyn FnMut(&str) -> Flow,
    ) -> Option<FinishReason> {
        if piece.is_empty() {
            return None;
        }
        self.first_piece.get_or_insert_with(Instant::now);
        self.pieces += 1;
        self.text.push_str(piece);
        if self.text.len() > self.max_bytes {
            self.text.truncate(self.text.floor_char_boundary(self.max_bytes));
            return Some(FinishReason::Length);
        }
        if let Some(cut) = request.stop_strings.iter().filter_map(|stop| self.text.find(stop.as_str())).min() {
            self.text.truncate(cut);
            return Some(FinishReason::StopString);
        }
        if observer(&self.text) == Flow::Stop {
            return Some(FinishReason::Observer);
        }
        (self.pieces >= request.max_tokens).then_some(FinishReason::Length)
    }
}

/// Why the server says it stopped, if it did (`finish_reason`).
fn server_finish(finish: Option<&str>) -> Option<FinishReason> {
    match finish {
        Some("length") => Some(FinishReason::Length),
        Some(_) => Some(FinishReason::StopToken),
        None => None,
    }
}

fn location(response: &reqwest::Response) -> Option<String> {
    let value = response.headers().get(reqwest::header::LOCATION)?;
    Some(String::from_utf8_lossy(value.as_bytes()).into_owned())
}

/// The body of `response`, reading at most `limit` bytes (a server can send any amount).
async fn read_capped(mut response: reqwest::Response, limit: usize) -> Result<String, reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        body.extend_from_slice(&chunk[..chunk.len().min(limit - body.len())]);
        if body.len() >= limit {
            break;
        }
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// An error with its causes ("error sending request: connection refused").
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let message = cause.to_string();
        if !text.contains(&message) {
            text.push_str(": ");
            text.push_str(&message);
        }
        source = cause.source();
    }
    text
}

/// Whether the URL's host is this machine: `localhost` or a loopback address, compared on the
/// parsed host (`http://localhost.evil.com` and `http://127.0.0.1@evil.com` are not).
fn is_loopback(url: &str) -> bool {
    let Some(host) = reqwest::Url::parse(url).ok().and_then(|url| url.host_str().map(str::to_ascii_lowercase)) else {
        return false;
    };
    host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Whether requests to `url` travel unencrypted over a network (plain http, not loopback).
fn plain_http_to_another_host(url: &str) -> bool {
    url.starts_with("http://") && !is_loopback(url)
}

/// What nib knows about a served model: prompts are plain text, so special tokens are
/// spelled out and the server's tokenizer reads them.
fn remote_info(config: &RemoteConfig, model: &str) -> ModelInfo {
    let fim_family = match &config.fim {
        Choice::Auto => detect_fim_family(model).map(str::to_string),
        Choice::Off => None,
        Choice::Named(name) => Some(name.clone()),
    };
    let chat_format = match &config.chat {
        Choice::Auto => detect_chat_format(model),
        Choice::Off => None,
        Choice::Named(_) => Some(ChatFormat::ChatMl),
    };
    ModelInfo {
        name: if model.is_empty() { config.url.clone() } else { model.to_string() },
        context_length: config.context_length,
        fim_declared_absent: fim_family.is_none(),
        fim_family,
        markers_are_text: true,
        chat_format,
        ..ModelInfo::default()
    }
}

/// The FIM family of a model, from the names model hubs and serving engines use
/// (`models/fim.json`).
pub fn detect_fim_family(model: &str) -> Option<&'static str> {
    super::fim::family_of_model_name(model)
}

fn detect_chat_format(model: &str) -> Option<ChatFormat> {
    let name = model.to_ascii_lowercase();
    let chatml_family = ["qwen", "smollm", "hermes", "openhermes", "yi-"].iter().any(|family| name.contains(family));
    let tuned = name.contains("instruct") || name.contains("chat");
    (chatml_family && tuned).then_some(ChatFormat::ChatMl)
}

/// One parsed server-sent event of a completions stream.
#[derive(Debug, PartialEq)]
enum Event {
    Piece { text: String, finish: Option<String> },
    Usage { prompt_tokens: usize },
    Done,
}

/// Splits a byte stream into server-sent events (`data:` lines ended by a blank line) and
/// parses their payloads. Chunks may end anywhere, even inside a UTF-8 character.
#[derive(Default)]
struct EventStream {
    pending: Vec<u8>,
    data: Vec<String>,
}

impl EventStream {
    fn push(&mut self, bytes: &[u8]) -> Vec<Result<Event, String>> {
        self.pending.extend_from_slice(bytes);
        let mut events = Vec::new();
        while let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                if !self.data.is_empty() {
                    let payload = self.data.join("\n");
                    self.data.clear();
                    events.extend(parse_payload(&payload));
                }
            } else if let Some(value) = line.strip_prefix("data:") {
                self.data.push(value.strip_prefix(' ').unwrap_or(value).to_string());
            }
            // Comments (": keep-alive"), `event:`, `id:` and `retry:` lines carry nothing nib needs.
        }
        // What is left is one unfinished line; with the event's data lines it stays bounded.
        let data_bytes: usize = self.data.iter().map(String::len).sum();
        if self.pending.len() > MAX_LINE_BYTES || data_bytes > MAX_LINE_BYTES {
            self.pending.clear();
            self.data.clear();
            events.push(Err(format!("a line or event longer than {} KiB", MAX_LINE_BYTES >> 10)));
        }
        events
    }
}

fn parse_payload(payload: &str) -> Vec<Result<Event, String>> {
    if payload.trim() == "[DONE]" {
        return vec![Ok(Event::Done)];
    }
    let value: Value = match serde_json::from_str(payload) {
        Ok(value) => value,
        Err(_) => {
            let start: String = payload.chars().take(120).collect();
            return vec![Err(format!("a malformed event: {start:?}"))];
        }
    };
    if !value["error"].is_null() {
        return vec![Err(format!("an error mid-stream{}", server_message(payload)))];
    }
    let mut events = Vec::new();
    if let Some(choice) = value["choices"].as_array().and_then(|choices| choices.first()) {
        let text = match &choice["text"] {
            Value::String(text) => text.clone(),
            Value::Null => String::new(),
            other => return vec![Err(format!("a malformed event: \"text\" is {other}"))],
        };
        events.push(Ok(Event::Piece { text, finish: choice["finish_reason"].as_str().map(str::to_string) }));
    } else if value["usage"].is_null() {
        return vec![Err("an event without choices".to_string())];
    }
    if let Some(prompt_tokens) = value["usage"]["prompt_tokens"].as_u64() {
        events.push(Ok(Event::Usage { prompt_tokens: prompt_tokens as usize }));
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    fn piece(text: &str) -> Result<Event, String> {
        Ok(Event::Piece { text: text.to_string(), finish: None })
    }

    #[test]
    fn events_are_parsed_across_arbitrary_chunk_boundaries() {
        let stream = concat!(
            ": keep-alive\r\n\r\n",
            "data: {\"choices\":[{\"text\":\"def \",\"finish_reason\":null}]}\r\n\r\n",
            "data: {\"choices\":[{\"text\":\"π()\",\"finish_reason\":null}]}\n\n",
            "event: completion\ndata: {\"choices\":[{\"text\":\"\",\"finish_reason\":\"stop\"}],",
            "\"usage\":{\"prompt_tokens\":12}}\n\n",
            "data: [DONE]\n\n"
        )
        .as_bytes();
        let expected = vec![
            piece("def "),
            piece("π()"),
            Ok(Event::Piece { text: String::new(), finish: Some("stop".into()) }),
            Ok(Event::Usage { prompt_tokens: 12 }),
            Ok(Event::Done),
        ];
        for split in 0..stream.len() {
            let mut events = EventStream::default();
            let mut got = events.push(&stream[..split]);
            got.extend(events.push(&stream[split..]));
            assert_eq!(got, expected, "split at byte {split}");
        }
        // One byte at a time, too (splits inside the two-byte π).
        let mut events = EventStream::default();
        let got: Vec<_> = stream.iter().flat_map(|byte| events.push(&[*byte])).collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn malformed_and_error_events_are_errors_with_the_reason() {
        let mut events = EventStream::default();
        let got = events.push(b"data: {not json\n\ndata: {\"error\":{\"message\":\"out of memory\"}}\n\ndata: {}\n\n");
        assert_eq!(got.len(), 3);
        assert!(got[0].as_ref().unwrap_err().starts_with("a malformed event"));
        assert_eq!(got[1].as_ref().unwrap_err(), "an error mid-stream: out of memory");
        assert_eq!(got[2].as_ref().unwrap_err(), "an event without choices");
    }

    #[test]
    fn fim_family_and_chat_format_are_detected_from_model_names() {
        let cases = [
            ("Qwen/Qwen2.5-Coder-7B", Some("qwen")),
            ("deepseek-ai/deepseek-coder-6.7b-base", Some("deepseek")),
            ("codellama:7b-code", Some("codellama")),
            ("bigcode/starcoder2-15b", Some("starcoder")),
            ("mistralai/Codestral-22B-v0.1", Some("codestral")),
            ("google/codegemma-2b", Some("qwen")),
            ("SmolLM2-135M-Instruct", None),
            ("llama3.1:8b", None),
        ];
        for (name, family) in cases {
            assert_eq!(detect_fim_family(name), family, "{name}");
        }
        assert_eq!(detect_chat_format("Qwen2.5-Coder-7B-Instruct"), Some(ChatFormat::ChatMl));
        assert_eq!(detect_chat_format("SmolLM2-135M-Instruct.Q4_1.gguf"), Some(ChatFormat::ChatMl));
        assert_eq!(detect_chat_format("Qwen2.5-Coder-7B"), None, "base models get plain prompts");
    }

    #[test]
    fn settings_choose_over_detection_and_the_key_is_never_printed() {
        let config = RemoteConfig {
            url: "http://127.0.0.1:9".into(),
            fim: Choice::Named("starcoder".into()),
            chat: Choice::Off,
            ..RemoteConfig::default()
        };
        let info = remote_info(&config, "Qwen2.5-Coder-7B-Instruct");
        assert_eq!((info.fim_family.as_deref(), info.chat_format), (Some("starcoder"), None));
        assert!(info.markers_are_text);
        let settings = RemoteSettings { config, api_key: Some(Secret("sk-very-secret".into())), request_timeout_ms: 1 };
        assert!(!format!("{settings:?}").contains("sk-very-secret"));
    }

    #[test]
    fn server_error_bodies_are_summarised() {
        assert_eq!(server_message(r#"{"error":{"message":"model not found"}}"#), ": model not found");
        assert_eq!(server_message(r#"{"detail":"Invalid API Key"}"#), ": Invalid API Key");
        assert_eq!(server_message("Bad Gateway"), ": Bad Gateway");
        assert_eq!(server_message(""), "");
        let long = format!("{{\"detail\":\"{}\\u001b[2J\"}}", "x".repeat(5000));
        let summary = server_message(&long);
        assert_eq!(summary.chars().count(), 2 + MAX_FOREIGN_CHARS + 1, "cut, with an ellipsis");
        assert!(!server_message("bad\u{1b}[2Jthing\nmore").contains(['\u{1b}', '\n']));
    }

    #[test]
    fn loopback_is_decided_on_the_parsed_host() {
        for url in [
            "http://127.0.0.1:8080/v1",
            "http://localhost/v1",
            "http://LOCALHOST:1",
            "http://[::1]:8000",
            "http://127.9.9.9",
        ] {
            assert!(is_loopback(url), "{url}");
        }
        for url in [
            "https://gpu-box.internal/v1",
            "http://localhost.evil.com/v1",
            "http://127.0.0.1.evil.com/v1",
            "http://localhost@evil.com/v1",
            "http://[::2]/",
            "not a url",
        ] {
            assert!(!is_loopback(url), "{url}");
        }
        assert!(plain_http_to_another_host("http://localhost.evil.com/v1"));
        assert!(
            !plain_http_to_another_host("https://gpu-box/v1") && !plain_http_to_another_host("http://127.0.0.1:9/v1")
        );
    }

    #[test]
    fn an_endless_line_or_event_is_an_error_and_the_buffers_stay_bounded() {
        let mut events = EventStream::default();
        let mut errors = 0;
        for _ in 0..40 {
            errors += events.push(&[b'x'; 64 << 10]).iter().filter(|e| e.is_err()).count();
            assert!(events.pending.len() <= MAX_LINE_BYTES);
        }
        assert_eq!(errors, 2, "one error per MiB without a line break");
        let mut events = EventStream::default();
        let line = format!("data: {}\n", "y".repeat(64 << 10));
        let errors: usize = (0..40).map(|_| events.push(line.as_bytes()).iter().filter(|e| e.is_err()).count()).sum();
        assert!(errors >= 1 && events.data.iter().map(String::len).sum::<usize>() <= MAX_LINE_BYTES);
    }
}
