//! The engine thread's scheduler: queued work runs by [`Priority`], not in arrival order, and
//! a long task yields to waiting completions between two of its generations.
//!
//! Settings changes and the stop command are barriers: work queued before one runs before it,
//! work sent after waits until it is done, so a job always runs on the model its prompt was
//! prepared for.
//!
//! The queue is bounded, and submitting never blocks: work is pushed into the [`Inbox`] under a
//! short lock (never held during inference) and refused or answered at once when it cannot
//! wait. The policy, applied on every push:
//! - cancelled jobs leave the queue at once and are answered `Cancelled` (a superseded
//!   automatic completion is cancelled by the one replacing it, so it frees its place);
//! - at most [`MAX_WAITING`] jobs and tasks wait; over that, background work is refused first,
//!   and any other work is answered [`EngineError::Busy`] (nothing is lost silently);
//! - a settings change replaces a pending one with no work queued between them;
//! - work sent after the stop command is answered `NotReady`.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::{Condvar, Mutex, MutexGuard};

use super::backend::Backend;
use super::worker::{Job, Task};
use super::{EngineError, EngineSettings, Flow, Generation, GenerationRequest, Model, ModelInfo};

/// The most jobs and tasks that wait for the engine at once. Normal use keeps a handful
/// waiting (one completion, a pre-warm, a code action's step); only a flood reaches this.
pub(super) const MAX_WAITING: usize = 32;

/// Who waits for a generation; the engine runs the highest first (variants from lowest up).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    /// A step of a code action (docstrings, tests): the user waits on a progress bar.
    ActionStep,
    /// Work nobody waits for, such as warming the KV cache.
    Background,
    /// A completion the editor asked for while the user types.
    Automatic,
    /// A completion the user asked for explicitly.
    Invoked,
}

/// Work waiting for the engine.
pub(super) enum Work {
    Job(Box<Job>),
    /// A code action: several generations in a row, at [`Priority::ActionStep`].
    Task(Task),
}

impl Work {
    fn priority(&self) -> Priority {
        match self {
            Work::Job(job) => job.priority,
            Work::Task(_) => Priority::ActionStep,
        }
    }

    fn is_cancelled(&self) -> bool {
        matches!(self, Work::Job(job) if job.request.cancel.is_cancelled())
    }
}

struct Queued {
    /// How many barriers were sent before it: work runs before the barriers sent after it.
    epoch: u64,
    priority: Priority,
    /// Arrival order, so equal priorities run first come, first served.
    sequence: u64,
    work: Work,
}

impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Queued {}

impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Queued {
    /// The heap pops the greatest: the earliest epoch, then the highest priority, then the
    /// earliest arrival.
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .epoch
            .cmp(&self.epoch)
            .then_with(|| self.priority.cmp(&other.priority))
            .then_with(|| other.sequence.cmp(&self.sequence))
    }
}

/// A settings change or stop: runs after everything queued before it.
pub(super) enum Control {
    Configure(Box<EngineSettings>),
    Stop,
}

/// What the engine thread does next.
pub(super) enum Next {
    Work(Work),
    Control(Control),
}

/// Work that did not stay in the queue, to be answered by the caller outside the lock.
pub(super) struct Refused {
    pub work: Work,
    pub why: EngineError,
}

/// What waits for the engine, in order.
#[derive(Default)]
struct Pending {
    heap: BinaryHeap<Queued>,
    sequence: u64,
    /// Barriers in the order they were sent, each with its index (the epoch of the work before it).
    controls: VecDeque<(u64, Control)>,
    /// Barriers sent so far: the epoch of work pushed now.
    epoch: u64,
    /// Stop was sent: nothing after it would ever run.
    stopped: bool,
}

impl Pending {
    /// Queues `work`, or refuses it; returns what left the queue (cancelled jobs, refused work).
    fn push(&mut self, work: Work) -> Vec<Refused> {
        let mut refused = self.drop_cancelled();
        if work.is_cancelled() {
            refused.push(Refused { work, why: EngineError::Cancelled });
        } else if self.stopped {
            refused.push(Refused { work, why: EngineError::NotReady("the engine has stopped".into()) });
        } else if self.heap.len() >= MAX_WAITING {
            let why = match work.priority() {
                Priority::Background => EngineError::Cancelled,
                _ => EngineError::Busy { waiting: self.heap.len() },
            };
            refused.push(Refused { work, why });
        } else {
            self.sequence += 1;
            self.heap.push(Queued { epoch: self.epoch, priority: work.priority(), sequence: self.sequence, work });
        }
        refused
    }

    /// Queues a barrier; a settings change replaces a pending one with no work after it.
    fn push_control(&mut self, control: Control) -> Vec<Refused> {
        let refused = self.drop_cancelled();
        let work_after_last = self.heap.iter().any(|queued| queued.epoch == self.epoch);
        if self.stopped {
            return refused;
        }
        self.stopped = matches!(control, Control::Stop);
        match (self.controls.back_mut(), control) {
            (Some((_, pending @ Control::Configure(_))), control @ Control::Configure(_)) if !work_after_last => {
                *pending = control;
            }
            (_, control) => {
                self.controls.push_back((self.epoch, control));
                self.epoch += 1;
            }
        }
        refused
    }

    /// Takes the cancelled jobs out of the queue.
    fn drop_cancelled(&mut self) -> Vec<Refused> {
        if !self.heap.iter().any(|queued| queued.work.is_cancelled()) {
            return Vec::new();
        }
        let (cancelled, kept): (Vec<Queued>, Vec<Queued>) =
            std::mem::take(&mut self.heap).into_vec().into_iter().partition(|queued| queued.work.is_cancelled());
        self.heap = kept.into();
        cancelled.into_iter().map(|queued| Refused { work: queued.work, why: EngineError::Cancelled }).collect()
    }

    /// Whether the next thing to do is the queued work at the top (not a barrier before it).
    fn work_is_next(&self) -> bool {
        match (self.heap.peek(), self.controls.front()) {
            (Some(queued), Some((index, _))) => queued.epoch <= *index,
            (top, None) => top.is_some(),
            (None, Some(_)) => false,
        }
    }

    fn take_next(&mut self) -> Option<Next> {
        if self.work_is_next() {
            self.heap.pop().map(|queued| Next::Work(queued.work))
        } else {
            self.controls.pop_front().map(|(_, control)| Next::Control(control))
        }
    }

    /// The next job if it comes before any barrier and has a priority above `priority`.
    fn take_job_above(&mut self, priority: Priority) -> Option<Box<Job>> {
        let top = self.heap.peek()?;
        if !self.work_is_next() || top.priority <= priority || !matches!(top.work, Work::Job(_)) {
            return None;
        }
        match self.heap.pop()?.work {
            Work::Job(job) => Some(job),
            Work::Task(_) => unreachable!("checked: the top is a job"),
        }
    }
}

/// The engine's queue, shared by the threads that submit work and the engine thread that
/// takes it. The lock is held only to push or pop, never during inference.
#[derive(Default)]
pub(super) struct Inbox {
    pending: Mutex<Pending>,
    arrived: Condvar,
}

impl Inbox {
    fn pending(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `work` without waiting; returns what must be answered now (see the module's policy).
    pub(super) fn push(&self, work: Work) -> Vec<Refused> {
        let refused = self.pending().push(work);
        self.arrived.notify_one();
        refused
    }

    /// Queues a settings change or stop after the work queued so far.
    pub(super) fn push_control(&self, control: Control) -> Vec<Refused> {
        let refused = self.pending().push_control(control);
        self.arrived.notify_one();
        refused
    }

    /// The next thing to do, waiting for one when there is nothing.
    pub(super) fn next(&self) -> Next {
        let mut pending = self.pending();
        loop {
            if let Some(next) = pending.take_next() {
                return next;
            }
            pending = self.arrived.wait(pending).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Like `next`, giving up after `timeout`.
    #[cfg(test)]
    pub(super) fn next_within(&self, timeout: std::time::Duration) -> Option<Next> {
        let mut pending = self.pending();
        if pending.heap.is_empty() && pending.controls.is_empty() {
            pending = self.arrived.wait_timeout(pending, timeout).unwrap_or_else(|e| e.into_inner()).0;
        }
        pending.take_next()
    }

    /// The highest-priority waiting job above `priority`, for a task that yields.
    pub(super) fn job_above(&self, priority: Priority) -> Option<Box<Job>> {
        self.pending().take_job_above(priority)
    }
}

/// The backend a local task generates through: before each of the task's generations (and
/// each run of a batch of them) it runs the jobs that wait with a higher priority, so a
/// completion is answered between two steps of a long code action instead of after it.
pub(super) struct Yielding<'q> {
    pub model: &'q mut Model,
    pub queue: &'q Inbox,
    /// Runs one job on the model (answering it, recording statistics and problems).
    pub run_job: &'q mut dyn FnMut(&mut Model, Job),
}

impl Backend for Yielding<'_> {
    fn info(&self) -> &ModelInfo {
        &self.model.info
    }

    fn generate(
        &mut self,
        request: &GenerationRequest,
        observer: &mut dyn FnMut(&str) -> Flow,
    ) -> Result<Generation, EngineError> {
        run_waiting_jobs(self.queue, self.run_job, self.model);
        self.model.generate(request, observer)
    }

    /// Side by side, with the waiting jobs run before each prefill and each run of the batch.
    fn generate_batch(
        &mut self,
        requests: &[GenerationRequest],
        observers: &mut [&mut dyn FnMut(&str) -> Flow],
    ) -> Vec<Result<Generation, EngineError>> {
        let (queue, run_job) = (self.queue, &mut *self.run_job);
        let mut between = |model: &mut Model| run_waiting_jobs(queue, run_job, model);
        self.model.generate_batch_yielding(requests, observers, &mut between)
    }
}

/// Runs the jobs that wait with a higher priority than a task's step.
fn run_waiting_jobs(queue: &Inbox, run_job: &mut dyn FnMut(&mut Model, Job), model: &mut Model) {
    while let Some(job) = queue.job_above(Priority::ActionStep) {
        run_job(model, *job);
    }
}

#[cfg(test)]
mod tests {
    //! Ordering, not timing: the task waits for the test at fixed points, so what ran between
    //! two of its generations is decided by the scheduler alone.

    use std::path::Path;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use crossbeam_channel::{Receiver, bounded};

    use super::{Control, MAX_WAITING, Next, Pending, Priority, Refused, Work};
    use crate::config::Config;
    use crate::engine::{
        CancelToken, EngineError, EngineEvent, EngineHandle, EngineSettings, Flow, GenerationRequest, Job, ModelState,
        PromptPiece, Route, Sampling,
    };

    const WAIT: Duration = Duration::from_secs(60);

    fn request(prompt: &str) -> GenerationRequest {
        GenerationRequest {
            prompt: vec![PromptPiece::Text(prompt.to_string())],
            max_tokens: 3,
            sampling: Sampling::GREEDY,
            stop_strings: Vec::new(),
            stop_tokens: Vec::new(),
            cancel: CancelToken::default(),
            deadline: None,
            prefill_budget_ms: None,
            single_line: false,
            warm_alternative: None,
            heal_word: false,
        }
    }

    /// An engine whose events arrive on a channel.
    fn start() -> (EngineHandle, Receiver<EngineEvent>) {
        let (sender, events) = crossbeam_channel::unbounded();
        let engine = EngineHandle::start(move |event| {
            let _ = sender.send(event);
        });
        (engine, events)
    }

    /// An engine running the tiny fixture model, once it is ready.
    fn engine() -> EngineHandle {
        let (engine, events) = start();
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tiny-model");
        engine.configure(&Config { model_path: Some(fixture), threads: Some(1), ..Config::default() });
        wait_ready(&events);
        engine
    }

    fn wait_ready(events: &Receiver<EngineEvent>) {
        loop {
            match events.recv_timeout(WAIT).expect("the fixture model loads") {
                EngineEvent::State(ModelState::Ready { .. }) => return,
                EngineEvent::State(ModelState::Failed { message }) => panic!("{message}"),
                _ => {}
            }
        }
    }

    type Log = Arc<Mutex<Vec<String>>>;

    fn note(log: &Log, what: &str) {
        log.lock().unwrap().push(what.to_string());
    }

    fn job(log: &Log, name: &str, priority: Priority) -> Job {
        let (log, name) = (Arc::clone(log), name.to_string());
        Job {
            request: request("def f(x):\n"),
            observer: None,
            on_done: Box::new(move |result| note(&log, &format!("{name}: {}", result.is_ok()))),
            route: Route::Primary,
            priority,
        }
    }

    /// A job whose callback records its error, for the queue's own tests.
    fn queued(log: &Log, name: &str, priority: Priority) -> Work {
        let (log, name) = (Arc::clone(log), name.to_string());
        let mut job = job(&log, &name, priority);
        job.on_done = Box::new(move |result| note(&log, &format!("{name}: {:?}", result.err())));
        Work::Job(Box::new(job))
    }

    fn reasons(refused: Vec<Refused>) -> Vec<EngineError> {
        refused.into_iter().map(|refused| refused.why).collect()
    }

    fn cancel(work: &Work) -> CancelToken {
        let Work::Job(job) = work else { panic!("a job") };
        job.request.cancel.clone()
    }

    #[test]
    fn a_full_queue_refuses_background_work_first_and_answers_the_rest_busy() {
        let (log, mut pending) = (Log::default(), Pending::default());
        let mut tokens = Vec::new();
        for n in 0..MAX_WAITING {
            let work = queued(&log, &format!("job {n}"), Priority::Automatic);
            tokens.push(cancel(&work));
            assert!(pending.push(work).is_empty(), "room for job {n}");
        }
        assert_eq!(reasons(pending.push(queued(&log, "warm", Priority::Background))), [EngineError::Cancelled]);
        let over = pending.push(queued(&log, "invoked", Priority::Invoked));
        assert_eq!(reasons(over), [EngineError::Busy { waiting: MAX_WAITING }]);
        assert!(EngineError::Busy { waiting: MAX_WAITING }.to_string().contains("busy"));
        // A cancelled job frees its place at the next push and is answered then.
        tokens[3].cancel();
        assert_eq!(reasons(pending.push(queued(&log, "invoked again", Priority::Invoked))), [EngineError::Cancelled]);
        assert_eq!(pending.heap.len(), MAX_WAITING);
        assert!(matches!(pending.take_next(), Some(Next::Work(work)) if work.priority() == Priority::Invoked));
    }

    #[test]
    fn superseded_completions_leave_the_queue_as_they_are_replaced() {
        let (log, mut pending) = (Log::default(), Pending::default());
        let mut previous: Option<CancelToken> = None;
        let mut answered = 0;
        for n in 0..1000 {
            // What the main loop does: a new completion cancels the one before it.
            if let Some(token) = previous.take() {
                token.cancel();
            }
            let work = queued(&log, &format!("completion {n}"), Priority::Automatic);
            previous = Some(cancel(&work));
            answered += pending.push(work).len();
            assert_eq!(pending.heap.len(), 1);
        }
        assert_eq!(answered, 999);
    }

    fn settings(threads: usize) -> Control {
        Control::Configure(Box::new(EngineSettings { threads, ..EngineSettings::from_config(&Config::default()) }))
    }

    fn order(pending: &mut Pending) -> Vec<String> {
        std::iter::from_fn(|| pending.take_next())
            .map(|next| match next {
                Next::Work(work) => format!("{:?}", work.priority()),
                Next::Control(Control::Configure(settings)) => format!("configure {}", settings.threads),
                Next::Control(Control::Stop) => "stop".into(),
            })
            .collect()
    }

    #[test]
    fn settings_changes_coalesce_and_stay_barriers() {
        let (log, mut pending) = (Log::default(), Pending::default());
        pending.push(queued(&log, "a", Priority::Automatic));
        for threads in 1..=100 {
            pending.push_control(settings(threads));
        }
        pending.push(queued(&log, "b", Priority::Background));
        pending.push_control(settings(200));
        pending.push(queued(&log, "c", Priority::Invoked));
        pending.push_control(Control::Stop);
        pending.push_control(settings(300));
        assert_eq!(pending.controls.len(), 3);
        let late = pending.push(queued(&log, "late", Priority::Invoked));
        assert!(matches!(reasons(late)[..], [EngineError::NotReady(_)]), "work after stop is answered");
        assert_eq!(
            order(&mut pending),
            ["Automatic", "configure 100", "Background", "configure 200", "Invoked", "stop"]
        );
    }

    #[test]
    fn an_engine_held_by_a_task_answers_work_over_the_bound_at_once() {
        let mut held = held_by_a_task(2);
        let (engine, log) = (&mut held.engine, &held.log);
        for n in 0..MAX_WAITING {
            engine.submit(job(log, &format!("invoked {n}"), Priority::Invoked));
        }
        let (refusal, refused) = bounded(1);
        let mut over = job(log, "over", Priority::Invoked);
        over.on_done = Box::new(move |result| refusal.send(result.err()).unwrap());
        engine.submit(over);
        // Answered before the engine is free again: submitting never waits.
        let why = refused.try_recv().expect("answered during submit");
        assert_eq!(why, Some(EngineError::Busy { waiting: MAX_WAITING }));
        held.resume();
        let log = log.lock().unwrap();
        assert_eq!(log.len(), 2 + MAX_WAITING, "{log:?}");
        assert!(log[1..=MAX_WAITING].iter().all(|line| line.ends_with(": true")), "{log:?}");
    }

    /// An engine busy with a task of `steps` generations, paused after its first while the test
    /// queues work; `resume` lets it go on and waits until it has ended.
    struct Held {
        engine: EngineHandle,
        log: Log,
        resume: crossbeam_channel::Sender<()>,
        done: Receiver<()>,
    }

    fn held_by_a_task(steps: usize) -> Held {
        let (mut engine, log) = (engine(), Log::default());
        let (first_done, after_first) = bounded(1);
        let (resume, resumed) = bounded::<()>(1);
        let (finished, done) = bounded(1);
        let task_log = Arc::clone(&log);
        engine.run(Box::new(move |backend| {
            let backend = backend.expect("the model is ready");
            for step in 1..=steps {
                backend.generate(&request(&format!("step {step}")), &mut |_| Flow::Continue).unwrap();
                note(&task_log, &format!("step {step}"));
                if step == 1 {
                    first_done.send(()).unwrap();
                    resumed.recv_timeout(WAIT).unwrap();
                }
            }
            finished.send(()).unwrap();
        }));
        after_first.recv_timeout(WAIT).unwrap();
        Held { engine, log, resume, done }
    }

    impl Held {
        fn resume(&self) {
            self.resume.send(()).unwrap();
            self.done.recv_timeout(WAIT).unwrap();
        }
    }

    #[test]
    fn a_completion_runs_between_two_steps_of_a_long_task() {
        let mut held = held_by_a_task(3);
        held.engine.submit(job(&held.log, "completion", Priority::Automatic));
        held.resume();
        assert_eq!(*held.log.lock().unwrap(), ["step 1", "completion: true", "step 2", "step 3"]);
    }

    #[test]
    fn waiting_work_runs_by_priority_then_arrival() {
        let mut held = held_by_a_task(2);
        let (engine, log) = (&mut held.engine, &held.log);
        // A second code action queued first must wait for the first to end.
        let (second_log, (second_done, second_finished)) = (Arc::clone(log), bounded(1));
        engine.run(Box::new(move |_| {
            note(&second_log, "second task");
            second_done.send(()).unwrap();
        }));
        engine.submit(job(log, "background", Priority::Background));
        engine.submit(job(log, "automatic 1", Priority::Automatic));
        engine.submit(job(log, "invoked", Priority::Invoked));
        engine.submit(job(log, "automatic 2", Priority::Automatic));
        held.resume();
        second_finished.recv_timeout(WAIT).unwrap();
        assert_eq!(
            *log.lock().unwrap(),
            [
                "step 1",
                // Background work (a cache pre-warm) is cancelled by the real request after it
                // and leaves the queue at once.
                "background: false",
                "invoked: true",
                "automatic 1: true",
                "automatic 2: true",
                "step 2",
                "second task"
            ]
        );
    }

    /// What the server's main loop receives, in order: the engine's events and a job's answer.
    enum Arrival {
        Event(Box<EngineEvent>),
        Answer,
    }

    #[test]
    fn the_main_loop_knows_the_engine_only_from_its_events_and_gets_them_before_the_answer() {
        let (sender, arrivals) = crossbeam_channel::unbounded();
        let events = sender.clone();
        let mut engine = EngineHandle::start(move |event| {
            let _ = events.send(Arrival::Event(Box::new(event)));
        });
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tiny-model");
        engine.configure(&Config { model_path: Some(fixture), threads: Some(1), ..Config::default() });
        engine.submit(Job {
            request: request("def f(x):\n"),
            observer: None,
            on_done: Box::new(move |result| {
                assert!(result.is_ok(), "{result:?}");
                sender.send(Arrival::Answer).unwrap();
            }),
            route: Route::Primary,
            priority: Priority::Invoked,
        });
        let mut received = Vec::new();
        while !matches!(received.last(), Some(Arrival::Answer)) {
            received.push(arrivals.recv_timeout(WAIT).expect("the job is answered"));
        }
        // Nothing is shared: until the events are observed, the handle knows nothing.
        assert!(matches!(engine.status().state, ModelState::Unloaded));
        assert!(engine.serving().is_none());
        for arrival in &received {
            if let Arrival::Event(event) = arrival {
                engine.observe(event);
            }
        }
        // Everything the job changed arrived before its answer.
        let status = engine.status();
        assert!(matches!(status.state, ModelState::Ready { .. }), "{:?}", status.state);
        assert_eq!(status.stats.generations, 1);
        assert!(status.cached_tokens > 0);
        assert!(matches!(engine.serving(), Some((Route::Primary, _))));
    }

    #[test]
    fn a_settings_change_waits_for_the_work_queued_before_it() {
        let (mut engine, events) = start();
        let log = Log::default();
        // No model yet: the job sent before the configuration is answered "not ready", the
        // invoked one sent after it runs on the loaded model although its priority is higher.
        engine.submit(job(&log, "before", Priority::Automatic));
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tiny-model");
        engine.configure(&Config { model_path: Some(fixture), threads: Some(1), ..Config::default() });
        let (answered, after) = bounded(1);
        let mut late = job(&log, "after", Priority::Invoked);
        let on_done = late.on_done;
        late.on_done = Box::new(move |result| {
            on_done(result);
            answered.send(()).unwrap();
        });
        engine.submit(late);
        wait_ready(&events);
        after.recv_timeout(WAIT).unwrap();
        assert_eq!(*log.lock().unwrap(), ["before: false", "after: true"]);
    }
}
