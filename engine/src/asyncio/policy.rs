//! Pure decisions of the async operator: when to retry a failed attempt (fixed delay or
//! exponential backoff) and whether a partition's circuit breaker lets a request through.
//! Times are nanoseconds on the job clock handed in by the caller; nothing here reads a
//! clock or does IO, so every transition is unit-tested below.

use std::time::Duration;

/// How a failed attempt is retried. Retries stop at `max_attempts` attempts in all
/// (the first included) or when the request's timeout would pass first.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RetryStrategy {
    /// Never retry.
    None,
    /// The same delay before every retry.
    Fixed {
        /// Delay before each retry.
        delay: Duration,
        /// Attempts in all, the first included.
        max_attempts: u32,
    },
    /// `initial`, then times `multiplier` per retry, capped at `max`.
    Exponential {
        /// Delay before the first retry.
        initial: Duration,
        /// The largest delay.
        max: Duration,
        /// Growth per retry (>= 1).
        multiplier: f64,
        /// Attempts in all, the first included.
        max_attempts: u32,
    },
}

impl RetryStrategy {
    /// The delay before attempt `attempts + 1`, after `attempts` failed ones; `None`
    /// when no attempt is left.
    pub fn next_delay(&self, attempts: u32) -> Option<Duration> {
        match *self {
            RetryStrategy::None => None,
            RetryStrategy::Fixed {
                delay,
                max_attempts,
            } => (attempts < max_attempts).then_some(delay),
            RetryStrategy::Exponential {
                initial,
                max,
                multiplier,
                max_attempts,
            } => {
                if attempts >= max_attempts {
                    return None;
                }
                let exp = attempts.saturating_sub(1).min(1_000) as i32;
                let ns = initial.as_nanos() as f64 * multiplier.max(1.0).powi(exp);
                let ns = ns.min(max.as_nanos() as f64);
                Some(Duration::from_nanos(ns as u64))
            }
        }
    }
}

/// Circuit-breaker settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker.
    pub failures: u32,
    /// How long it stays open before a probe is let through.
    pub cooldown: Duration,
}

/// Where a breaker is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    /// Requests pass; counts consecutive failures.
    Closed {
        /// Consecutive failures so far.
        failures: u32,
    },
    /// Requests fail fast until `until_ns`.
    Open {
        /// End of the cooldown.
        until_ns: u64,
    },
    /// One probe is out; others fail fast until it settles.
    HalfOpen,
}

/// What the breaker says about a new request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admit {
    /// Issue it.
    Pass,
    /// Issue it as the half-open probe.
    Probe,
    /// Fail it fast.
    Reject,
}

/// One partition's circuit breaker, with its counters.
#[derive(Clone, Debug)]
pub struct Breaker {
    cfg: BreakerConfig,
    state: BreakerState,
    /// Times it opened.
    pub opened: u64,
    /// Requests failed fast.
    pub rejected: u64,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(cfg: BreakerConfig) -> Self {
        Self {
            cfg,
            state: BreakerState::Closed { failures: 0 },
            opened: 0,
            rejected: 0,
        }
    }

    /// The current state.
    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// Whether a request may go out at `now_ns`.
    pub fn admit(&mut self, now_ns: u64) -> Admit {
        match self.state {
            BreakerState::Closed { .. } => Admit::Pass,
            BreakerState::Open { until_ns } if now_ns >= until_ns => {
                self.state = BreakerState::HalfOpen;
                Admit::Probe
            }
            BreakerState::Open { .. } | BreakerState::HalfOpen => {
                self.rejected += 1;
                Admit::Reject
            }
        }
    }

    /// An attempt succeeded.
    pub fn on_success(&mut self) {
        self.state = BreakerState::Closed { failures: 0 };
    }

    /// An attempt failed at `now_ns`.
    pub fn on_failure(&mut self, now_ns: u64) {
        let open = match self.state {
            BreakerState::Closed { failures } => {
                let f = failures + 1;
                self.state = BreakerState::Closed { failures: f };
                f >= self.cfg.failures
            }
            BreakerState::HalfOpen => true,
            BreakerState::Open { .. } => false,
        };
        if open {
            self.opened += 1;
            self.state = BreakerState::Open {
                until_ns: now_ns.saturating_add(self.cfg.cooldown.as_nanos() as u64),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn fixed_delay_retries_until_the_attempts_run_out() {
        let r = RetryStrategy::Fixed {
            delay: Duration::from_millis(5),
            max_attempts: 3,
        };
        assert_eq!(r.next_delay(1), Some(Duration::from_millis(5)));
        assert_eq!(r.next_delay(2), Some(Duration::from_millis(5)));
        assert_eq!(r.next_delay(3), None);
        assert_eq!(RetryStrategy::None.next_delay(1), None);
    }

    #[test]
    fn exponential_backoff_grows_by_the_multiplier_and_caps_at_max() {
        let r = RetryStrategy::Exponential {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(50),
            multiplier: 2.0,
            max_attempts: 6,
        };
        let d: Vec<_> = (1..=6).map(|a| r.next_delay(a)).collect();
        assert_eq!(
            d,
            vec![
                Some(Duration::from_millis(10)),
                Some(Duration::from_millis(20)),
                Some(Duration::from_millis(40)),
                Some(Duration::from_millis(50)),
                Some(Duration::from_millis(50)),
                None
            ]
        );
    }

    #[test]
    fn breaker_opens_after_n_failures_fails_fast_then_probes() {
        let mut b = Breaker::new(BreakerConfig {
            failures: 3,
            cooldown: Duration::from_millis(100),
        });
        assert_eq!(b.admit(0), Admit::Pass);
        b.on_failure(0);
        b.on_failure(1);
        assert_eq!(b.state(), BreakerState::Closed { failures: 2 });
        b.on_success();
        b.on_failure(2);
        b.on_failure(3);
        assert_eq!(b.admit(3), Admit::Pass);
        b.on_failure(4 * MS);
        assert_eq!(b.state(), BreakerState::Open { until_ns: 104 * MS });
        assert_eq!(b.opened, 1);
        assert_eq!(b.admit(50 * MS), Admit::Reject);
        assert_eq!(b.admit(104 * MS), Admit::Probe);
        assert_eq!(b.state(), BreakerState::HalfOpen);
        // Only one probe at a time.
        assert_eq!(b.admit(105 * MS), Admit::Reject);
        assert_eq!(b.rejected, 2);
        // A failed probe re-opens for a full cooldown.
        b.on_failure(110 * MS);
        assert_eq!(b.state(), BreakerState::Open { until_ns: 210 * MS });
        assert_eq!(b.opened, 2);
        assert_eq!(b.admit(210 * MS), Admit::Probe);
        b.on_success();
        assert_eq!(b.state(), BreakerState::Closed { failures: 0 });
        assert_eq!(b.admit(211 * MS), Admit::Pass);
    }
}
