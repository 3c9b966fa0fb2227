//! Running a job under its restart strategy: a failure of the running job (an operator,
//! a checkpoint failure beyond `tolerable_failures`, a panicking core) restarts it from
//! the newest complete checkpoint after the delay the strategy decides, until it
//! finishes, is stopped, or the strategy gives up. A failure a restart cannot fix (a full
//! disk, a read-only or forbidden file, an invalid configuration) is not restarted: the
//! run says why and fails.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{Job, StopHandle};
use crate::checkpoint::restart::{RestartDecision, RestartStrategy, Restarts};
use crate::checkpoint::restore::StartFrom;
use crate::config::{JobSpec, RestartConfig, RestartKind};
use crate::dataflow::JobGraph;
use crate::error::Result;
use crate::metrics::JobReport;

/// The restart strategy a job runs under: `[restart]`, or when it is absent,
/// exponential-delay with its defaults for a job with checkpoints and none otherwise.
pub fn restart_strategy(spec: &JobSpec) -> RestartStrategy {
    let cfg = match (&spec.job.restart, &spec.job.checkpoint) {
        (Some(r), _) => r.clone(),
        (None, Some(_)) => RestartConfig::default(),
        (None, None) => return RestartStrategy::None,
    };
    match cfg.strategy {
        RestartKind::None => RestartStrategy::None,
        RestartKind::FixedDelay => RestartStrategy::FixedDelay {
            attempts: cfg.attempts.unwrap_or(3),
            delay: Duration::from_millis(cfg.delay_ms),
        },
        RestartKind::ExponentialDelay => RestartStrategy::ExponentialDelay {
            initial: Duration::from_millis(cfg.initial_backoff_ms),
            max: Duration::from_millis(cfg.max_backoff_ms),
            multiplier: cfg.multiplier,
            reset_after: Duration::from_millis(cfg.reset_after_ms),
            jitter: cfg.jitter,
            attempts: cfg.attempts,
        },
    }
}

/// How a supervised run is controlled from outside.
#[derive(Clone, Default)]
pub struct Control {
    /// The running attempt's stop handle (a signal handler stops or aborts through it).
    pub current: Arc<Mutex<Option<StopHandle>>>,
    /// Set to take a savepoint (see `Job::savepoint_flag`).
    pub savepoint: Arc<AtomicBool>,
    /// The running (or last) attempt's monitor: what it saw survives a failed run.
    pub monitor: Arc<Mutex<Option<crate::monitor::MonitorHandle>>>,
    /// A stop was asked for: it outlives the attempt it reached, so an attempt that
    /// fails and would restart (or is restarting) stops instead.
    stop_requested: Arc<AtomicBool>,
    /// An abort was asked for (a second signal).
    abort_requested: Arc<AtomicBool>,
}

impl Control {
    /// Stops the running attempt (sources end, the pipeline drains) and prevents restarts.
    pub fn stop(&self) {
        self.stop_requested.store(true, Ordering::SeqCst);
        if let Some(h) = self
            .current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            h.stop();
        }
    }

    /// Abandons the running attempt.
    pub fn abort(&self) {
        self.stop_requested.store(true, Ordering::SeqCst);
        self.abort_requested.store(true, Ordering::SeqCst);
        if let Some(h) = self
            .current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            h.abort();
        }
    }

    fn stopped(&self) -> bool {
        self.stop_requested.load(Ordering::SeqCst)
            || self
                .current
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
                .is_some_and(StopHandle::is_stopped)
    }

    /// Makes `h` the running attempt's handle; a stop or abort asked for before it
    /// existed (during a restart delay) reaches it at once.
    fn install(&self, h: StopHandle) {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if self.abort_requested.load(Ordering::SeqCst) {
            h.abort();
        } else if self.stop_requested.load(Ordering::SeqCst) {
            h.stop();
        }
        *current = Some(h);
    }
}

/// Runs `spec` (its graph made by `build`) from `from`, restarting under the job's
/// restart strategy. `note` hears about each restart. The report is the last attempt's,
/// with `restarts` set.
pub fn supervise(
    spec: &JobSpec,
    build: &dyn Fn(&JobSpec) -> Result<JobGraph>,
    from: StartFrom,
    control: &Control,
    mut note: impl FnMut(&str),
) -> Result<JobReport> {
    let seed = std::process::id() as u64 ^ 0x5eed;
    let mut restarts = Restarts::new(restart_strategy(spec), seed);
    let origin = Instant::now();
    let mut from = from;
    let mut count = 0u32;
    loop {
        let graph = build(spec)?;
        let job = Job::new(spec.clone(), graph)
            .start_from(from)
            .with_savepoint_flag(control.savepoint.clone());
        control.install(job.stop_handle());
        *control.monitor.lock().unwrap_or_else(|p| p.into_inner()) = Some(job.monitor_handle());
        let started = origin.elapsed().as_nanos() as u64;
        match job.run() {
            Ok(mut r) => {
                r.restarts = count;
                return Ok(r);
            }
            Err(e) if (e.is_restartable() || e.unfixable().is_some()) && !control.stopped() => {
                let now = origin.elapsed().as_nanos() as u64;
                match restarts.decide(now, started, e.unfixable().as_ref()) {
                    RestartDecision::Restart { after, attempt } => {
                        note(&format!(
                            "the job failed: {e}\n  restart {attempt} in {} ms from the newest \
                             complete checkpoint",
                            after.as_millis()
                        ));
                        // The delay, cut short by a stop: a failed job that was asked to
                        // stop ends with its failure instead of starting again.
                        let until = Instant::now() + after;
                        while !control.stopped() && Instant::now() < until {
                            std::thread::sleep(
                                (until - Instant::now()).min(Duration::from_millis(20)),
                            );
                        }
                        if control.stopped() {
                            note("stopped during the restart delay: not restarting");
                            return Err(e);
                        }
                        count += 1;
                        if from != StartFrom::Fresh || spec.job.checkpoint.is_some() {
                            from = StartFrom::Newest;
                        }
                    }
                    RestartDecision::GiveUp { reason, .. } => {
                        note(&format!("not restarting: {reason}"));
                        return Err(e);
                    }
                }
            }
            Err(e) => return Err(e),
        }
    }
}
