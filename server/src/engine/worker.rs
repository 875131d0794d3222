//! The engine thread and its handle. Everything that generates goes through here: callers
//! submit jobs (one generation) and tasks (several in a row) and get results through callbacks.
//!
//! With the local backend the engine thread owns the model (ONNX session, tokenizer, KV cache)
//! and runs everything itself, one at a time. With the remote backend it only dispatches: each
//! job or task runs on its own thread, because the work is waiting on the network, and the
//! backend bounds how many requests are in flight. While the server is failing, and a local
//! fallback is loaded, new work is routed to the local model for a cool-down period.
//!
//! A panic inside inference is caught and answered as an error (the local KV cache is dropped);
//! the thread lives on. Inference failures (a panic, an ONNX Runtime error, the request timeout,
//! a failing server) are reported once as `EngineEvent::Problem` until a generation succeeds.
//!
//! Fault injection for the reliability tests: with `NIB_FAULT=panic-in-generate` in the
//! environment, a generation whose prompt contains `nib-fault:panic` panics inside the engine's
//! panic isolation. Without the variable the hook does nothing (docs/reliability.md).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use super::backend::Backend;
use super::remote::{Connection, RemoteBackend};
use super::scheduler::{Control, Inbox, Next, Priority, Refused, Work, Yielding};
use super::{
    EngineError, EngineEvent, EngineSettings, EngineStats, EngineStatus, Flow, Generation, GenerationRequest, Model,
    ModelInfo, ModelState, PromptPiece, load_model,
};
use crate::config::Config;

type Callback = Box<dyn FnOnce(Result<Generation, EngineError>) + Send>;
type Observer = Box<dyn FnMut(&str) -> Flow + Send>;

/// How long new work goes to the local fallback after the remote server failed.
const COOL_DOWN: Duration = Duration::from_secs(30);

/// Which backend a job's prompt was built for (see [`EngineHandle::serving`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// The configured backend.
    Primary,
    /// The local model standing in for a failing remote server.
    Fallback,
}

/// One generation to run. `on_done` runs with the result exactly once, also when no model is
/// loaded (`EngineError::NotReady`); it answers the request it came from.
pub struct Job {
    pub request: GenerationRequest,
    pub observer: Option<Observer>,
    pub on_done: Callback,
    /// The backend the prompt was built for.
    pub route: Route,
    /// Where it queues on the local model (remote jobs all start at once).
    pub priority: Priority,
}

/// Work that needs the model for several generations in a row (docstrings, tests). Runs with
/// a backend, or with the reason there is none; it builds its prompts from `backend.info()`.
pub type Task = Box<dyn FnOnce(Result<&mut dyn Backend, EngineError>) + Send>;

struct Shared {
    state: ModelState,
    stats: EngineStats,
    cached_tokens: usize,
    /// The local model's info when it stands by for a remote server.
    fallback: Option<Box<ModelInfo>>,
    /// Since when the remote server has been failing (cleared by its next success).
    failing_since: Option<Instant>,
    /// The last local inference problem reported, so one repeated on every keystroke is shown once.
    reported: Option<String>,
}

type SharedState = Arc<Mutex<Shared>>;

fn lock(shared: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

pub struct EngineHandle {
    inbox: Arc<Inbox>,
    shared: SharedState,
    thread: Option<JoinHandle<()>>,
    /// Tokens of every job not yet finished, so shutdown can cancel them.
    in_flight: Mutex<Vec<super::CancelToken>>,
    /// Background work (KV cache pre-warms) not yet finished, with its prompt. Any other job
    /// or task, and a newer pre-warm, cancels it, so a pre-warm never holds up a real request
    /// by more than the prefill chunk in flight. That chunk is stopped too, unless the new
    /// job's prompt extends the pre-warm's: then its work is what the job needs next, and it
    /// is kept (`CancelToken::cancel_after_step`).
    background: Mutex<Vec<(super::CancelToken, Vec<PromptPiece>)>>,
}

impl EngineHandle {
    /// Starts the engine thread, idle until the first `configure`.
    pub fn start() -> (Self, Receiver<EngineEvent>) {
        let inbox = Arc::new(Inbox::default());
        let (events, event_receiver) = crossbeam_channel::unbounded();
        let shared = Arc::new(Mutex::new(Shared {
            state: ModelState::Unloaded,
            stats: EngineStats::default(),
            cached_tokens: 0,
            fallback: None,
            failing_since: None,
            reported: None,
        }));
        let (thread_inbox, thread_shared) = (Arc::clone(&inbox), Arc::clone(&shared));
        let thread = std::thread::Builder::new()
            .name("nib-engine".into())
            .spawn(move || engine_thread(&thread_inbox, &events, &thread_shared))
            .expect("spawn engine thread");
        let handle = EngineHandle {
            inbox,
            shared,
            thread: Some(thread),
            in_flight: Mutex::new(Vec::new()),
            background: Mutex::new(Vec::new()),
        };
        (handle, event_receiver)
    }

    /// Loads (or reloads) the model, or connects to the server, when the settings that matter
    /// changed.
    pub fn configure(&self, config: &Config) {
        answer_refused(self.inbox.push_control(Control::Configure(Box::new(EngineSettings::from_config(config)))));
    }

    /// Queues one generation; never waits. Work the bounded queue cannot take is answered at
    /// once (`EngineError::Busy`), as are the cancelled jobs it drops (see `scheduler`). A new
    /// pre-warm replaces the previous one (the KV cache holds one prompt); any other job
    /// cancels background work.
    pub fn submit(&self, job: Job) {
        self.cancel_background(Some(&job.request.prompt));
        if job.priority == Priority::Background {
            let entry = (job.request.cancel.clone(), job.request.prompt.clone());
            self.background.lock().unwrap_or_else(|e| e.into_inner()).push(entry);
        }
        {
            let mut in_flight = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
            in_flight.retain(|token| !token.is_finished());
            in_flight.push(job.request.cancel.clone());
        }
        answer_refused(self.inbox.push(Work::Job(Box::new(job))));
    }

    /// Runs `task` with the backend at [`Priority::ActionStep`]: after every job, and yielding
    /// to jobs that arrive meanwhile before each of its generations.
    pub fn run(&self, task: Task) {
        self.cancel_background(None);
        answer_refused(self.inbox.push(Work::Task(task)));
    }

    /// A handle that queues tasks from another thread (the test runs' thread queues the
    /// model's repair rounds between runs).
    pub fn task_queue(&self) -> TaskQueue {
        TaskQueue(Arc::clone(&self.inbox))
    }

    /// Cancels the pre-warms queued or running: real work comes first. One whose prompt
    /// `next` (the prompt of the work that replaces it) extends stops after the forward pass in
    /// flight, keeping it; the others stop at once.
    fn cancel_background(&self, next: Option<&[PromptPiece]>) {
        for (token, prompt) in self.background.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
            match next {
                Some(next) if super::extends(next, &prompt) => token.cancel_after_step(),
                _ => token.cancel(),
            }
        }
    }

    pub fn cancel_all(&self) {
        for token in self.in_flight.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
            token.cancel();
        }
    }

    pub fn status(&self) -> EngineStatus {
        let shared = lock(&self.shared);
        EngineStatus { state: shared.state.clone(), stats: shared.stats.clone(), cached_tokens: shared.cached_tokens }
    }

    /// The model new work should be prepared for, and its route: the configured backend, or
    /// the local fallback while a remote server is failing. `None` while nothing is ready.
    pub fn serving(&self) -> Option<(Route, Box<ModelInfo>)> {
        let shared = lock(&self.shared);
        let ModelState::Ready { info, .. } = &shared.state else { return None };
        match (&shared.fallback, shared.failing_since) {
            (Some(local), Some(since)) if since.elapsed() < COOL_DOWN => Some((Route::Fallback, local.clone())),
            _ => Some((Route::Primary, info.clone())),
        }
    }

    pub fn stop(&mut self) {
        self.cancel_all();
        answer_refused(self.inbox.push_control(Control::Stop));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }

    /// `stop`, but waits for the engine thread only until `deadline` (at `exit`).
    pub fn stop_by(&mut self, deadline: Instant) {
        self.cancel_all();
        answer_refused(self.inbox.push_control(Control::Stop));
        if let Some(thread) = self.thread.take() {
            crate::pool::join_by(thread, deadline);
        }
    }
}

/// Queues tasks on the engine thread from anywhere (see [`EngineHandle::task_queue`]).
#[derive(Clone)]
pub struct TaskQueue(Arc<Inbox>);

impl TaskQueue {
    /// Like [`EngineHandle::run`].
    pub fn run(&self, task: Task) {
        answer_refused(self.0.push(Work::Task(task)));
    }
}

/// Answers the work the queue did not keep, on the calling thread (its callbacks only post).
fn answer_refused(refused: Vec<Refused>) {
    for Refused { work, why } in refused {
        match work {
            Work::Job(job) => answer(*job, Err(why)),
            Work::Task(task) => {
                run_task(task, Err(why));
            }
        }
    }
}

#[cfg(test)]
impl TaskQueue {
    /// A queue whose tasks run in order on a thread of their own with `backend`: a scripted
    /// model for tests of code that waits for model rounds.
    pub fn serving(mut backend: Box<dyn Backend + Send>) -> TaskQueue {
        let inbox = Arc::new(Inbox::default());
        let thread_inbox = Arc::clone(&inbox);
        std::thread::spawn(move || {
            // Ends once every clone of the queue is gone.
            while Arc::strong_count(&thread_inbox) > 1 {
                if let Some(Next::Work(Work::Task(task))) = thread_inbox.next_within(Duration::from_millis(50)) {
                    task(Ok(backend.as_mut()));
                }
            }
        });
        TaskQueue(inbox)
    }
}

impl Drop for EngineHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What generations run on.
enum Lane {
    /// Nothing loaded; work is answered with the reason.
    None,
    /// The in-process model, used on the engine thread.
    Local(Box<Model>),
    /// A completions server; each job and task runs on a thread of its own.
    Remote(Arc<RemoteLane>),
}

struct RemoteLane {
    backend: RemoteBackend,
    /// The local model, when `nib.remote.fallbackToLocal` is set.
    fallback: Option<Mutex<Model>>,
    shared: SharedState,
    events: Sender<EngineEvent>,
}

/// The remote backend as seen by one job or task: records the server's health.
struct RemoteSession<'a>(&'a RemoteLane);

impl Backend for RemoteSession<'_> {
    fn info(&self) -> &ModelInfo {
        self.0.backend.info()
    }

    fn generate(
        &mut self,
        request: &GenerationRequest,
        observer: &mut dyn FnMut(&str) -> Flow,
    ) -> Result<Generation, EngineError> {
        let lane = self.0;
        let result = lane.backend.generate(request, observer);
        let mut shared = lock(&lane.shared);
        shared.stats = lane.backend.stats();
        match &result {
            Err(EngineError::Remote(message)) => {
                if shared.failing_since.is_none() {
                    let next = if lane.fallback.is_some() {
                        format!("; the local model answers for the next {} s", COOL_DOWN.as_secs())
                    } else {
                        String::new()
                    };
                    let _ = lane.events.send(EngineEvent::Problem(format!("{message}{next}")));
                }
                shared.failing_since = Some(Instant::now());
            }
            Ok(_) if shared.failing_since.take().is_some() => {
                tracing::info!("{} answers again", lane.backend.url());
            }
            _ => {}
        }
        result
    }
}

impl RemoteLane {
    /// Runs `work` with the backend `route` names, on the calling thread.
    fn with_backend<T>(&self, route: Route, work: impl FnOnce(&mut dyn Backend) -> T) -> T {
        match (route, &self.fallback) {
            (Route::Fallback, Some(local)) => {
                let mut model = local.lock().unwrap_or_else(|e| e.into_inner());
                work(&mut *model)
            }
            _ => work(&mut RemoteSession(self)),
        }
    }

    /// The route for work that builds its own prompts (tasks).
    fn current_route(&self) -> Route {
        let shared = lock(&self.shared);
        match shared.failing_since {
            Some(since) if self.fallback.is_some() && since.elapsed() < COOL_DOWN => Route::Fallback,
            _ => Route::Primary,
        }
    }
}

/// Why there is no model to run on, for the requests that needed one.
fn unavailable_reason(shared: &Mutex<Shared>) -> String {
    match &lock(shared).state {
        ModelState::Failed { message } => message.clone(),
        ModelState::Loading { .. } => "the model is still loading".to_string(),
        _ => "no model is loaded".to_string(),
    }
}

/// Reports a local inference problem (`Some`) once, until a success (`None`) resets it.
fn report(shared: &Mutex<Shared>, events: &Sender<EngineEvent>, problem: Option<String>) {
    let mut shared = lock(shared);
    if problem.is_some() && problem != shared.reported {
        let _ = events.send(EngineEvent::Problem(problem.clone().unwrap_or_default()));
    }
    shared.reported = problem;
}

/// The text of a panic's payload, for the log.
pub(crate) fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

/// `NIB_FAULT=panic-in-generate`: panic in generations whose prompt asks for it.
fn injected_panic(request: &GenerationRequest) {
    static ENABLED: OnceLock<bool> = OnceLock::new();
    let enabled = *ENABLED.get_or_init(|| std::env::var("NIB_FAULT").is_ok_and(|fault| fault == "panic-in-generate"));
    let asks = |piece: &super::PromptPiece| matches!(piece, super::PromptPiece::Text(text) if text.contains("nib-fault:panic"));
    if enabled && request.prompt.iter().any(asks) {
        panic!("fault injected by NIB_FAULT=panic-in-generate");
    }
}

/// Runs a job's generation, isolating a panic. Returns the result and whether it panicked.
fn generate(backend: &mut dyn Backend, job: &mut Job) -> (Result<Generation, EngineError>, bool) {
    if job.request.cancel.is_cancelled() {
        return (Err(EngineError::Cancelled), false);
    }
    let observer = &mut job.observer;
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        injected_panic(&job.request);
        let mut keep_going = |text: &str| observer.as_mut().map_or(Flow::Continue, |o| o(text));
        backend.generate(&job.request, &mut keep_going)
    }));
    match outcome {
        Ok(result) => (result, false),
        Err(payload) => {
            tracing::error!("generation panicked: {}", panic_text(payload.as_ref()));
            (Err(EngineError::Inference("internal error during generation (a bug; see the log)".into())), true)
        }
    }
}

/// Answers a job; a panicking callback is logged, not fatal.
fn answer(job: Job, result: Result<Generation, EngineError>) {
    job.request.cancel.finish();
    if catch_unwind(AssertUnwindSafe(|| (job.on_done)(result))).is_err() {
        tracing::error!("a completion callback panicked; its request was answered with an error");
    }
}

fn run_task(task: Task, backend: Result<&mut dyn Backend, EngineError>) -> bool {
    match catch_unwind(AssertUnwindSafe(|| task(backend))) {
        Ok(()) => false,
        Err(payload) => {
            tracing::error!("an engine task panicked: {}", panic_text(payload.as_ref()));
            true
        }
    }
}

const TASK_PANIC: &str = "internal error during a code action; the request was answered with an error";

fn engine_thread(inbox: &Inbox, events: &Sender<EngineEvent>, shared: &SharedState) {
    let mut lane = Lane::None;
    let mut settings: Option<EngineSettings> = None;
    loop {
        match inbox.next() {
            Next::Control(Control::Stop) => return,
            Next::Control(Control::Configure(new_settings)) => {
                if settings.as_ref() == Some(&*new_settings) && !matches!(lane, Lane::None) {
                    continue;
                }
                drop(std::mem::replace(&mut lane, Lane::None)); // Free the old model before loading another.
                lane = configure(&new_settings, events, shared);
                settings = Some(*new_settings);
            }
            Next::Work(Work::Task(task)) => run_task_on(&mut lane, task, inbox, events, shared),
            Next::Work(Work::Job(job)) => run_job_on(&mut lane, *job, events, shared),
        }
    }
}

/// Runs a code action's task: on the local model yielding to waiting jobs before each
/// generation, on a thread of its own with the remote backend.
fn run_task_on(lane: &mut Lane, task: Task, queue: &Inbox, events: &Sender<EngineEvent>, shared: &SharedState) {
    match lane {
        Lane::Local(model) => {
            let mut run_job = |model: &mut Model, job: Job| local_job(model, job, events, shared);
            let mut yielding = Yielding { model, queue, run_job: &mut run_job };
            if run_task(task, Ok(&mut yielding)) {
                report(shared, events, Some(TASK_PANIC.into()));
                model.reset_cache();
            }
            record_local(shared, model);
        }
        Lane::Remote(remote) => {
            let remote = Arc::clone(remote);
            spawn_worker(move || {
                let route = remote.current_route();
                if remote.with_backend(route, |backend| run_task(task, Ok(backend))) {
                    report(&remote.shared, &remote.events, Some(TASK_PANIC.into()));
                }
            });
        }
        Lane::None => {
            run_task(task, Err(EngineError::NotReady(unavailable_reason(shared))));
        }
    }
}

fn run_job_on(lane: &mut Lane, mut job: Job, events: &Sender<EngineEvent>, shared: &SharedState) {
    match lane {
        Lane::Local(model) => local_job(model, job, events, shared),
        Lane::Remote(remote) => {
            let remote = Arc::clone(remote);
            spawn_worker(move || {
                let (result, _) = remote.with_backend(job.route, |backend| generate(backend, &mut job));
                answer(job, result);
            });
        }
        Lane::None => {
            let why = unavailable_reason(shared);
            answer(job, Err(EngineError::NotReady(why)));
        }
    }
}

/// Runs one job on the local model and answers it.
fn local_job(model: &mut Model, mut job: Job, events: &Sender<EngineEvent>, shared: &SharedState) {
    let (result, panicked) = generate(model, &mut job);
    if panicked {
        model.reset_cache();
    }
    // A pre-warm is invisible to the user: its failure is logged, and the request it prepared
    // reports the problem if it has it too.
    match &result {
        _ if job.priority == Priority::Background => {
            if let Err(error) = &result {
                tracing::debug!("pre-warm failed: {error}");
            }
        }
        Ok(_) => report(shared, events, None),
        Err(error @ (EngineError::Inference(_) | EngineError::TimedOut)) => {
            report(shared, events, Some(error.to_string()));
        }
        Err(_) => {}
    }
    record_local(shared, model);
    answer(job, result);
}

fn spawn_worker(work: impl FnOnce() + Send + 'static) {
    if let Err(error) = std::thread::Builder::new().name("nib-remote".into()).spawn(work) {
        // Without a thread the work (and the request it answers) would be lost silently.
        tracing::error!("cannot start a thread for a remote request: {error}");
    }
}

fn record_local(shared: &Mutex<Shared>, model: &Model) {
    let mut shared = lock(shared);
    shared.stats = model.stats.clone();
    shared.cached_tokens = model.cached_tokens();
}

/// Loads the local model and/or connects to the remote server, reporting each state change.
fn configure(settings: &EngineSettings, events: &Sender<EngineEvent>, shared: &SharedState) -> Lane {
    let set_state = |state: ModelState| {
        lock(shared).state = state.clone();
        let _ = events.send(EngineEvent::State(state));
    };
    {
        let mut shared = lock(shared);
        shared.fallback = None;
        shared.failing_since = None;
        shared.reported = None;
        shared.stats = EngineStats::default();
        shared.cached_tokens = 0;
    }
    let started = Instant::now();
    let load_local = |settings: &EngineSettings| -> Result<Model, String> {
        let target = super::model::resolve_dir(settings.model_dir.as_deref())
            .unwrap_or_else(|_| settings.model_dir.clone().unwrap_or_default());
        set_state(ModelState::Loading { model: target.display().to_string() });
        match catch_unwind(|| load_model(settings)) {
            Ok(Ok(model)) => Ok(model),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err("loading the model crashed".into()),
        }
    };
    let Some(remote) = &settings.remote else {
        return match load_local(settings) {
            Ok(model) => {
                set_state(ModelState::Ready {
                    model: model.info.dir.display().to_string(),
                    info: Box::new(model.info.clone()),
                    load_ms: started.elapsed().as_millis() as u64,
                });
                Lane::Local(Box::new(model))
            }
            Err(message) => {
                set_state(ModelState::Failed { message });
                Lane::None
            }
        };
    };

    let fallback = if remote.config.fallback_to_local {
        match load_local(settings) {
            Ok(model) => Some(model),
            Err(message) => {
                let _ = events.send(EngineEvent::Problem(format!(
                    "the local fallback model (nib.remote.fallbackToLocal) is unavailable: {message}"
                )));
                None
            }
        }
    } else {
        None
    };
    set_state(ModelState::Loading { model: remote.config.url.clone() });
    match RemoteBackend::connect(remote.clone()) {
        Ok(Connection { backend, warning, reachable }) => {
            if let Some(warning) = warning {
                let meanwhile = match (reachable, &fallback) {
                    (true, _) => "",
                    (false, Some(_)) => "; the local model answers until it is back",
                    (false, None) => "; nib will keep trying with each request",
                };
                let _ = events.send(EngineEvent::Problem(format!("{warning}{meanwhile}")));
            }
            let mut state = lock(shared);
            state.fallback = fallback.as_ref().map(|model| Box::new(model.info.clone()));
            state.failing_since = (!reachable).then(Instant::now);
            drop(state);
            set_state(ModelState::Ready {
                model: backend.url().to_string(),
                info: Box::new(backend.info().clone()),
                load_ms: started.elapsed().as_millis() as u64,
            });
            Lane::Remote(Arc::new(RemoteLane {
                backend,
                fallback: fallback.map(Mutex::new),
                shared: Arc::clone(shared),
                events: events.clone(),
            }))
        }
        Err(error) => {
            set_state(ModelState::Failed { message: error.to_string() });
            Lane::None
        }
    }
}
