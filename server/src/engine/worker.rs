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
//! The engine shares no state with the main loop: what the main loop knows of it (the model's
//! state, statistics, the remote server's health) arrives as [`EngineEvent`]s, which the main
//! loop records with [`EngineHandle::observe`]. They travel the way results do, so a job's
//! statistics reach the main loop before its answer.
//!
//! Fault injection for the reliability tests: with `NIB_FAULT=panic-in-generate` in the
//! environment, a generation whose prompt contains `nib-fault:panic` panics inside the engine's
//! panic isolation. Without the variable the hook does nothing (docs/reliability.md).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::backend::Backend;
use super::remote::{Connection, RemoteBackend};
use super::scheduler::{Control, Inbox, Next, Priority, Refused, Work, Yielding};
use super::{
    EngineError, EngineEvent, EngineSettings, EngineStats, EngineStatus, Flow, Generation, GenerationRequest, Model,
    ModelInfo, ModelState, PromptPiece, RemoteSettings, load_model,
};
use crate::config::Config;

type Callback = Box<dyn FnOnce(Result<Generation, EngineError>) + Send>;
type Observer = Box<dyn FnMut(&str) -> Flow + Send>;

/// Where the engine's events go; the server posts each to its main loop.
type EventSink = Arc<dyn Fn(EngineEvent) + Send + Sync>;

/// Why work finds no model before the first configuration.
const NO_MODEL: &str = "no model is loaded";

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

/// The engine as the main loop knows it: what the events it observed said. Only the main loop
/// reads or writes it.
struct Observed {
    state: ModelState,
    stats: EngineStats,
    cached_tokens: usize,
    /// The local model's info when it stands by for a remote server.
    fallback: Option<Box<ModelInfo>>,
    /// Since when the remote server has been failing (cleared by its next success).
    failing_since: Option<Instant>,
}

/// The main loop's side of the engine: it queues work and records the engine's events.
pub struct EngineHandle {
    inbox: Arc<Inbox>,
    observed: Observed,
    thread: Option<JoinHandle<()>>,
    /// Tokens of every job not yet finished, so shutdown can cancel them.
    in_flight: Vec<super::CancelToken>,
    /// Background work (KV cache pre-warms) not yet finished, with its prompt. Any other job
    /// or task, and a newer pre-warm, cancels it, so a pre-warm never holds up a real request
    /// by more than the prefill chunk in flight. That chunk is stopped too, unless the new
    /// job's prompt extends the pre-warm's: then its work is what the job needs next, and it
    /// is kept (`CancelToken::cancel_after_step`).
    background: Vec<(super::CancelToken, Vec<PromptPiece>)>,
}

impl EngineHandle {
    /// Starts the engine thread, idle until the first `configure`. `events` gets every
    /// [`EngineEvent`], from the engine thread and the remote request threads, in the order
    /// each thread sends them; the server posts them to its main loop, which hands each to
    /// [`EngineHandle::observe`].
    pub fn start(events: impl Fn(EngineEvent) + Send + Sync + 'static) -> Self {
        let inbox = Arc::new(Inbox::default());
        let events: EventSink = Arc::new(events);
        let thread_inbox = Arc::clone(&inbox);
        let thread = std::thread::Builder::new()
            .name("nib-engine".into())
            .spawn(move || engine_thread(&thread_inbox, &events))
            .expect("spawn engine thread");
        let observed = Observed {
            state: ModelState::Unloaded,
            stats: EngineStats::default(),
            cached_tokens: 0,
            fallback: None,
            failing_since: None,
        };
        EngineHandle { inbox, observed, thread: Some(thread), in_flight: Vec::new(), background: Vec::new() }
    }

    /// Records what `event` says about the engine (its state, statistics, the remote server's
    /// health), for [`EngineHandle::status`] and [`EngineHandle::serving`].
    pub fn observe(&mut self, event: &EngineEvent) {
        let observed = &mut self.observed;
        match event {
            EngineEvent::State(state) => observed.state = state.clone(),
            EngineEvent::Stats { stats, cached_tokens } => {
                observed.stats = stats.clone();
                observed.cached_tokens = *cached_tokens;
            }
            EngineEvent::Fallback(info) => observed.fallback = info.clone(),
            EngineEvent::RemoteFailing(since) => observed.failing_since = *since,
            EngineEvent::Problem(_) => {}
        }
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
    pub fn submit(&mut self, job: Job) {
        self.cancel_background(Some(&job.request.prompt));
        if job.priority == Priority::Background {
            self.background.push((job.request.cancel.clone(), job.request.prompt.clone()));
        }
        self.in_flight.retain(|token| !token.is_finished());
        self.in_flight.push(job.request.cancel.clone());
        answer_refused(self.inbox.push(Work::Job(Box::new(job))));
    }

    /// Runs `task` with the backend at [`Priority::ActionStep`]: after every job, and yielding
    /// to jobs that arrive meanwhile before each of its generations.
    pub fn run(&mut self, task: Task) {
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
    fn cancel_background(&mut self, next: Option<&[PromptPiece]>) {
        for (token, prompt) in self.background.drain(..) {
            match next {
                Some(next) if super::extends(next, &prompt) => token.cancel_after_step(),
                _ => token.cancel(),
            }
        }
    }

    pub fn cancel_all(&mut self) {
        for token in self.in_flight.drain(..) {
            token.cancel();
        }
    }

    /// The engine as of the last event the main loop observed.
    pub fn status(&self) -> EngineStatus {
        let observed = &self.observed;
        EngineStatus {
            state: observed.state.clone(),
            stats: observed.stats.clone(),
            cached_tokens: observed.cached_tokens,
        }
    }

    /// The model new work should be prepared for, and its route: the configured backend, or
    /// the local fallback while a remote server is failing. `None` while nothing is ready.
    pub fn serving(&self) -> Option<(Route, Box<ModelInfo>)> {
        let observed = &self.observed;
        let ModelState::Ready { info, .. } = &observed.state else { return None };
        match (&observed.fallback, observed.failing_since) {
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

#[cfg(test)]
impl EngineHandle {
    /// An engine that is ready from the start and runs its tasks in order with `backend` (see
    /// [`TaskQueue::serving`]): for tests of handlers on a scripted model. Jobs are dropped.
    pub(crate) fn scripted(backend: Box<dyn Backend + Send>) -> EngineHandle {
        let info = Box::new(backend.info().clone());
        let TaskQueue(inbox) = TaskQueue::serving(backend);
        let observed = Observed {
            state: ModelState::Ready { model: "scripted".into(), info, load_ms: 0 },
            stats: EngineStats::default(),
            cached_tokens: 0,
            fallback: None,
            failing_since: None,
        };
        EngineHandle { inbox, observed, thread: None, in_flight: Vec::new(), background: Vec::new() }
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
    None(String),
    /// The in-process model, used on the engine thread.
    Local(Box<Model>),
    /// A completions server; each job and task runs on a thread of its own.
    Remote(Arc<RemoteLane>),
}

struct RemoteLane {
    backend: RemoteBackend,
    /// The local model, when `nib.remote.fallbackToLocal` is set.
    fallback: Option<Mutex<Model>>,
    /// The server's health, shared by this lane's request threads only: the main loop hears
    /// of it through `EngineEvent::RemoteFailing`, sent under this lock so in order.
    health: Mutex<Health>,
}

struct Health {
    /// Since when the server has been failing (cleared by its next success).
    failing_since: Option<Instant>,
    outbox: Outbox,
}

/// What an engine thread tells the main loop: events, and inference problems reported once
/// until a generation succeeds (one repeated on every keystroke is shown once).
struct Outbox {
    events: EventSink,
    /// The last problem reported.
    reported: Option<String>,
}

impl Outbox {
    fn new(events: &EventSink) -> Outbox {
        Outbox { events: Arc::clone(events), reported: None }
    }

    fn send(&self, event: EngineEvent) {
        (self.events)(event);
    }

    /// Reports a problem (`Some`) once, until a success (`None`) resets it.
    fn report(&mut self, problem: Option<String>) {
        if problem.is_some() && problem != self.reported {
            self.send(EngineEvent::Problem(problem.clone().unwrap_or_default()));
        }
        self.reported = problem;
    }

    /// The local model's statistics and cache after its work.
    fn record(&self, model: &Model) {
        self.send(EngineEvent::Stats { stats: model.stats.clone(), cached_tokens: model.cached_tokens() });
    }
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
        let mut health = lane.health();
        health.outbox.send(EngineEvent::Stats { stats: lane.backend.stats(), cached_tokens: 0 });
        match &result {
            Err(EngineError::Remote(message)) => {
                if health.failing_since.is_none() {
                    let next = if lane.fallback.is_some() {
                        format!("; the local model answers for the next {} s", COOL_DOWN.as_secs())
                    } else {
                        String::new()
                    };
                    health.outbox.send(EngineEvent::Problem(format!("{message}{next}")));
                }
                let now = Instant::now();
                health.failing_since = Some(now);
                health.outbox.send(EngineEvent::RemoteFailing(Some(now)));
            }
            Ok(_) if health.failing_since.take().is_some() => {
                tracing::info!("{} answers again", lane.backend.url());
                health.outbox.send(EngineEvent::RemoteFailing(None));
            }
            _ => {}
        }
        result
    }
}

impl RemoteLane {
    fn health(&self) -> std::sync::MutexGuard<'_, Health> {
        self.health.lock().unwrap_or_else(|e| e.into_inner())
    }

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
        match self.health().failing_since {
            Some(since) if self.fallback.is_some() && since.elapsed() < COOL_DOWN => Route::Fallback,
            _ => Route::Primary,
        }
    }
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

fn engine_thread(inbox: &Inbox, events: &EventSink) {
    let mut lane = Lane::None(NO_MODEL.into());
    let mut settings: Option<EngineSettings> = None;
    let mut outbox = Outbox::new(events);
    loop {
        match inbox.next() {
            Next::Control(Control::Stop) => return,
            Next::Control(Control::Configure(new_settings)) => {
                if settings.as_ref() == Some(&*new_settings) && !matches!(lane, Lane::None(_)) {
                    continue;
                }
                drop(std::mem::replace(&mut lane, Lane::None(NO_MODEL.into()))); // Free the old model before loading another.
                outbox = Outbox::new(events);
                lane = configure(&new_settings, &outbox);
                settings = Some(*new_settings);
            }
            Next::Work(Work::Task(task)) => run_task_on(&mut lane, task, inbox, &mut outbox),
            Next::Work(Work::Job(job)) => run_job_on(&mut lane, *job, &mut outbox),
        }
    }
}

/// Runs a code action's task: on the local model yielding to waiting jobs before each
/// generation, on a thread of its own with the remote backend.
fn run_task_on(lane: &mut Lane, task: Task, queue: &Inbox, outbox: &mut Outbox) {
    match lane {
        Lane::Local(model) => {
            let mut run_job = |model: &mut Model, job: Job| local_job(model, job, outbox);
            let mut yielding = Yielding { model, queue, run_job: &mut run_job };
            let panicked = run_task(task, Ok(&mut yielding));
            if panicked {
                model.reset_cache();
                outbox.report(Some(TASK_PANIC.into()));
            }
            outbox.record(model);
        }
        Lane::Remote(remote) => {
            let remote = Arc::clone(remote);
            spawn_worker(move || {
                let route = remote.current_route();
                if remote.with_backend(route, |backend| run_task(task, Ok(backend))) {
                    remote.health().outbox.report(Some(TASK_PANIC.into()));
                }
            });
        }
        Lane::None(why) => {
            run_task(task, Err(EngineError::NotReady(why.clone())));
        }
    }
}

fn run_job_on(lane: &mut Lane, mut job: Job, outbox: &mut Outbox) {
    match lane {
        Lane::Local(model) => local_job(model, job, outbox),
        Lane::Remote(remote) => {
            let remote = Arc::clone(remote);
            spawn_worker(move || {
                let (result, _) = remote.with_backend(job.route, |backend| generate(backend, &mut job));
                answer(job, result);
            });
        }
        Lane::None(why) => answer(job, Err(EngineError::NotReady(why.clone()))),
    }
}

/// Runs one job on the local model and answers it.
fn local_job(model: &mut Model, mut job: Job, outbox: &mut Outbox) {
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
        Ok(_) => outbox.report(None),
        Err(error @ (EngineError::Inference(_) | EngineError::TimedOut)) => outbox.report(Some(error.to_string())),
        Err(_) => {}
    }
    outbox.record(model);
    answer(job, result);
}

fn spawn_worker(work: impl FnOnce() + Send + 'static) {
    if let Err(error) = std::thread::Builder::new().name("nib-remote".into()).spawn(work) {
        // Without a thread the work (and the request it answers) would be lost silently.
        tracing::error!("cannot start a thread for a remote request: {error}");
    }
}

/// Loads the local model and/or connects to the remote server, reporting each state change.
fn configure(settings: &EngineSettings, outbox: &Outbox) -> Lane {
    // A new model starts afresh: no statistics, no fallback, no failing server.
    outbox.send(EngineEvent::Stats { stats: EngineStats::default(), cached_tokens: 0 });
    outbox.send(EngineEvent::Fallback(None));
    outbox.send(EngineEvent::RemoteFailing(None));
    let started = Instant::now();
    let Some(remote) = &settings.remote else {
        return match load_local(settings, outbox) {
            Ok(model) => {
                outbox.send(EngineEvent::State(ModelState::Ready {
                    model: model.info.dir.display().to_string(),
                    info: Box::new(model.info.clone()),
                    load_ms: started.elapsed().as_millis() as u64,
                }));
                Lane::Local(Box::new(model))
            }
            Err(message) => failed(outbox, message),
        };
    };
    let fallback = if remote.config.fallback_to_local { load_fallback(settings, outbox) } else { None };
    connect(remote, fallback, outbox, started)
}

/// Reports a failed load or connection; work is answered with `message` until the next one.
fn failed(outbox: &Outbox, message: String) -> Lane {
    outbox.send(EngineEvent::State(ModelState::Failed { message: message.clone() }));
    Lane::None(message)
}

/// Loads the local model, reporting that it loads; a panic while loading is an error too.
fn load_local(settings: &EngineSettings, outbox: &Outbox) -> Result<Model, String> {
    let target = super::model::resolve_dir(settings.model_dir.as_deref())
        .unwrap_or_else(|_| settings.model_dir.clone().unwrap_or_default());
    outbox.send(EngineEvent::State(ModelState::Loading { model: target.display().to_string() }));
    match catch_unwind(|| load_model(settings)) {
        Ok(Ok(model)) => Ok(model),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err("loading the model crashed".into()),
    }
}

/// The local model standing by for the remote server (`nib.remote.fallbackToLocal`); a
/// warning, not a failure, when it cannot load.
fn load_fallback(settings: &EngineSettings, outbox: &Outbox) -> Option<Model> {
    match load_local(settings, outbox) {
        Ok(model) => Some(model),
        Err(message) => {
            outbox.send(EngineEvent::Problem(format!(
                "the local fallback model (nib.remote.fallbackToLocal) is unavailable: {message}"
            )));
            None
        }
    }
}

/// Connects to the remote server, with `fallback` standing by.
fn connect(remote: &RemoteSettings, fallback: Option<Model>, outbox: &Outbox, started: Instant) -> Lane {
    outbox.send(EngineEvent::State(ModelState::Loading { model: remote.config.url.clone() }));
    let Connection { backend, warning, reachable } = match RemoteBackend::connect(remote.clone()) {
        Ok(connection) => connection,
        Err(error) => return failed(outbox, error.to_string()),
    };
    if let Some(warning) = warning {
        let meanwhile = match (reachable, &fallback) {
            (true, _) => "",
            (false, Some(_)) => "; the local model answers until it is back",
            (false, None) => "; nib will keep trying with each request",
        };
        outbox.send(EngineEvent::Problem(format!("{warning}{meanwhile}")));
    }
    let failing_since = (!reachable).then(Instant::now);
    outbox.send(EngineEvent::Fallback(fallback.as_ref().map(|model| Box::new(model.info.clone()))));
    outbox.send(EngineEvent::RemoteFailing(failing_since));
    outbox.send(EngineEvent::State(ModelState::Ready {
        model: backend.url().to_string(),
        info: Box::new(backend.info().clone()),
        load_ms: started.elapsed().as_millis() as u64,
    }));
    let health = Health { failing_since, outbox: Outbox::new(&outbox.events) };
    Lane::Remote(Arc::new(RemoteLane { backend, fallback: fallback.map(Mutex::new), health: Mutex::new(health) }))
}
