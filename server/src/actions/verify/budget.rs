//! The total time one **Generate unit tests** action may take (`nib.tests.timeBudgetSeconds`):
//! generation stops between tests and mid-test at the deadline, no repair round starts after
//! it, and what already passed is delivered. Runs that started finish (each has its own
//! limits); the final check of the file as written always runs, since only tests that pass
//! are offered. The clock is injected so tests need no real waiting.

use std::sync::Arc;
use std::time::{Duration, Instant};

/// The default budget, in seconds (`nib.tests.timeBudgetSeconds`).
pub const DEFAULT_SECONDS: u64 = 30;

/// A deadline measured from the start of the action.
#[derive(Clone)]
pub struct Budget {
    limit: Duration,
    started: Instant,
    clock: Arc<dyn Fn() -> Instant + Send + Sync>,
}

impl std::fmt::Debug for Budget {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "Budget({} of {})", self.elapsed().as_secs(), self.limit.as_secs())
    }
}

impl Budget {
    /// A budget of `limit` starting now, on the wall clock.
    pub fn new(limit: Duration) -> Self {
        Budget::with_clock(limit, Arc::new(Instant::now))
    }

    /// A budget on another clock (tests move time by hand).
    pub fn with_clock(limit: Duration, clock: Arc<dyn Fn() -> Instant + Send + Sync>) -> Self {
        Budget { limit, started: clock(), clock }
    }

    pub fn elapsed(&self) -> Duration {
        (self.clock)().saturating_duration_since(self.started)
    }

    /// Whether the time is up.
    pub fn spent(&self) -> bool {
        self.elapsed() >= self.limit
    }

    /// The wall-clock instant the budget ends, for generations (`GenerationRequest::deadline`).
    pub fn deadline(&self) -> Instant {
        Instant::now() + self.limit.saturating_sub(self.elapsed())
    }

    /// Where the action stands, for progress messages: "12 s of 30 s".
    pub fn progress(&self) -> String {
        format!("{} s of {} s", self.elapsed().as_secs(), self.limit.as_secs())
    }

    /// Says that the budget ended the work, for messages.
    pub fn ran_out(&self) -> String {
        format!("the {} s time budget (nib.tests.timeBudgetSeconds) ran out", self.limit.as_secs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[test]
    fn the_budget_follows_its_clock() {
        let base = Instant::now();
        let seconds = Arc::new(AtomicU64::new(0));
        let clock = {
            let seconds = seconds.clone();
            Arc::new(move || base + Duration::from_secs(seconds.load(Ordering::SeqCst)))
        };
        let budget = Budget::with_clock(Duration::from_secs(10), clock);
        assert!(!budget.spent());
        seconds.store(4, Ordering::SeqCst);
        assert_eq!(budget.progress(), "4 s of 10 s");
        assert!(budget.deadline() <= Instant::now() + Duration::from_secs(6));
        seconds.store(10, Ordering::SeqCst);
        assert!(budget.spent());
        assert!(budget.deadline() <= Instant::now(), "no time left");
    }
}
