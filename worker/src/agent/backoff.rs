//! Exponential backoff with jitter, for every retry the agent makes (sessions, reports,
//! container removals), so many workers do not retry in lockstep.

use std::time::Duration;

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(8);

pub(super) struct Backoff {
    next: Duration,
}

impl Backoff {
    pub(super) fn new() -> Self {
        Backoff { next: BACKOFF_MIN }
    }

    pub(super) fn reset(&mut self) {
        self.next = BACKOFF_MIN;
    }

    pub(super) fn next_delay(&mut self) -> Duration {
        use rand::Rng;
        let d = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        let half = d / 2;
        half + half.mul_f64(rand::thread_rng().gen::<f64>())
    }
}
