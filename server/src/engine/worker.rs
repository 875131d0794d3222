//! The engine thread and its handle. The thread owns the model (ONNX session, tokenizer, KV
//! cache); everything else talks to it through a channel. A panic inside inference is caught,
//! answered as an error and the cache dropped; the thread lives on. Inference failures (a panic,
//! an ONNX Runtime error, the request timeout) are reported once as `EngineEvent::Problem` until
//! a generation succeeds again.
//!
//! Fault injection for the reliability tests: with `NIB_FAULT=panic-in-generate` in the
//! environment, a generation whose prompt contains `nib-fault:panic` panics inside the engine's
//! panic isolation. Without the variable the hook does nothing (docs/reliability.md).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};

use super::{
    EngineError, EngineEvent, EngineSettings, EngineStats, EngineStatus, Flow, Generation, GenerationRequest, Model,
    ModelState, load_model,
};
use crate::config::Config;

type Callback = Box<dyn FnOnce(Result<Generation, EngineError>) + Send>;
type Observer = Box<dyn FnMut(&str) -> Flow + Send>;

/// One generation to run. `on_done` runs on the engine thread with the result, exactly once,
/// also when no model is loaded (`EngineError::NotReady`); it answers the request it came from.
pub struct Job {
    pub request: GenerationRequest,
    pub observer: Option<Observer>,
    pub on_done: Callback,
}

/// Work that needs the model for several generations in a row (docstrings, tests). Runs on
/// the engine thread with the model, or with the reason there is none.
pub type Task = Box<dyn FnOnce(Result<&mut Model, EngineError>) + Send>;

enum Command {
    Configure(EngineSettings),
    Generate(Box<Job>),
    Run(Task),
    Stop,
}

struct Shared {
    state: ModelState,
    stats: EngineStats,
    cached_tokens: usize,
}

pub struct EngineHandle {
    commands: Sender<Command>,
    shared: Arc<Mutex<Shared>>,
    thread: Option<JoinHandle<()>>,
    /// Tokens of every job not yet finished, so shutdown can cancel them.
    in_flight: Mutex<Vec<super::CancelToken>>,
}

impl EngineHandle {
    /// Starts the engine thread, idle until the first `configure`.
    pub fn start() -> (Self, Receiver<EngineEvent>) {
        let (commands, command_receiver) = crossbeam_channel::unbounded();
        let (events, event_receiver) = crossbeam_channel::unbounded();
        let shared = Arc::new(Mutex::new(Shared {
            state: ModelState::Unloaded,
            stats: EngineStats::default(),
            cached_tokens: 0,
        }));
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("nib-engine".into())
            .spawn(move || engine_thread(&command_receiver, &events, &thread_shared))
            .expect("spawn engine thread");
        let handle = EngineHandle { commands, shared, thread: Some(thread), in_flight: Mutex::new(Vec::new()) };
        (handle, event_receiver)
    }

    /// Loads (or reloads) the model when the settings that matter changed.
    pub fn configure(&self, config: &Config) {
        let _ = self.commands.send(Command::Configure(EngineSettings::from_config(config)));
    }

    pub fn submit(&self, job: Job) {
        {
            let mut in_flight = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
            in_flight.retain(|token| !token.is_finished());
            in_flight.push(job.request.cancel.clone());
        }
        if let Err(error) = self.commands.send(Command::Generate(Box::new(job))) {
            // The thread is gone: answer now rather than never.
            if let Command::Generate(job) = error.into_inner() {
                (job.on_done)(Err(EngineError::NotReady("the engine thread has stopped".into())));
            }
        }
    }

    /// Runs `task` on the engine thread, after the jobs already queued.
    pub fn run(&self, task: Task) {
        if let Err(error) = self.commands.send(Command::Run(task))
            && let Command::Run(task) = error.into_inner()
        {
            task(Err(EngineError::NotReady("the engine thread has stopped".into())));
        }
    }

    pub fn cancel_all(&self) {
        for token in self.in_flight.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
            token.cancel();
        }
    }

    pub fn status(&self) -> EngineStatus {
        let shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        EngineStatus { state: shared.state.clone(), stats: shared.stats.clone(), cached_tokens: shared.cached_tokens }
    }

    pub fn stop(&mut self) {
        self.cancel_all();
        let _ = self.commands.send(Command::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for EngineHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Why there is no model to run on, for the requests that needed one.
fn unavailable_reason(shared: &Mutex<Shared>) -> String {
    match &shared.lock().unwrap_or_else(|e| e.into_inner()).state {
        ModelState::Failed { message } => message.clone(),
        ModelState::Loading { .. } => "the model is still loading".to_string(),
        _ => "no model is loaded".to_string(),
    }
}

/// The text of a panic's payload, for the log.
fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

/// `NIB_FAULT=panic-in-generate`: panic in generations whose prompt asks for it.
fn injected_panic(enabled: bool, request: &GenerationRequest) {
    use super::PromptPiece;
    let asks = |piece: &PromptPiece| matches!(piece, PromptPiece::Text(text) if text.contains("nib-fault:panic"));
    if enabled && request.prompt.iter().any(asks) {
        panic!("fault injected by NIB_FAULT=panic-in-generate");
    }
}

fn engine_thread(commands: &Receiver<Command>, events: &Sender<EngineEvent>, shared: &Mutex<Shared>) {
    let panic_fault = std::env::var("NIB_FAULT").is_ok_and(|fault| fault == "panic-in-generate");
    // The last inference problem reported, so a failure repeated on every keystroke is shown once.
    let mut reported: Option<String> = None;
    let mut report = |problem: Option<String>| {
        if problem.is_some() && problem != reported {
            let _ = events.send(EngineEvent::Problem(problem.clone().unwrap_or_default()));
        }
        reported = problem;
    };
    let mut model: Option<Model> = None;
    let mut settings: Option<EngineSettings> = None;
    let set_state = |state: ModelState| {
        shared.lock().unwrap_or_else(|e| e.into_inner()).state = state.clone();
        let _ = events.send(EngineEvent::State(state));
    };
    for command in commands {
        match command {
            Command::Stop => return,
            Command::Configure(new_settings) => {
                if settings.as_ref() == Some(&new_settings) && model.is_some() {
                    continue;
                }
                model = None;
                let target = super::model::resolve_dir(new_settings.model_dir.as_deref())
                    .unwrap_or_else(|_| new_settings.model_dir.clone().unwrap_or_default());
                set_state(ModelState::Loading { model: target });
                let started = Instant::now();
                match catch_unwind(|| load_model(&new_settings)) {
                    Ok(Ok(loaded)) => {
                        set_state(ModelState::Ready {
                            model: loaded.info.dir.clone(),
                            info: Box::new(loaded.info.clone()),
                            load_ms: started.elapsed().as_millis() as u64,
                        });
                        model = Some(loaded);
                    }
                    Ok(Err(error)) => set_state(ModelState::Failed { message: error.to_string() }),
                    Err(_) => set_state(ModelState::Failed { message: "loading the model crashed".into() }),
                }
                settings = Some(new_settings);
            }
            Command::Run(task) => {
                let outcome = match model.as_mut() {
                    Some(loaded) => catch_unwind(AssertUnwindSafe(|| task(Ok(loaded)))),
                    None => {
                        let why = unavailable_reason(shared);
                        catch_unwind(AssertUnwindSafe(|| task(Err(EngineError::NotReady(why)))))
                    }
                };
                if let Err(payload) = outcome {
                    tracing::error!("an engine task panicked: {}", panic_text(payload.as_ref()));
                    report(Some("internal error during a code action; the request was answered with an error".into()));
                    if let Some(loaded) = model.as_mut() {
                        loaded.reset_cache();
                    }
                }
                if let Some(loaded) = model.as_ref() {
                    let mut shared = shared.lock().unwrap_or_else(|e| e.into_inner());
                    shared.stats = loaded.stats.clone();
                    shared.cached_tokens = loaded.cached_tokens();
                }
            }
            Command::Generate(job) => {
                let Job { request, observer, on_done } = *job;
                let Some(loaded) = model.as_mut() else {
                    let why = unavailable_reason(shared);
                    request.cancel.finish();
                    on_done(Err(EngineError::NotReady(why)));
                    continue;
                };
                let result = if request.cancel.is_cancelled() {
                    Err(EngineError::Cancelled)
                } else {
                    let mut observer = observer;
                    let outcome = catch_unwind(AssertUnwindSafe(|| {
                        injected_panic(panic_fault, &request);
                        let mut keep_going = |text: &str| observer.as_mut().map_or(Flow::Continue, |o| o(text));
                        loaded.generate(&request, &mut keep_going)
                    }));
                    outcome.unwrap_or_else(|payload| {
                        tracing::error!("generation panicked: {}", panic_text(payload.as_ref()));
                        loaded.reset_cache();
                        Err(EngineError::Inference("internal error during generation (a bug; see the log)".into()))
                    })
                };
                match &result {
                    Ok(_) => report(None),
                    Err(error @ (EngineError::Inference(_) | EngineError::TimedOut)) => report(Some(error.to_string())),
                    Err(_) => {}
                }
                {
                    let mut shared = shared.lock().unwrap_or_else(|e| e.into_inner());
                    shared.stats = loaded.stats.clone();
                    shared.cached_tokens = loaded.cached_tokens();
                }
                request.cancel.finish();
                if catch_unwind(AssertUnwindSafe(|| on_done(result))).is_err() {
                    tracing::error!("a completion callback panicked; its request was answered with an error");
                }
            }
        }
    }
}
