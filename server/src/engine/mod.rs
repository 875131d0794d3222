//! The inference engine: a decoder language model run in-process through ONNX Runtime, owned by
//! one dedicated thread. Callers submit jobs (a prompt, limits, a cancellation token and a
//! completion callback) and get results on that thread; the LSP threads never block on it.

pub mod allocator;
pub mod attention;
pub mod backend;
mod batch;
mod budget;
pub mod fim;
pub mod generate;
mod healing;
pub mod kernels;
mod known_rows;
pub mod linear;
mod lookup;
pub mod model;
mod onnx_proto;
mod piece_ids;
pub mod remote;
pub mod runtime;
mod scheduler;
pub mod session;
#[cfg(test)]
mod tests;
mod worker;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use ort::session::RunOptions;

pub use backend::Backend;
pub use generate::{
    FinishReason, Flow, Generation, GenerationRequest, GenerationStats, Model, PromptPiece, Sampling, extends,
};
pub use model::{ChatFormat, ModelInfo};
pub use remote::RemoteSettings;
pub use scheduler::Priority;
pub use session::KvLayout;
pub(crate) use worker::panic_text;
pub use worker::{EngineHandle, Job, Route, Task, TaskQueue};

#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum EngineError {
    #[error("{0}")]
    Runtime(String),
    #[error("{0}")]
    Model(String),
    #[error("the model is not ready: {0}")]
    NotReady(String),
    #[error("inference failed: {0}")]
    Inference(String),
    #[error("cancelled")]
    Cancelled,
    #[error("inference took longer than the request timeout (nib.requestTimeoutMs)")]
    TimedOut,
    /// The remote completions server failed (unreachable, refused, HTTP error, broken stream).
    #[error("{0}")]
    Remote(String),
    /// The prompt does not fit the model's context (the context budget is an estimate).
    #[error("the prompt has {tokens} tokens, more than the model's context of {context}")]
    PromptTooLong { tokens: usize, context: usize },
    /// The engine's queue is full (`scheduler::MAX_WAITING`); the request was not queued.
    #[error("nib is busy: {waiting} requests are already waiting for the model; try again when they are done")]
    Busy { waiting: usize },
}

/// Cancels one generation from any thread: between decode steps, and in the middle of a long
/// prefill through ONNX Runtime's run termination.
#[derive(Clone, Default)]
pub struct CancelToken {
    inner: Arc<CancelInner>,
}

#[derive(Default)]
struct CancelInner {
    cancelled: AtomicBool,
    finished: AtomicBool,
    running: Mutex<Option<Arc<RunOptions>>>,
}

impl std::fmt::Debug for CancelToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CancelToken").field("cancelled", &self.is_cancelled()).finish()
    }
}

impl CancelToken {
    /// Whether `other` is a clone of this token (the same generation's).
    pub fn is(&self, other: &CancelToken) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    pub fn cancel(&self) {
        self.inner.cancelled.store(true, Ordering::SeqCst);
        if let Some(run) = self.inner.running.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            let _ = run.terminate();
        }
    }

    /// Cancels without stopping the forward pass in flight: the generation ends once that
    /// pass (at most one prefill chunk) has run, and its work stays in the KV cache. For a
    /// pre-warm whose prompt the next job extends.
    pub fn cancel_after_step(&self) {
        self.inner.cancelled.store(true, Ordering::SeqCst);
    }

    pub fn is_cancelled(&self) -> bool {
        self.inner.cancelled.load(Ordering::SeqCst)
    }

    /// Marks the work as done, so registries of in-flight work can forget it.
    pub fn finish(&self) {
        self.inner.finished.store(true, Ordering::SeqCst);
    }

    pub fn is_finished(&self) -> bool {
        self.inner.finished.load(Ordering::SeqCst)
    }

    fn attach_run(&self, run: &Arc<RunOptions>) {
        *self.inner.running.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::clone(run));
        // A cancel that raced ahead of the attach still stops this run.
        if self.is_cancelled() {
            let _ = run.terminate();
        }
    }

    fn detach_run(&self) {
        *self.inner.running.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

/// Where the engine's model is in its life.
#[derive(Clone, Debug)]
pub enum ModelState {
    Unloaded,
    /// `model` is a model directory or a server URL.
    Loading {
        model: String,
    },
    Ready {
        model: String,
        info: Box<ModelInfo>,
        load_ms: u64,
    },
    Failed {
        message: String,
    },
}

/// What the engine tells the main loop, which owns everything it knows of the engine
/// (`EngineHandle::observe`).
pub enum EngineEvent {
    State(ModelState),
    /// A generation failed (inference error, panic, request timeout, a failing remote server):
    /// shown to the user once until a generation succeeds again.
    Problem(String),
    /// The statistics after a generation, and how many tokens the KV cache holds.
    Stats {
        stats: EngineStats,
        cached_tokens: usize,
    },
    /// The local model standing by for the remote server (`nib.remote.fallbackToLocal`).
    Fallback(Option<Box<ModelInfo>>),
    /// Since when the remote server has been failing (`None`: it answers); new work goes to the
    /// local fallback for a while after a failure.
    RemoteFailing(Option<Instant>),
}

/// Counters since the model was loaded.
#[derive(Clone, Debug, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EngineStats {
    pub generations: u64,
    pub cache_hits: u64,
    pub cache_misses: u64,
    pub reused_tokens: u64,
    pub prefilled_tokens: u64,
    pub generated_tokens: u64,
    /// Decoding time and forward passes (fewer than tokens when drafts were accepted, or when
    /// generations decoded side by side).
    pub decode_ms: f64,
    pub decode_runs: u64,
    /// Tokens whose logits the cache already held, so no run was needed (`GenerationStats`).
    pub known_rows: u64,
    pub draft_tokens: u64,
    pub accepted_draft_tokens: u64,
    /// Tokens of generations decoded side by side with others (`Model::generate_batch`).
    pub side_by_side_tokens: u64,
    pub last: Option<GenerationStats>,
}

impl EngineStats {
    fn record(&mut self, stats: &GenerationStats) {
        self.generations += 1;
        if stats.reused_tokens > 0 {
            self.cache_hits += 1;
        } else {
            self.cache_misses += 1;
        }
        self.reused_tokens += stats.reused_tokens as u64;
        self.prefilled_tokens += stats.prefilled_tokens as u64;
        self.generated_tokens += stats.generated_tokens as u64;
        self.decode_ms += stats.decode_ms;
        self.decode_runs += stats.decode_runs as u64;
        self.known_rows += stats.known_rows as u64;
        self.draft_tokens += stats.draft_tokens as u64;
        self.accepted_draft_tokens += stats.accepted_draft_tokens as u64;
        if stats.decoded_beside > 0 {
            self.side_by_side_tokens += stats.generated_tokens as u64;
        }
        self.last = Some(stats.clone());
    }
}

/// A snapshot of the engine for `nib/inspect` and handlers.
#[derive(Clone, Debug)]
pub struct EngineStatus {
    pub state: ModelState,
    pub stats: EngineStats,
    pub cached_tokens: usize,
}

/// Settings that decide which model is loaded and how.
#[derive(Clone, Debug, PartialEq)]
pub struct EngineSettings {
    pub model_dir: Option<PathBuf>,
    pub onnx_runtime_path: Option<PathBuf>,
    pub threads: usize,
    /// Set when generations run on a completions server (`nib.backend = "remote"`).
    pub remote: Option<RemoteSettings>,
}

impl EngineSettings {
    pub fn from_config(config: &crate::config::Config) -> Self {
        EngineSettings {
            model_dir: config.model_path.clone(),
            onnx_runtime_path: config.onnx_runtime_path.clone(),
            threads: config.threads.unwrap_or_else(physical_cores),
            remote: (config.backend == crate::config::BackendKind::Remote).then(|| RemoteSettings {
                request_timeout_ms: config.request_timeout_ms,
                ..RemoteSettings::from_config(&config.remote)
            }),
        }
    }
}

/// Physical cores (hyper-threads share the vector units that inference saturates).
pub fn physical_cores() -> usize {
    let logical = std::thread::available_parallelism().map_or(1, |n| n.get());
    let Ok(cpuinfo) = std::fs::read_to_string("/proc/cpuinfo") else {
        return logical;
    };
    let mut cores = std::collections::HashSet::new();
    let mut physical_id = "";
    for line in cpuinfo.lines() {
        if let Some((key, value)) = line.split_once(':') {
            match key.trim() {
                "physical id" => physical_id = value.trim(),
                "core id" => {
                    cores.insert((physical_id.to_string(), value.trim().to_string()));
                }
                _ => {}
            }
        }
    }
    if cores.is_empty() { logical } else { cores.len().min(logical) }
}

/// The backend `settings` name: the remote server (with any warning about it) or the local model.
pub fn load_backend(settings: &EngineSettings) -> Result<(Box<dyn Backend + Send>, Option<String>), EngineError> {
    match &settings.remote {
        Some(remote) => {
            let connection = remote::RemoteBackend::connect(remote.clone())?;
            Ok((Box::new(connection.backend), connection.warning))
        }
        None => Ok((Box::new(load_model(settings)?), None)),
    }
}

/// Loads the model named by `settings` (the default model when none is configured).
pub fn load_model(settings: &EngineSettings) -> Result<Model, EngineError> {
    let started = Instant::now();
    let dir = model::resolve_dir(settings.model_dir.as_deref())?;
    let files = model::load(&dir)?;
    let environment = runtime::environment(settings.onnx_runtime_path.as_deref())?;
    let session = session::DecoderSession::load(
        environment,
        &files.onnx,
        settings.threads.max(1),
        files.kv_layout,
        files.info.context_length,
    )?;
    let mut model = Model::new(files, session)?;
    model.calibrate()?;
    tracing::info!(
        model = %dir.display(),
        threads = settings.threads,
        "model loaded in {} ms; prefill {:.2} ms per token",
        started.elapsed().as_millis(),
        model.prefill_ms_per_token().unwrap_or_default()
    );
    Ok(model)
}
