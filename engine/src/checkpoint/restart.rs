//! Restart strategies: whether, and after how long, a failed job is restarted, with
//! Flink's meanings and limits.
//!
//! [`Restarts`] is a pure state machine: the shell reports each job failure with the time
//! it happened and the time the job had last been (re)started, and gets back a
//! [`RestartDecision`]. Jitter comes from a seeded splitmix64 generator, so a run can be
//! replayed from its seed. This module must not sleep, read a clock or restart anything.
//!
//! - `None`: the first failure fails the job.
//! - `FixedDelay`: at most `attempts` restarts over the job's life, each `delay` after its
//!   failure; `attempts = 0` means never restart.
//! - `ExponentialDelay`: the first restart waits `initial`; each further failure
//!   multiplies the backoff by `multiplier`, capped at `max`. A run that lasted at least
//!   `reset_after` without failing sets the backoff back to `initial` and the attempt count
//!   back to zero. The delay handed out is the backoff moved by a uniform jitter in
//!   `[-jitter * backoff, +jitter * backoff]`, never below zero nor above `max`; the
//!   jitter does not feed back into the next backoff. `attempts: None` restarts without
//!   limit, `Some(n)` gives up at the failure after `n` restarts without a reset.
//!
//! Whatever the strategy, a failure a restart cannot fix ([`Unfixable`]: a full disk, a
//! read-only file system, a permission denied, an invalid configuration) gives up at once
//! and says why ([`Restarts::decide`]); the job would only fail the same way again.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::splitmix::SplitMix64;

/// How a failed job is restarted.
#[derive(Clone, Debug, PartialEq)]
pub enum RestartStrategy {
    /// Never restart: the first failure fails the job.
    None,
    /// Restart at most `attempts` times, each after `delay`.
    FixedDelay {
        /// Most restarts over the job's life (0: never restart).
        attempts: u32,
        /// Time from a failure to its restart.
        delay: Duration,
    },
    /// Restart after a backoff that grows with consecutive failures.
    ExponentialDelay {
        /// The backoff of the first restart and of the first after a reset.
        initial: Duration,
        /// The longest backoff (jitter included).
        max: Duration,
        /// What each further failure multiplies the backoff by (at least 1).
        multiplier: f64,
        /// A run at least this long without failing resets backoff and attempts.
        reset_after: Duration,
        /// The jitter's share of the backoff, `0..=1`.
        jitter: f64,
        /// Most restarts between resets; `None`: unlimited.
        attempts: Option<u32>,
    },
}

impl RestartStrategy {
    /// Every way this strategy is invalid, joined with "; ": a multiplier below 1 or not
    /// finite, a jitter outside `0..=1`, an initial backoff above the maximum.
    /// (`FixedDelay { attempts: 0 }` is valid and means no restart.)
    pub fn validate(&self) -> Result<(), String> {
        let RestartStrategy::ExponentialDelay {
            initial,
            max,
            multiplier,
            jitter,
            ..
        } = self
        else {
            return Ok(());
        };
        let mut problems = Vec::new();
        if !(multiplier.is_finite() && *multiplier >= 1.0) {
            problems.push(format!(
                "multiplier must be a finite number of at least 1, got {multiplier}"
            ));
        }
        if !(0.0..=1.0).contains(jitter) {
            problems.push(format!("jitter must be within 0..=1, got {jitter}"));
        }
        if initial > max {
            problems.push(format!(
                "initial backoff {initial:?} exceeds the maximum {max:?}"
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "invalid exponential-delay restart strategy: {}",
                problems.join("; ")
            ))
        }
    }
}

/// What kind of failure a restart cannot fix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnfixableKind {
    /// The file system is full, or the quota used up (ENOSPC, EDQUOT).
    NoSpace,
    /// The file system is mounted read-only (EROFS).
    ReadOnly,
    /// The process may not do it (EACCES, EPERM).
    Denied,
}

/// A failure a restart cannot fix: the restarted job would fail the same way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unfixable {
    /// An OS error on a file that does not go away by itself.
    Os {
        /// Which one.
        kind: UnfixableKind,
        /// The OS error number.
        errno: i32,
        /// What was being done (`"write"`, `"create"`, `"fsync"`, ...).
        op: String,
        /// The file or directory.
        path: PathBuf,
    },
    /// The job's configuration is invalid (the error, which names the file and key).
    Config(String),
}

impl Unfixable {
    /// Classifies OS error `errno` of `op` on `path`: `None` when a restart may help (EIO,
    /// EAGAIN, EINTR, a lost connection, ...).
    pub fn of_os_error(
        errno: i32,
        op: impl Into<String>,
        path: impl Into<PathBuf>,
    ) -> Option<Self> {
        let kind = match errno {
            libc::ENOSPC | libc::EDQUOT => UnfixableKind::NoSpace,
            libc::EROFS => UnfixableKind::ReadOnly,
            libc::EACCES | libc::EPERM => UnfixableKind::Denied,
            _ => return None,
        };
        Some(Unfixable::Os {
            kind,
            errno,
            op: op.into(),
            path: path.into(),
        })
    }
}

impl fmt::Display for Unfixable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unfixable::Os {
                kind,
                errno,
                op,
                path,
            } => {
                let os = std::io::Error::from_raw_os_error(*errno).to_string();
                // "No space left on device (os error 28)" -> "No space left on device"
                let os = os.split(" (os error").next().unwrap_or(&os);
                let fix = match kind {
                    UnfixableKind::NoSpace => {
                        "free space on that file system, or point the job elsewhere"
                    }
                    UnfixableKind::ReadOnly => {
                        "the file system is read-only; point the job at a writable one"
                    }
                    UnfixableKind::Denied => {
                        "give the job's user access, or point the job elsewhere"
                    }
                };
                write!(f, "{os} ({op} of {}); {fix}", path.display())
            }
            Unfixable::Config(e) => write!(f, "the configuration is invalid: {e}"),
        }
    }
}

/// What to do about a failure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RestartDecision {
    /// Restart the job `after` this long.
    Restart {
        /// Time from the failure to the restart.
        after: Duration,
        /// This restart's number, from 1 (since the last reset, for exponential delay).
        attempt: u32,
    },
    /// Do not restart: the job fails.
    GiveUp {
        /// Restarts made before giving up (since the last reset, for exponential delay).
        attempts: u32,
        /// Why, naming the attempts.
        reason: String,
    },
}

/// The restart strategy's state over a job's life; see the module docs for its rules.
#[derive(Clone, Debug)]
pub struct Restarts {
    strategy: RestartStrategy,
    rng: SplitMix64,
    /// Restarts decided (since the last reset, for exponential delay).
    attempts: u32,
    /// The exponential backoff of the last restart, before jitter; `None` before the first
    /// restart and after a reset.
    backoff: Option<Duration>,
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// `d * factor`, capped at `cap`.
fn scale(d: Duration, factor: f64, cap: Duration) -> Duration {
    let ns = d.as_nanos() as f64 * factor;
    if ns >= cap.as_nanos() as f64 {
        cap
    } else {
        Duration::from_nanos(ns as u64)
    }
}

impl Restarts {
    /// The state of `strategy` before any failure, its jitter drawn from `seed`.
    ///
    /// Panics if `strategy` is invalid: validate it with [`RestartStrategy::validate`]
    /// when reading the configuration.
    pub fn new(strategy: RestartStrategy, seed: u64) -> Self {
        if let Err(e) = strategy.validate() {
            panic!("{e}");
        }
        Self {
            strategy,
            rng: SplitMix64(seed),
            attempts: 0,
            backoff: None,
        }
    }

    /// The job failed at `now_ns`, `unfixable` when a restart cannot fix the failure; it
    /// had been running since `started_ns` (its last (re)start). An unfixable failure gives
    /// up at once, whatever the strategy, and counts no attempt.
    pub fn decide(
        &mut self,
        now_ns: u64,
        started_ns: u64,
        unfixable: Option<&Unfixable>,
    ) -> RestartDecision {
        match unfixable {
            Some(u) => RestartDecision::GiveUp {
                attempts: self.attempts,
                reason: format!("{u}; a restart cannot fix this"),
            },
            None => self.on_failure(now_ns, started_ns),
        }
    }

    /// The job failed at `now_ns` in a way a restart may fix; it had been running since
    /// `started_ns` (its last (re)start).
    pub fn on_failure(&mut self, now_ns: u64, started_ns: u64) -> RestartDecision {
        match self.strategy {
            RestartStrategy::None => RestartDecision::GiveUp {
                attempts: 0,
                reason: "the restart strategy is none: 0 restart attempts allowed".into(),
            },
            RestartStrategy::FixedDelay { attempts, delay } => {
                if self.attempts >= attempts {
                    return RestartDecision::GiveUp {
                        attempts: self.attempts,
                        reason: format!(
                            "fixed-delay restart strategy exhausted: {} of {attempts} restart \
                             attempts used",
                            self.attempts
                        ),
                    };
                }
                self.attempts += 1;
                RestartDecision::Restart {
                    after: delay,
                    attempt: self.attempts,
                }
            }
            RestartStrategy::ExponentialDelay {
                initial,
                max,
                multiplier,
                reset_after,
                jitter,
                attempts,
            } => {
                if now_ns.saturating_sub(started_ns) >= nanos(reset_after) {
                    self.attempts = 0;
                    self.backoff = None;
                }
                if let Some(limit) = attempts {
                    if self.attempts >= limit {
                        return RestartDecision::GiveUp {
                            attempts: self.attempts,
                            reason: format!(
                                "exponential-delay restart strategy exhausted: {} of {limit} \
                                 restart attempts used without a run of {reset_after:?}",
                                self.attempts
                            ),
                        };
                    }
                }
                let backoff = match self.backoff {
                    None => initial,
                    Some(last) => scale(last, multiplier, max),
                };
                self.backoff = Some(backoff);
                self.attempts += 1;
                RestartDecision::Restart {
                    after: self.jittered(backoff, jitter, max),
                    attempt: self.attempts,
                }
            }
        }
    }

    /// `backoff` moved uniformly within `±jitter * backoff`, kept within `0..=max`.
    fn jittered(&mut self, backoff: Duration, jitter: f64, max: Duration) -> Duration {
        if jitter == 0.0 {
            return backoff;
        }
        let base = backoff.as_nanos() as f64;
        let offset = (2.0 * self.rng.next_unit() - 1.0) * jitter * base;
        let ns = (base + offset).max(0.0);
        if ns >= max.as_nanos() as f64 {
            max
        } else {
            Duration::from_nanos(ns as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MS: u64 = 1_000_000;

    fn exponential(attempts: Option<u32>, jitter: f64) -> RestartStrategy {
        RestartStrategy::ExponentialDelay {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(1_000),
            multiplier: 2.0,
            reset_after: Duration::from_secs(60),
            jitter,
            attempts,
        }
    }

    fn restart(after_ms: u64, attempt: u32) -> RestartDecision {
        RestartDecision::Restart {
            after: Duration::from_millis(after_ms),
            attempt,
        }
    }

    /// Fails `r` `n` times, each run lasting `run_ns`; the decisions.
    fn fail_n(r: &mut Restarts, n: usize, run_ns: u64) -> Vec<RestartDecision> {
        let mut started = 0;
        (0..n)
            .map(|_| {
                let now = started + run_ns;
                let d = r.on_failure(now, started);
                if let RestartDecision::Restart { after, .. } = d {
                    started = now + nanos(after);
                }
                d
            })
            .collect()
    }

    fn afters(ds: &[RestartDecision]) -> Vec<u64> {
        ds.iter()
            .map(|d| match d {
                RestartDecision::Restart { after, .. } => nanos(*after) / MS,
                RestartDecision::GiveUp { .. } => u64::MAX,
            })
            .collect()
    }

    #[test]
    fn none_gives_up_at_the_first_failure() {
        let mut r = Restarts::new(RestartStrategy::None, 1);
        let d = r.on_failure(10 * MS, 0);
        assert!(
            matches!(d, RestartDecision::GiveUp { attempts: 0, .. }),
            "{d:?}"
        );
    }

    #[test]
    fn fixed_delay_restarts_attempts_times_with_its_delay_then_gives_up() {
        let strategy = RestartStrategy::FixedDelay {
            attempts: 3,
            delay: Duration::from_millis(250),
        };
        let mut r = Restarts::new(strategy, 1);
        let ds = fail_n(&mut r, 4, MS);
        assert_eq!(ds[..3], [restart(250, 1), restart(250, 2), restart(250, 3)]);
        assert!(
            matches!(ds[3], RestartDecision::GiveUp { attempts: 3, .. }),
            "{:?}",
            ds[3]
        );
    }

    #[test]
    fn fixed_delay_with_zero_attempts_never_restarts() {
        let strategy = RestartStrategy::FixedDelay {
            attempts: 0,
            delay: Duration::from_millis(250),
        };
        assert_eq!(strategy.validate(), Ok(()));
        let mut r = Restarts::new(strategy, 1);
        assert!(matches!(
            r.on_failure(MS, 0),
            RestartDecision::GiveUp { attempts: 0, .. }
        ));
    }

    #[test]
    fn fixed_delay_counts_over_the_whole_life_of_the_job() {
        let strategy = RestartStrategy::FixedDelay {
            attempts: 1,
            delay: Duration::ZERO,
        };
        let mut r = Restarts::new(strategy, 1);
        let hour = 3_600_000 * MS;
        assert_eq!(r.on_failure(hour, 0), restart(0, 1));
        let d = r.on_failure(10 * hour, hour);
        assert!(
            matches!(d, RestartDecision::GiveUp { attempts: 1, .. }),
            "{d:?}"
        );
    }

    #[test]
    fn exponential_backoff_starts_at_initial_and_multiplies() {
        let mut r = Restarts::new(exponential(None, 0.0), 1);
        let ds = fail_n(&mut r, 4, MS);
        let want = [
            restart(100, 1),
            restart(200, 2),
            restart(400, 3),
            restart(800, 4),
        ];
        assert_eq!(ds, want);
    }

    #[test]
    fn exponential_backoff_never_exceeds_max() {
        let mut r = Restarts::new(exponential(None, 0.0), 1);
        let ms = afters(&fail_n(&mut r, 10, MS));
        assert_eq!(
            ms,
            [100, 200, 400, 800, 1_000, 1_000, 1_000, 1_000, 1_000, 1_000]
        );
        let mut r = Restarts::new(exponential(None, 1.0), 7);
        assert!(afters(&fail_n(&mut r, 200, MS))
            .iter()
            .all(|ms| *ms <= 1_000));
    }

    #[test]
    fn exponential_backoff_resets_after_a_long_healthy_run() {
        let mut r = Restarts::new(exponential(None, 0.0), 1);
        fail_n(&mut r, 3, MS);
        let started = 10_000 * MS;
        assert_eq!(
            r.on_failure(started + 60_000 * MS, started),
            restart(100, 1)
        );
        assert_eq!(
            r.on_failure(started + 60_001 * MS, started + 60_000 * MS),
            restart(200, 2)
        );
    }

    #[test]
    fn a_run_shorter_than_reset_after_does_not_reset() {
        let mut r = Restarts::new(exponential(None, 0.0), 1);
        fail_n(&mut r, 2, MS);
        let started = 10_000 * MS;
        let d = r.on_failure(started + 60_000 * MS - 1, started);
        assert_eq!(d, restart(400, 3));
    }

    #[test]
    fn exponential_delay_gives_up_after_its_attempts_until_a_reset() {
        let mut r = Restarts::new(exponential(Some(2), 0.0), 1);
        let ds = fail_n(&mut r, 3, MS);
        assert_eq!(ds[..2], [restart(100, 1), restart(200, 2)]);
        assert!(
            matches!(ds[2], RestartDecision::GiveUp { attempts: 2, .. }),
            "{:?}",
            ds[2]
        );
        let mut r = Restarts::new(exponential(Some(2), 0.0), 1);
        fail_n(&mut r, 2, MS);
        assert_eq!(
            r.on_failure(100_000 * MS, 0),
            restart(100, 1),
            "a reset restores attempts"
        );
    }

    #[test]
    fn exponential_delay_without_attempts_is_unlimited() {
        let mut r = Restarts::new(exponential(None, 0.0), 1);
        let ds = fail_n(&mut r, 1_000, MS);
        assert!(ds
            .iter()
            .all(|d| matches!(d, RestartDecision::Restart { .. })));
        assert_eq!(ds[999], restart(1_000, 1_000));
    }

    #[test]
    fn jitter_stays_within_its_share_of_the_backoff() {
        for seed in 0..50 {
            let mut r = Restarts::new(exponential(None, 0.25), seed);
            let ms = afters(&fail_n(&mut r, 3, MS));
            for (got, base) in ms.iter().zip([100u64, 200, 400]) {
                let (lo, hi) = (base - base / 4, base + base / 4);
                assert!(
                    (lo..=hi).contains(got),
                    "seed {seed}: {got} not in {lo}..={hi}"
                );
            }
        }
    }

    #[test]
    fn jitter_varies_with_the_seed_and_replays_from_it() {
        let run = |seed| {
            let mut r = Restarts::new(exponential(None, 0.5), seed);
            fail_n(&mut r, 5, MS)
        };
        assert_eq!(run(42), run(42));
        assert_ne!(run(42), run(43));
    }

    #[test]
    fn full_jitter_never_goes_below_zero_or_above_max() {
        let strategy = RestartStrategy::ExponentialDelay {
            initial: Duration::from_millis(900),
            max: Duration::from_millis(1_000),
            multiplier: 1.0,
            reset_after: Duration::from_secs(60),
            jitter: 1.0,
            attempts: None,
        };
        let mut r = Restarts::new(strategy, 3);
        let ms = afters(&fail_n(&mut r, 500, MS));
        assert!(ms.iter().all(|ms| *ms <= 1_000));
        assert!(ms.contains(&1_000), "the cap is reached");
        assert!(ms.iter().any(|ms| *ms < 450), "the low half is reached");
    }

    #[test]
    fn give_up_message_names_the_attempts() {
        let fixed = RestartStrategy::FixedDelay {
            attempts: 3,
            delay: Duration::ZERO,
        };
        for strategy in [fixed, exponential(Some(3), 0.0)] {
            let mut r = Restarts::new(strategy, 1);
            let last = fail_n(&mut r, 4, MS).pop().unwrap();
            let RestartDecision::GiveUp { attempts, reason } = last else {
                panic!("expected GiveUp, got {last:?}");
            };
            assert_eq!(attempts, 3);
            assert!(reason.contains("3 of 3 restart attempts"), "{reason}");
        }
        let mut r = Restarts::new(RestartStrategy::None, 1);
        let RestartDecision::GiveUp { reason, .. } = r.on_failure(MS, 0) else {
            panic!("none restarts nothing");
        };
        assert!(reason.contains("0 restart attempts"), "{reason}");
    }

    #[test]
    fn validate_rejects_a_multiplier_below_one() {
        for multiplier in [0.5, f64::NAN, f64::INFINITY] {
            let s = RestartStrategy::ExponentialDelay {
                multiplier,
                initial: Duration::from_millis(1),
                max: Duration::from_millis(2),
                reset_after: Duration::ZERO,
                jitter: 0.0,
                attempts: None,
            };
            let err = s.validate().unwrap_err();
            assert!(err.contains("multiplier"), "{err}");
        }
        assert_eq!(exponential(None, 0.0).validate(), Ok(()));
    }

    #[test]
    fn validate_rejects_jitter_outside_zero_to_one() {
        for jitter in [-0.1, 1.1, f64::NAN] {
            let err = exponential(None, jitter).validate().unwrap_err();
            assert!(err.contains("jitter"), "{err}");
        }
        assert_eq!(exponential(None, 1.0).validate(), Ok(()));
    }

    #[test]
    fn validate_rejects_an_initial_backoff_above_max_and_names_every_problem() {
        let s = RestartStrategy::ExponentialDelay {
            initial: Duration::from_secs(2),
            max: Duration::from_secs(1),
            multiplier: 0.5,
            reset_after: Duration::ZERO,
            jitter: 2.0,
            attempts: None,
        };
        let err = s.validate().unwrap_err();
        for word in [
            "multiplier",
            "jitter",
            "initial backoff 2s exceeds the maximum 1s",
        ] {
            assert!(err.contains(word), "{word} missing from {err}");
        }
    }

    #[test]
    #[should_panic(expected = "jitter must be within 0..=1")]
    fn new_panics_on_an_invalid_strategy() {
        Restarts::new(exponential(None, 3.0), 1);
    }

    #[test]
    fn os_errors_a_restart_cannot_fix_are_classified_and_others_are_not() {
        let class = |errno| match Unfixable::of_os_error(errno, "write", "/ck/core-0/0.seg") {
            Some(Unfixable::Os { kind, .. }) => Some(kind),
            _ => None,
        };
        assert_eq!(class(libc::ENOSPC), Some(UnfixableKind::NoSpace));
        assert_eq!(class(libc::EDQUOT), Some(UnfixableKind::NoSpace));
        assert_eq!(class(libc::EROFS), Some(UnfixableKind::ReadOnly));
        assert_eq!(class(libc::EACCES), Some(UnfixableKind::Denied));
        assert_eq!(class(libc::EPERM), Some(UnfixableKind::Denied));
        for transient in [
            libc::EIO,
            libc::EAGAIN,
            libc::EINTR,
            libc::ECONNRESET,
            libc::ETIMEDOUT,
            libc::ENOMEM,
        ] {
            assert_eq!(class(transient), None, "errno {transient}");
        }
    }

    #[test]
    fn engine_errors_are_classified_by_their_cause() {
        use crate::error::{ConfigError, EngineError};
        let os = std::io::Error::from_raw_os_error;
        let kind = |e: &EngineError| match e.unfixable() {
            Some(Unfixable::Os { kind, .. }) => Some(kind),
            Some(Unfixable::Config(_)) => None,
            None => None,
        };
        // A sink's write on a full disk; a read-only output directory; a transient EIO.
        let sink = EngineError::io("write", "/job/out/part-0.csv", os(libc::ENOSPC));
        assert_eq!(kind(&sink), Some(UnfixableKind::NoSpace));
        let ro = EngineError::io("create", "/job/out/part-0.csv", os(libc::EROFS));
        assert_eq!(kind(&ro), Some(UnfixableKind::ReadOnly));
        assert_eq!(
            EngineError::io("read", "/job/input.jsonl", os(libc::EIO)).unfixable(),
            None
        );
        // The checkpoint log, poisoned by a segment it could not preallocate, and the
        // checkpoint failures that carry the cause to the restart strategy.
        let poisoned = rill_storage::Error::Poisoned {
            core: rill_storage::CoreId(0),
            op: rill_storage::IoOp::Create,
            path: "/ck/core-0/0.seg".into(),
            kind: std::io::ErrorKind::Other,
            errno: Some(libc::ENOSPC),
        };
        let u = crate::error::storage_unfixable(&poisoned).expect("ENOSPC is unfixable");
        assert_eq!(
            u.to_string(),
            "No space left on device (create of /ck/core-0/0.seg); free space on that file \
             system, or point the job elsewhere"
        );
        let denied = rill_storage::Error::Io {
            op: rill_storage::IoOp::Create,
            path: "/ck/manifests".into(),
            source: os(libc::EACCES),
        };
        assert_eq!(
            kind(&EngineError::Storage(denied)),
            Some(UnfixableKind::Denied)
        );
        let failing = |unfixable| EngineError::CheckpointsFailing {
            checkpoint: crate::ids::CheckpointId(3),
            consecutive: 1,
            reason: "declined".into(),
            unfixable,
        };
        assert_eq!(failing(Some(u.clone())).unfixable(), Some(u));
        assert_eq!(failing(None).unfixable(), None);
        // Configuration errors; failures of the running job a restart may fix.
        let config = EngineError::Config(ConfigError::Missing {
            file: "/job/job.toml".into(),
            why: "the job".into(),
        });
        assert!(matches!(config.unfixable(), Some(Unfixable::Config(_))));
        let operator = EngineError::Operator {
            operator: "parse".into(),
            partition: 0,
            reason: "boom".into(),
        };
        assert_eq!(operator.unfixable(), None);
    }

    #[test]
    fn an_unfixable_failure_gives_up_at_once_whatever_the_strategy_and_says_why() {
        let full = Unfixable::of_os_error(libc::ENOSPC, "create", "/ck/core-0/0.seg").unwrap();
        let strategies = [
            RestartStrategy::None,
            RestartStrategy::FixedDelay {
                attempts: 3,
                delay: Duration::ZERO,
            },
            exponential(None, 0.1),
        ];
        for strategy in strategies {
            let mut r = Restarts::new(strategy.clone(), 1);
            // A fixable failure first: it restarts (except under `none`).
            let first = r.decide(MS, 0, None);
            let d = r.decide(2 * MS, MS, Some(&full));
            let RestartDecision::GiveUp { attempts, reason } = d else {
                panic!("{strategy:?} restarted after {full}");
            };
            let restarted = matches!(first, RestartDecision::Restart { .. });
            assert_eq!(attempts, u32::from(restarted), "{strategy:?}");
            assert_eq!(
                reason,
                "No space left on device (create of /ck/core-0/0.seg); free space on that \
                 file system, or point the job elsewhere; a restart cannot fix this"
            );
        }
        let config = Unfixable::Config("job.toml: key `x`: bad".into());
        let mut r = Restarts::new(exponential(None, 0.0), 1);
        let RestartDecision::GiveUp { reason, .. } = r.decide(MS, 0, Some(&config)) else {
            panic!("a configuration error restarted");
        };
        assert!(reason.contains("configuration is invalid"), "{reason}");
        // Without an unfixable cause `decide` is `on_failure`.
        assert_eq!(r.decide(MS, 0, None), restart(100, 1));
    }

    #[test]
    fn splitmix64_matches_the_reference_sequence() {
        let mut rng = SplitMix64(0);
        assert_eq!(rng.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(rng.next_u64(), 0x6E78_9E6A_A1B9_65F4);
        assert_eq!(rng.next_u64(), 0x06C4_5D18_8009_454F);
    }

    proptest! {
        /// Whatever the parameters and run lengths, a restart waits at most `max` and
        /// attempt numbers count up by one between resets.
        #[test]
        fn exponential_restarts_stay_within_max(
            initial_ms in 0..1_000u64,
            extra_ms in 0..10_000u64,
            multiplier in 1.0..4.0f64,
            jitter in 0.0..=1.0f64,
            seed in any::<u64>(),
            runs_ms in proptest::collection::vec(0..2_000u64, 1..100),
        ) {
            let max = Duration::from_millis(initial_ms + extra_ms);
            let strategy = RestartStrategy::ExponentialDelay {
                initial: Duration::from_millis(initial_ms),
                max,
                multiplier,
                reset_after: Duration::from_millis(1_000),
                jitter,
                attempts: None,
            };
            let mut r = Restarts::new(strategy, seed);
            let (mut started, mut last_attempt) = (0u64, 0u32);
            for run in runs_ms {
                let now = started + run * MS;
                let RestartDecision::Restart { after, attempt } = r.on_failure(now, started) else {
                    panic!("unlimited attempts gave up");
                };
                prop_assert!(after <= max, "{:?} > {:?}", after, max);
                let want = if run >= 1_000 { 1 } else { last_attempt + 1 };
                prop_assert_eq!(attempt, want);
                last_attempt = attempt;
                started = now + nanos(after);
            }
        }
    }
}
