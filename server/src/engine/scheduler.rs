//! The engine thread's scheduler: queued work runs by [`Priority`], not in arrival order, and
//! a long task yields to waiting completions between two of its generations.
//!
//! Settings changes and the stop command are barriers: work queued before one runs before it,
//! work sent after waits until it is done, so a job always runs on the model its prompt was
//! prepared for.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use crossbeam_channel::Receiver;

use super::backend::Backend;
use super::worker::{Command, Job, Task};
use super::{EngineError, EngineSettings, Flow, Generation, GenerationRequest, Model, ModelInfo};

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

struct Queued {
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
    /// The heap pops the greatest: the highest priority, then the earliest arrival.
    fn cmp(&self, other: &Self) -> Ordering {
        self.priority.cmp(&other.priority).then_with(|| other.sequence.cmp(&self.sequence))
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

/// The engine's queue: the command channel drained into a priority heap up to the next barrier.
pub(super) struct Queue<'a> {
    commands: &'a Receiver<Command>,
    heap: BinaryHeap<Queued>,
    sequence: u64,
    /// A control command that arrived after the queued work; it waits until that is done.
    barrier: Option<Control>,
}

impl<'a> Queue<'a> {
    pub(super) fn new(commands: &'a Receiver<Command>) -> Self {
        Queue { commands, heap: BinaryHeap::new(), sequence: 0, barrier: None }
    }

    /// The next thing to do, waiting for one when there is nothing. A closed channel is `Stop`.
    pub(super) fn next(&mut self) -> Next {
        if self.heap.is_empty() && self.barrier.is_none() {
            match self.commands.recv() {
                Ok(command) => self.accept(command),
                Err(_) => return Next::Control(Control::Stop),
            }
        }
        self.take_arrived();
        match self.heap.pop() {
            Some(queued) => Next::Work(queued.work),
            None => Next::Control(self.barrier.take().unwrap_or(Control::Stop)),
        }
    }

    /// The highest-priority waiting job above `priority`, for a task that yields.
    pub(super) fn job_above(&mut self, priority: Priority) -> Option<Box<Job>> {
        self.take_arrived();
        if self.heap.peek().is_none_or(|queued| queued.priority <= priority) {
            return None;
        }
        match self.heap.pop().map(|queued| queued.work) {
            Some(Work::Job(job)) => Some(job),
            Some(task @ Work::Task(_)) => {
                // Tasks are never above a step; keep the queue intact if that ever changes.
                self.push(Priority::ActionStep, task);
                None
            }
            None => None,
        }
    }

    /// Moves the commands that have arrived into the heap, up to the first barrier.
    fn take_arrived(&mut self) {
        while self.barrier.is_none() {
            match self.commands.try_recv() {
                Ok(command) => self.accept(command),
                Err(_) => return,
            }
        }
    }

    fn accept(&mut self, command: Command) {
        match command {
            Command::Generate(job) => self.push(job.priority, Work::Job(job)),
            Command::Run(task) => self.push(Priority::ActionStep, Work::Task(task)),
            Command::Configure(settings) => self.barrier = Some(Control::Configure(settings)),
            Command::Stop => self.barrier = Some(Control::Stop),
        }
    }

    fn push(&mut self, priority: Priority, work: Work) {
        self.sequence += 1;
        self.heap.push(Queued { priority, sequence: self.sequence, work });
    }
}

/// The backend a local task generates through: before each of the task's generations it runs
/// the jobs that wait with a higher priority, so a completion is answered between two steps of
/// a long code action instead of after it.
pub(super) struct Yielding<'q, 'c> {
    pub model: &'q mut Model,
    pub queue: &'q mut Queue<'c>,
    /// Runs one job on the model (answering it, recording statistics and problems).
    pub run_job: &'q mut dyn FnMut(&mut Model, Job),
}

impl Backend for Yielding<'_, '_> {
    fn info(&self) -> &ModelInfo {
        &self.model.info
    }

    fn generate(
        &mut self,
        request: &GenerationRequest,
        observer: &mut dyn FnMut(&str) -> Flow,
    ) -> Result<Generation, EngineError> {
        while let Some(job) = self.queue.job_above(Priority::ActionStep) {
            (self.run_job)(&mut *self.model, *job);
        }
        self.model.generate(request, observer)
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

    use super::Priority;
    use crate::config::Config;
    use crate::engine::{
        CancelToken, EngineEvent, EngineHandle, Flow, GenerationRequest, Job, ModelState, PromptPiece, Route, Sampling,
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
        }
    }

    /// An engine running the tiny fixture model, once it is ready.
    fn engine() -> EngineHandle {
        let (engine, events) = EngineHandle::start();
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

    /// Starts a task of `steps` generations that, after its first, waits until `resume`
    /// says the test has queued its work; `done` fires when the task ends.
    fn long_task(
        engine: &EngineHandle,
        log: &Log,
        steps: usize,
    ) -> (Receiver<()>, crossbeam_channel::Sender<()>, Receiver<()>) {
        let (first_done, after_first) = bounded(1);
        let (resume, resumed) = bounded::<()>(1);
        let (finished, done) = bounded(1);
        let log = Arc::clone(log);
        engine.run(Box::new(move |backend| {
            let backend = backend.expect("the model is ready");
            for step in 1..=steps {
                backend.generate(&request(&format!("step {step}")), &mut |_| Flow::Continue).unwrap();
                note(&log, &format!("step {step}"));
                if step == 1 {
                    first_done.send(()).unwrap();
                    resumed.recv_timeout(WAIT).unwrap();
                }
            }
            finished.send(()).unwrap();
        }));
        (after_first, resume, done)
    }

    #[test]
    fn a_completion_runs_between_two_steps_of_a_long_task() {
        let engine = engine();
        let log = Log::default();
        let (after_first, resume, done) = long_task(&engine, &log, 3);
        after_first.recv_timeout(WAIT).unwrap();
        engine.submit(job(&log, "completion", Priority::Automatic));
        resume.send(()).unwrap();
        done.recv_timeout(WAIT).unwrap();
        assert_eq!(*log.lock().unwrap(), ["step 1", "completion: true", "step 2", "step 3"]);
    }

    #[test]
    fn waiting_work_runs_by_priority_then_arrival() {
        let engine = engine();
        let log = Log::default();
        let (after_first, resume, done) = long_task(&engine, &log, 2);
        after_first.recv_timeout(WAIT).unwrap();
        // A second code action queued first must wait for the first to end.
        let (second_log, (second_done, second_finished)) = (Arc::clone(&log), bounded(1));
        engine.run(Box::new(move |_| {
            note(&second_log, "second task");
            second_done.send(()).unwrap();
        }));
        engine.submit(job(&log, "background", Priority::Background));
        engine.submit(job(&log, "automatic 1", Priority::Automatic));
        engine.submit(job(&log, "invoked", Priority::Invoked));
        engine.submit(job(&log, "automatic 2", Priority::Automatic));
        resume.send(()).unwrap();
        done.recv_timeout(WAIT).unwrap();
        second_finished.recv_timeout(WAIT).unwrap();
        assert_eq!(
            *log.lock().unwrap(),
            [
                "step 1",
                "invoked: true",
                "automatic 1: true",
                "automatic 2: true",
                // Background work (a cache pre-warm) is cancelled by the real requests after it.
                "background: false",
                "step 2",
                "second task"
            ]
        );
    }

    #[test]
    fn a_settings_change_waits_for_the_work_queued_before_it() {
        let (engine, events) = EngineHandle::start();
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
