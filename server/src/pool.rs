//! The worker pool: a few threads (`nib-pool-N`) for work that waits on the system, i.e.
//! subprocesses and file I/O, so that it never runs on the main loop or the engine thread.
//!
//! A piece of work is a closure plus a *completion*: the closure runs on a pool thread, and
//! the completion turns its outcome into a message for whoever owns the state (the main loop
//! posts itself a `lsp::server::Message`). The completion always runs, exactly once, also when
//! the work was cancelled before it started or panicked, so a request it answers is never lost.
//!
//! ```text
//! let done = server.main_loop.clone();
//! server.pool.submit(cancel, move |cancel| read_project(&root, cancel), move |outcome| {
//!     done.post(move |server| use_it(server, outcome));
//! });
//! ```

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use crate::engine::CancelToken;

/// How a piece of pool work ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome<T> {
    Done(T),
    /// Cancelled before it started; the work did not run.
    Cancelled,
    /// The work panicked (a bug); the text is the panic's message.
    Panicked(String),
}

type Work = Box<dyn FnOnce() + Send>;

/// A fixed set of threads running submitted work in submission order.
pub struct WorkerPool {
    work: Option<Sender<Work>>,
    threads: Vec<JoinHandle<()>>,
}

impl WorkerPool {
    /// Starts `threads` threads (at least one).
    pub fn start(threads: usize) -> Self {
        let (work, queue) = crossbeam_channel::unbounded::<Work>();
        let threads = (0..threads.max(1))
            .map(|index| {
                let queue: Receiver<Work> = queue.clone();
                std::thread::Builder::new()
                    .name(format!("nib-pool-{index}"))
                    .spawn(move || {
                        for work in queue {
                            work();
                        }
                    })
                    .expect("spawn a worker pool thread")
            })
            .collect();
        WorkerPool { work: Some(work), threads }
    }

    /// Runs `work` on a pool thread, then `complete` with its outcome. `work` does not start
    /// when `cancel` is already cancelled; long work should check `cancel` itself (a
    /// subprocess polls it and kills the child).
    pub fn submit<T: Send + 'static>(
        &self,
        cancel: CancelToken,
        work: impl FnOnce(&CancelToken) -> T + Send + 'static,
        complete: impl FnOnce(Outcome<T>) + Send + 'static,
    ) {
        let job: Work = Box::new(move || {
            let outcome = if cancel.is_cancelled() {
                Outcome::Cancelled
            } else {
                match catch_unwind(AssertUnwindSafe(|| work(&cancel))) {
                    Ok(value) => Outcome::Done(value),
                    Err(payload) => Outcome::Panicked(crate::engine::panic_text(payload.as_ref())),
                }
            };
            if catch_unwind(AssertUnwindSafe(|| complete(outcome))).is_err() {
                tracing::error!("a worker pool completion panicked");
            }
        });
        let Some(sender) = &self.work else { return };
        if let Err(error) = sender.send(job) {
            // Only after `stop`: run the completion here rather than lose it.
            (error.into_inner())();
        }
    }

    /// Lets queued work finish and joins the threads.
    pub fn stop(&mut self) {
        self.work = None;
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }

    /// `stop`, but waits for the threads only until `deadline` (at `exit`: work that does not
    /// end in time is left to the end of the process).
    pub fn stop_by(&mut self, deadline: Instant) {
        self.work = None;
        for thread in self.threads.drain(..) {
            join_by(thread, deadline);
        }
    }
}

/// Joins `thread` if it ends before `deadline`; otherwise leaves it running. Returns whether
/// it ended.
pub fn join_by(thread: JoinHandle<()>, deadline: Instant) -> bool {
    while !thread.is_finished() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = thread.join();
    true
}

impl Drop for WorkerPool {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn work_runs_off_the_calling_thread_and_reports_its_outcome() {
        let pool = WorkerPool::start(2);
        let (sender, results) = crossbeam_channel::unbounded();
        let caller = std::thread::current().id();
        let done = sender.clone();
        pool.submit(
            CancelToken::default(),
            move |_| std::thread::current().id() != caller,
            move |o| done.send(o).unwrap(),
        );
        assert_eq!(results.recv_timeout(Duration::from_secs(10)).unwrap(), Outcome::Done(true));
    }

    #[test]
    fn cancelled_work_does_not_run_but_still_completes() {
        let pool = WorkerPool::start(1);
        let (sender, results) = crossbeam_channel::unbounded();
        let cancel = CancelToken::default();
        cancel.cancel();
        pool.submit(
            cancel.clone(),
            |_| panic!("cancelled work must not run"),
            move |o: Outcome<()>| sender.send(o).unwrap(),
        );
        assert_eq!(results.recv_timeout(Duration::from_secs(10)).unwrap(), Outcome::Cancelled);
    }

    #[test]
    fn a_panic_is_an_outcome_and_the_pool_lives_on() {
        let pool = WorkerPool::start(1);
        let (sender, results) = crossbeam_channel::unbounded();
        let first = sender.clone();
        pool.submit(CancelToken::default(), |_| -> u8 { panic!("boom") }, move |o| first.send(o).unwrap());
        pool.submit(CancelToken::default(), |_| 7u8, move |o| sender.send(o).unwrap());
        assert_eq!(results.recv_timeout(Duration::from_secs(10)).unwrap(), Outcome::Panicked("boom".into()));
        assert_eq!(results.recv_timeout(Duration::from_secs(10)).unwrap(), Outcome::Done(7));
    }

    #[test]
    fn two_threads_run_two_pieces_of_work_at_once() {
        // Each piece waits for the other to start: with one thread this would never finish.
        let pool = WorkerPool::start(2);
        let (a_started, a_seen) = crossbeam_channel::bounded::<()>(1);
        let (b_started, b_seen) = crossbeam_channel::bounded::<()>(1);
        let (sender, results) = crossbeam_channel::unbounded();
        let done_a = sender.clone();
        pool.submit(
            CancelToken::default(),
            move |_| {
                a_started.send(()).unwrap();
                b_seen.recv_timeout(Duration::from_secs(10)).is_ok()
            },
            move |o| done_a.send(o).unwrap(),
        );
        pool.submit(
            CancelToken::default(),
            move |_| {
                b_started.send(()).unwrap();
                a_seen.recv_timeout(Duration::from_secs(10)).is_ok()
            },
            move |o| sender.send(o).unwrap(),
        );
        for _ in 0..2 {
            assert_eq!(results.recv_timeout(Duration::from_secs(20)).unwrap(), Outcome::Done(true));
        }
    }
}
