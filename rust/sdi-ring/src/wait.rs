//! How a blocking call waits: spin, spin then yield, or sleep.

use std::time::{Duration, Instant};

use crate::constants::{
    LIVENESS_CHECK_INTERVAL_MICROS, SLEEP_MICROS_MAX, SLEEP_MICROS_MIN, SPIN_BEFORE_SLEEP_ROUNDS,
    SPIN_BEFORE_YIELD_ROUNDS,
};
use crate::error::{Error, Result};

/// What a waiting side does between two looks at the ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum WaitStrategy {
    /// Busy-spin: lowest latency, burns a core.
    Spin,
    /// Spin a few thousand rounds, then yield the core between looks.
    #[default]
    SpinThenYield,
    /// Spin briefly, then sleep with exponential backoff up to 1 ms.
    Sleep,
}

impl WaitStrategy {
    /// Parses the Python-facing name.
    pub fn from_name(name: &str) -> Result<WaitStrategy> {
        match name {
            "spin" => Ok(WaitStrategy::Spin),
            "spin_then_yield" => Ok(WaitStrategy::SpinThenYield),
            "sleep" => Ok(WaitStrategy::Sleep),
            other => Err(Error::InvalidArgument(format!(
                "wait must be 'spin', 'spin_then_yield' or 'sleep', got {other:?}"
            ))),
        }
    }
}

/// What a wait ended with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Readiness {
    /// The ring has what the caller waited for.
    Ready,
    /// The producer closed cleanly and every record has been popped.
    Finished,
    /// The deadline passed first.
    TimedOut,
}

/// The state of one wait: strategy, deadline and when to check liveness.
pub(crate) struct Waiter {
    strategy: WaitStrategy,
    deadline: Option<Instant>,
    rounds: u32,
    sleep: Duration,
    next_liveness_check: Option<Instant>,
}

impl Waiter {
    pub(crate) fn new(strategy: WaitStrategy, deadline: Option<Instant>) -> Waiter {
        Waiter {
            strategy,
            deadline,
            rounds: 0,
            sleep: Duration::from_micros(SLEEP_MICROS_MIN),
            next_liveness_check: None,
        }
    }

    /// Whether the peer's process should be checked now. The first check
    /// comes one interval after the wait starts, so short waits never pay
    /// for reading `/proc`.
    pub(crate) fn liveness_due(&mut self) -> bool {
        let interval = Duration::from_micros(LIVENESS_CHECK_INTERVAL_MICROS);
        let now = Instant::now();
        match self.next_liveness_check {
            None => {
                self.next_liveness_check = Some(now + interval);
                false
            }
            Some(due) if now >= due => {
                self.next_liveness_check = Some(now + interval);
                true
            }
            Some(_) => false,
        }
    }

    /// Whether the deadline has passed.
    pub(crate) fn expired(&self) -> bool {
        self.deadline
            .is_some_and(|deadline| Instant::now() >= deadline)
    }

    /// Waits one step of the strategy.
    pub(crate) fn pause(&mut self) {
        self.rounds = self.rounds.saturating_add(1);
        match self.strategy {
            WaitStrategy::Spin => std::hint::spin_loop(),
            WaitStrategy::SpinThenYield => {
                if self.rounds < SPIN_BEFORE_YIELD_ROUNDS {
                    std::hint::spin_loop();
                } else {
                    std::thread::yield_now();
                }
            }
            WaitStrategy::Sleep => {
                if self.rounds < SPIN_BEFORE_SLEEP_ROUNDS {
                    std::hint::spin_loop();
                } else {
                    let mut sleep = self.sleep;
                    if let Some(deadline) = self.deadline {
                        sleep = sleep.min(deadline.saturating_duration_since(Instant::now()));
                    }
                    std::thread::sleep(sleep);
                    self.sleep = (self.sleep * 2).min(Duration::from_micros(SLEEP_MICROS_MAX));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_unknown_names_are_refused() {
        assert_eq!(WaitStrategy::from_name("spin").unwrap(), WaitStrategy::Spin);
        assert_eq!(
            WaitStrategy::from_name("spin_then_yield").unwrap(),
            WaitStrategy::SpinThenYield
        );
        assert_eq!(
            WaitStrategy::from_name("sleep").unwrap(),
            WaitStrategy::Sleep
        );
        assert!(matches!(
            WaitStrategy::from_name("nap"),
            Err(Error::InvalidArgument(_))
        ));
    }

    #[test]
    fn sleeping_waiter_respects_its_deadline() {
        let start = Instant::now();
        let mut waiter = Waiter::new(WaitStrategy::Sleep, Some(start + Duration::from_millis(20)));
        while !waiter.expired() {
            waiter.pause();
        }
        let waited = start.elapsed();
        assert!(waited >= Duration::from_millis(20));
        assert!(waited < Duration::from_millis(500), "waited {waited:?}");
    }

    #[test]
    fn liveness_is_first_due_one_interval_into_the_wait() {
        let mut waiter = Waiter::new(WaitStrategy::Spin, None);
        assert!(!waiter.liveness_due());
        std::thread::sleep(Duration::from_micros(LIVENESS_CHECK_INTERVAL_MICROS + 500));
        assert!(waiter.liveness_due());
        assert!(!waiter.liveness_due());
    }
}
