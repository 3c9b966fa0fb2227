//! `rill doctor`: the seed's FAQ answered with the numbers of the job's last run.
//!
//! `rill run` leaves a digest of each run in `<job dir>/.rill/last-run.json` (also when
//! the run failed): counters, latency and async IO-time percentiles, the stalls the
//! monitor saw, the memory trend and the outcome. `diagnose` reads it together with the
//! checkpoint history and the job's config and answers, in the FAQ's order:
//!
//! 1. A checkpoint fails or is slow: the state backend (the log: write and sync time,
//!    throughput, storage errors), the timeout (the longest checkpoint against it),
//!    blocking calls in operators (stalls), plus alignment and the overhead C/T.
//! 2. Async IO is slow: the capacity (N against λ·t, time spent full), the IO time (t,
//!    timeouts, retries, the breaker), and memory (resident growth over the run).
//! 3. Is an operator blocking its core, or is the CPU taken: every stall by operator and
//!    cause, and how long each core's thread waited for its CPU over the run. A stall is
//!    called a blocking call only when its thread slept in a system call; one whose
//!    thread was runnable and waited for a CPU is contention, with the advice for that
//!    (fewer cores than the machine has, isolated cores, less spinning).
//!
//! Everything here is pure except `write_digest` / `read_digest`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::checkpoint::history::{Entry, State};
use crate::config::{JobConfig, PipelineKind};
use crate::metrics::JobReport;
use crate::monitor::stall::{Stall, StallCause};
use crate::monitor::{CoreSched, MemoryTrend, MonitorOutcome};

/// The digest's schema name.
pub const SCHEMA: &str = "rill.run-digest.v1";

/// Where `rill run` leaves the digest of the last run of the job in `job_dir`.
pub fn digest_path(job_dir: &Path) -> PathBuf {
    job_dir.join(".rill").join("last-run.json")
}

/// Percentiles of one histogram, ms.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    /// Samples.
    pub samples: u64,
    /// Mean.
    pub mean_ms: f64,
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Highest.
    pub max_ms: f64,
}

impl Percentiles {
    fn of(h: &hdrhistogram::Histogram<u64>) -> Option<Self> {
        (!h.is_empty()).then(|| Self {
            samples: h.len(),
            mean_ms: h.mean() / 1e6,
            p50_ms: h.value_at_quantile(0.5) as f64 / 1e6,
            p99_ms: h.value_at_quantile(0.99) as f64 / 1e6,
            p999_ms: h.value_at_quantile(0.999) as f64 / 1e6,
            max_ms: h.max() as f64 / 1e6,
        })
    }
}

/// What `rill run` records of one run for `rill doctor`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunDigest {
    /// `SCHEMA`.
    pub schema: String,
    /// When the run started, ms since the Unix epoch.
    pub started_unix_ms: u64,
    /// How long it ran, s.
    pub elapsed_s: f64,
    /// Cores it ran on.
    pub cores: usize,
    /// "done", "stopped" or "failed".
    pub outcome: String,
    /// The error that ended a failed run.
    pub error: Option<String>,
    /// Restarts before the last attempt.
    pub restarts: u32,
    /// Counters summed over cores.
    pub counters: BTreeMap<String, u64>,
    /// End-to-end latency at the sinks.
    pub latency: Option<Percentiles>,
    /// Async request time, issue to completion.
    pub io_time: Option<Percentiles>,
    /// Stalls of the last attempt.
    pub stalls: Vec<Stall>,
    /// The stall threshold, ms (`None`: the detector was off).
    pub stall_threshold_ms: Option<f64>,
    /// Resident memory over the run.
    pub memory: Option<MemoryTrend>,
    /// Each core's thread as the scheduler saw it over the last attempt (empty: not
    /// known).
    #[serde(default)]
    pub sched: Vec<CoreSched>,
    /// The newest checkpoint complete in the job's checkpoint directory when the run
    /// ended (`None`: no checkpointing, or none complete). A later run that finds the
    /// directory gone refuses to start over without `--fresh`.
    #[serde(default)]
    pub newest_checkpoint: Option<u64>,
}

impl RunDigest {
    /// The digest of a run that returned `report`.
    pub fn of_report(r: &JobReport, started_unix_ms: u64) -> Self {
        Self {
            schema: SCHEMA.into(),
            started_unix_ms,
            elapsed_s: r.elapsed.as_secs_f64(),
            cores: r.shards.len(),
            outcome: if r.stopped { "stopped" } else { "done" }.into(),
            error: None,
            restarts: r.restarts,
            counters: r.counters.clone(),
            latency: Percentiles::of(&r.latency),
            io_time: Percentiles::of(&r.io_time),
            stalls: r.monitor.stalls.clone(),
            stall_threshold_ms: r.monitor.stall_threshold_ms,
            memory: Some(r.monitor.memory.clone()),
            sched: r.monitor.sched.clone(),
            newest_checkpoint: None,
        }
    }

    /// The digest of a run that failed with `error`, with what its monitor saw.
    pub fn of_failure(
        error: &str,
        seen: Option<MonitorOutcome>,
        started_unix_ms: u64,
        elapsed_s: f64,
        cores: usize,
    ) -> Self {
        let seen = seen.unwrap_or_default();
        Self {
            schema: SCHEMA.into(),
            started_unix_ms,
            elapsed_s,
            cores,
            outcome: "failed".into(),
            error: Some(error.to_string()),
            stall_threshold_ms: seen.stall_threshold_ms,
            stalls: seen.stalls,
            memory: Some(seen.memory),
            sched: seen.sched,
            ..Self::default()
        }
    }

    fn counter(&self, name: &str) -> u64 {
        self.counters.get(name).copied().unwrap_or(0)
    }
}

/// Writes `d` to `digest_path(job_dir)`.
pub fn write_digest(job_dir: &Path, d: &RunDigest) -> std::io::Result<PathBuf> {
    let path = digest_path(job_dir);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let tmp = path.with_extension("json.tmp");
    std::fs::write(
        &tmp,
        serde_json::to_vec_pretty(d).map_err(std::io::Error::other)?,
    )?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

/// Reads the digest of the last run of the job in `job_dir`.
pub fn read_digest(job_dir: &Path) -> Result<RunDigest, String> {
    let path = digest_path(job_dir);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            format!(
                "{}: no run recorded; run the job first (`rill run {}`), then ask again",
                path.display(),
                job_dir.display()
            )
        } else {
            format!("{}: {e}", path.display())
        }
    })?;
    let d: RunDigest =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    if d.schema != SCHEMA {
        return Err(format!(
            "{}: schema {:?}, this rill reads {SCHEMA:?}; run the job again",
            path.display(),
            d.schema
        ));
    }
    Ok(d)
}

/// How an answer came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// The question does not apply to this job.
    NotApplicable,
    /// Nothing wrong in the numbers.
    Ok,
    /// Worth a look.
    Warn,
    /// The likely cause of trouble.
    Problem,
}

/// One FAQ question answered.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Answer {
    /// The FAQ's question.
    pub question: &'static str,
    /// The overall verdict (the worst of the findings).
    pub verdict: Verdict,
    /// What the numbers say, one line each, each with its own verdict.
    pub findings: Vec<(Verdict, String)>,
}

impl Answer {
    fn new(question: &'static str) -> Self {
        Self {
            question,
            verdict: Verdict::NotApplicable,
            findings: Vec::new(),
        }
    }

    fn say(&mut self, v: Verdict, text: impl Into<String>) {
        self.verdict = self.verdict.max(v);
        self.findings.push((v, text.into()));
    }
}

impl fmt::Display for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} [{}]", self.question, label(self.verdict))?;
        for (v, text) in &self.findings {
            writeln!(f, "  {} {text}", mark(*v))?;
        }
        Ok(())
    }
}

fn label(v: Verdict) -> &'static str {
    match v {
        Verdict::NotApplicable => "n/a",
        Verdict::Ok => "ok",
        Verdict::Warn => "look",
        Verdict::Problem => "problem",
    }
}

fn mark(v: Verdict) -> &'static str {
    match v {
        Verdict::NotApplicable => "-",
        Verdict::Ok => "ok  ",
        Verdict::Warn => "look",
        Verdict::Problem => "FIX ",
    }
}

/// Checkpoints that took longer than this share of the timeout are a warning.
const TIMEOUT_SHARE_WARN: f64 = 0.5;
/// Overhead C/T above this is a warning.
const OVERHEAD_WARN: f64 = 0.1;
/// The async operator full for more than this share of the run is the bottleneck.
const FULL_SHARE_PROBLEM: f64 = 0.2;
/// Resident growth above this over the run (and over 1 MiB/min) suggests a leak.
const MEMORY_GROWTH_WARN: f64 = 0.25;
/// A core whose thread waited for its CPU this share of the run shares the CPU.
const CPU_WAIT_WARN: f64 = 0.05;
/// What to do about CPU contention.
const CONTENTION_ADVICE: &str = "give the job fewer cores than the machine has (leave CPUs \
     for the rest), isolate its cores (isolcpus=/nohz_full= or a cpuset of their own), and \
     keep the spin low (spin_adaptive = true, a lower spin_before_park_us in \
     cores/<cpu>.toml)";

/// Answers the FAQ for the run `d` of `job`, with `history` the job's checkpoint
/// history (every run).
pub fn diagnose(d: &RunDigest, job: &JobConfig, history: &[Entry]) -> Vec<Answer> {
    vec![checkpoints(d, job, history), async_io(d, job), blocking(d)]
}

fn ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0} ms")
    } else {
        format!("{v:.1} ms")
    }
}

fn mib(bytes: f64) -> String {
    format!("{:.1} MiB", bytes / (1024.0 * 1024.0))
}

fn checkpoints(d: &RunDigest, job: &JobConfig, history: &[Entry]) -> Answer {
    let mut a = Answer::new(
        "Checkpoints fail or are slow: the state backend, the timeout, or a blocking call?",
    );
    let Some(cfg) = &job.checkpoint else {
        a.say(
            Verdict::NotApplicable,
            "checkpointing is off (job.toml has no [checkpoint] table)",
        );
        return a;
    };
    let run: Vec<&Entry> = history
        .iter()
        .filter(|e| e.triggered_unix_ms >= d.started_unix_ms)
        .collect();
    let done: Vec<&Entry> = run
        .iter()
        .copied()
        .filter(|e| e.state == State::Complete)
        .collect();
    let failed: Vec<&Entry> = run
        .iter()
        .copied()
        .filter(|e| e.state == State::Failed)
        .collect();
    if run.is_empty() {
        a.say(
            Verdict::Warn,
            format!(
                "no checkpoint was triggered in the last run ({:.1} s; interval {})",
                d.elapsed_s,
                cfg.interval_ms
                    .map_or("unset".into(), |i| format!("{i} ms"))
            ),
        );
    } else if failed.is_empty() {
        a.say(
            Verdict::Ok,
            format!(
                "{} checkpoints completed in the last run, none failed",
                done.len()
            ),
        );
    } else {
        a.say(
            Verdict::Problem,
            format!(
                "{} of {} checkpoints failed in the last run (tolerable_failures = {})",
                failed.len(),
                run.len(),
                cfg.tolerable_failures
            ),
        );
        for e in failed.iter().rev().take(3) {
            a.say(
                Verdict::Problem,
                format!(
                    "checkpoint {} failed after {}: {}",
                    e.id,
                    ms(e.duration_ms),
                    e.failure.as_deref().unwrap_or("no reason recorded")
                ),
            );
        }
    }
    let earlier_failed = history
        .iter()
        .filter(|e| e.state == State::Failed && e.triggered_unix_ms < d.started_unix_ms)
        .count();
    if earlier_failed > 0 {
        a.say(
            Verdict::Warn,
            format!("{earlier_failed} checkpoints failed in earlier runs (`rill checkpoints` lists them)"),
        );
    }

    // The state backend: the asynchronous part is the log append and its sync.
    let max_by = |f: fn(&Entry) -> f64| done.iter().map(|e| f(e)).fold(0.0f64, f64::max);
    let median_by = |f: fn(&Entry) -> f64| {
        let mut v: Vec<f64> = done.iter().map(|e| f(e)).collect();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    };
    if !done.is_empty() {
        let async_max = max_by(|e| e.async_ms);
        let written: f64 = done.iter().map(|e| e.bytes_incremental as f64).sum();
        let async_total: f64 = done.iter().map(|e| e.async_ms).sum();
        let rate = if async_total > 0.0 {
            format!(", {}/s while writing", mib(written / (async_total / 1e3)))
        } else {
            String::new()
        };
        let storage_errors = failed.iter().any(|e| {
            e.failure.as_deref().is_some_and(|f| {
                let f = f.to_lowercase();
                f.contains("storage")
                    || f.contains("fsync")
                    || f.contains("i/o")
                    || f.contains("log")
            })
        });
        a.say(
            if storage_errors {
                Verdict::Problem
            } else {
                Verdict::Ok
            },
            format!(
                "state backend (the log in {}): write + sync p50 {} max {}; {} written{rate}{}",
                cfg.dir.display(),
                ms(median_by(|e| e.async_ms)),
                ms(async_max),
                mib(written),
                if storage_errors {
                    "; a failure above names the storage"
                } else {
                    ""
                }
            ),
        );
        let sync_max = max_by(|e| e.sync_ms);
        a.say(
            if sync_max > cfg.timeout_ms as f64 * 0.1 {
                Verdict::Warn
            } else {
                Verdict::Ok
            },
            format!(
                "synchronous part (the barrier freezes the key groups; records wait): p50 {} \
                 max {}; archiving after the barrier, in slices between records: p50 {}{}",
                ms(median_by(|e| e.sync_ms)),
                ms(sync_max),
                ms(median_by(|e| e.archive_ms)),
                if job.checkpoint.as_ref().is_some_and(|c| !c.incremental) {
                    " (incremental = true archives only changed keys)"
                } else {
                    ""
                }
            ),
        );
        // The timeout.
        let longest = max_by(|e| e.duration_ms);
        let share = longest / cfg.timeout_ms as f64;
        a.say(
            if share > TIMEOUT_SHARE_WARN {
                Verdict::Warn
            } else {
                Verdict::Ok
            },
            format!(
                "timeout: the longest checkpoint took {} of the {} ms timeout ({:.0}%)",
                ms(longest),
                cfg.timeout_ms,
                share * 100.0
            ),
        );
        // Alignment.
        let align = max_by(|e| e.alignment_ms);
        let dominated = align > 0.5 * longest && align > 10.0;
        a.say(
            if dominated { Verdict::Warn } else { Verdict::Ok },
            format!(
                "barrier alignment: p50 {} max {}{}",
                ms(median_by(|e| e.alignment_ms)),
                ms(align),
                if dominated {
                    " — most of the checkpoint: backpressure holds barriers; unaligned = true lets them overtake"
                } else {
                    ""
                }
            ),
        );
        // Overhead C/T.
        if let Some(t) = cfg.interval_ms.filter(|t| *t > 0) {
            let c = median_by(|e| e.duration_ms);
            let overhead = c / t as f64;
            a.say(
                if overhead > OVERHEAD_WARN { Verdict::Warn } else { Verdict::Ok },
                format!(
                    "overhead C/T = {} / {t} ms = {:.1}% of the time (model 4.1; `rill-perf tune` picks T)",
                    ms(c),
                    overhead * 100.0
                ),
            );
        }
    }
    // Blocking calls delay barriers: stalls whose thread slept in an operator.
    let blocking: Vec<&Stall> = d
        .stalls
        .iter()
        .filter(|s| s.operator.is_some() && is_blocking(s.cause))
        .collect();
    let contended = d
        .stalls
        .iter()
        .filter(|s| s.cause == StallCause::Contention)
        .count();
    if contended > 0 {
        a.say(
            Verdict::Warn,
            format!(
                "CPU contention: {contended} stalls where the cores' CPUs were taken by other \
                 processes delayed barriers behind them; no operator blocked — {CONTENTION_ADVICE}"
            ),
        );
    }
    match (d.stall_threshold_ms, blocking.is_empty()) {
        (None, _) => a.say(
            Verdict::Warn,
            "blocking calls: the stall detector was off ([diagnostics] stall_threshold_ms = 0)",
        ),
        (Some(t), true) => a.say(
            Verdict::Ok,
            format!(
                "blocking calls: no operator slept in a call on its core longer than {t:.0} ms"
            ),
        ),
        (Some(_), false) => {
            let worst = blocking
                .iter()
                .max_by(|x, y| x.duration_ms.total_cmp(&y.duration_ms))
                .expect("not empty");
            a.say(
                Verdict::Problem,
                format!(
                    "blocking calls: {} stalls in operators delay every barrier behind them; the longest: {}",
                    blocking.len(),
                    worst.describe()
                ),
            );
        }
    }
    a
}

fn async_io(d: &RunDigest, job: &JobConfig) -> Answer {
    let mut a = Answer::new("Async IO is slow: the capacity, the IO time, or memory?");
    let partitions = d.counter("async_partitions");
    if partitions == 0 || d.counter("async_attempts") == 0 {
        a.say(
            Verdict::NotApplicable,
            "the job has no async operator (or it issued nothing)",
        );
        memory(&mut a, d);
        return a;
    }
    let completed = d.counter("async_completed");
    let io = d.io_time.clone().unwrap_or_default();
    let t_s = io.mean_ms / 1e3;
    // Arrivals: the offered rate when the job's generator sets one (a capacity-bound
    // operator throttles its input, so the measured rate understates the demand), in
    // requests per source record; otherwise the measured request rate.
    let requests = d
        .counter("async_attempts")
        .saturating_sub(d.counter("async_retries")) as f64;
    let measured = requests / d.elapsed_s.max(1e-9);
    let per_record = requests / d.counter("source_records").max(1) as f64;
    let lambda = offered_eps(job).map_or(measured, |r| (r * per_record).max(measured));
    let capacity = match job.async_io.as_ref().map(|c| &c.capacity) {
        Some(crate::config::asyncio::CapacitySetting::Auto(_)) => {
            d.counter("async_capacity_auto_max").max(1) as f64
        }
        _ => d.counter("async_capacity_start") as f64 / partitions as f64,
    };
    let needed = lambda * t_s / partitions as f64;
    let bound = capacity * partitions as f64 / t_s.max(1e-12);
    let full_share =
        d.counter("async_full_us") as f64 / 1e6 / (d.elapsed_s * partitions as f64).max(1e-9);
    let verdict = if full_share > FULL_SHARE_PROBLEM || needed > capacity {
        Verdict::Problem
    } else if needed * 1.5 > capacity {
        Verdict::Warn
    } else {
        Verdict::Ok
    };
    a.say(
        verdict,
        format!(
            "capacity: N = {capacity:.0} per partition × {partitions} partitions; arrivals λ = {lambda:.0}/s, \
             IO time t = {} → needed N ≥ λ·t/partitions = {needed:.1} (model 4.2: at most {bound:.0} requests/s); \
             full {:.0}% of the time{}",
            ms(io.mean_ms),
            full_share * 100.0,
            if verdict == Verdict::Problem {
                format!(
                    " — raise [async] capacity to about {:.0} (or `async_capacity` in the core \
                     files: `rill-perf tune` measures and writes it)",
                    (needed * 1.5).ceil().max(capacity + 1.0)
                )
            } else {
                String::new()
            }
        ),
    );
    a.say(
        if io.p99_ms > 10.0 * io.p50_ms.max(1e-6) {
            Verdict::Warn
        } else {
            Verdict::Ok
        },
        format!(
            "IO time: p50 {} p99 {} p99.9 {} max {} over {completed} requests{}",
            ms(io.p50_ms),
            ms(io.p99_ms),
            ms(io.p999_ms),
            ms(io.max_ms),
            if io.p99_ms > 10.0 * io.p50_ms.max(1e-6) {
                " — a heavy tail: the service, not rill, sets the latency"
            } else {
                ""
            }
        ),
    );
    let (timeouts, retries) = (d.counter("async_timeouts"), d.counter("async_retries"));
    let (opened, rejected) = (
        d.counter("async_breaker_opened"),
        d.counter("async_breaker_rejected"),
    );
    let timeout_ms = job.async_io.as_ref().map_or(0, |c| c.timeout_ms);
    a.say(
        if timeouts > 0 || opened > 0 { Verdict::Warn } else { Verdict::Ok },
        format!(
            "failures: {timeouts} timeouts (timeout {timeout_ms} ms), {retries} retries, breaker opened \
             {opened} times and failed {rejected} requests fast; {} dropped, {} fallbacks",
            d.counter("async_dropped"),
            d.counter("async_fallbacks")
        ),
    );
    memory(&mut a, d);
    a
}

/// The rate the job's generator offers, events/s (`None`: the input is not generated).
fn offered_eps(job: &JobConfig) -> Option<f64> {
    if !job.builtin().is_some_and(PipelineKind::has_generator) {
        return None;
    }
    let generator = job.generator.clone().unwrap_or_default().rate_eps;
    let nexmark = job.nexmark.as_ref().and_then(|n| n.event_rate_eps);
    Some(nexmark.unwrap_or(generator) as f64)
}

fn memory(a: &mut Answer, d: &RunDigest) {
    let Some(m) = d.memory.as_ref().filter(|m| m.samples >= 2) else {
        a.say(
            Verdict::NotApplicable,
            "memory: too short a run to see a trend (sampled once a second)",
        );
        return;
    };
    let growth = m.last_bytes as f64 / m.first_bytes.max(1) as f64 - 1.0;
    let per_min = m.slope_bytes_per_s * 60.0;
    let leak = growth > MEMORY_GROWTH_WARN && per_min > 1024.0 * 1024.0;
    a.say(
        if leak { Verdict::Warn } else { Verdict::Ok },
        format!(
            "memory: resident {} → {} (peak {}) over {:.0} s, trend {}/min{}",
            mib(m.first_bytes as f64),
            mib(m.last_bytes as f64),
            mib(m.peak_bytes as f64),
            m.span_s,
            mib(per_min),
            if leak {
                " — growing steadily: state without a TTL, or requests held by a slow service?"
            } else {
                ""
            }
        ),
    );
}

fn is_blocking(c: StallCause) -> bool {
    matches!(c, StallCause::Blocking | StallCause::DiskWait)
}

fn blocking(d: &RunDigest) -> Answer {
    let mut a = Answer::new("Is an operator blocking its core, or is the CPU taken?");
    cpu_wait(&mut a, d);
    let Some(t) = d.stall_threshold_ms else {
        a.say(
            Verdict::NotApplicable,
            "the stall detector was off ([diagnostics] stall_threshold_ms = 0)",
        );
        return a;
    };
    if d.stalls.is_empty() {
        a.say(
            Verdict::Ok,
            format!("no core stayed longer than {t:.0} ms in one round of its loop"),
        );
        return a;
    }
    // Contention: one finding for the whole run, whatever operators it hit.
    let contention: Vec<&Stall> = d
        .stalls
        .iter()
        .filter(|s| s.cause == StallCause::Contention)
        .collect();
    if !contention.is_empty() {
        let longest = contention.iter().map(|s| s.duration_ms).fold(0.0, f64::max);
        let waited: f64 = contention.iter().filter_map(|s| s.run_delay_ms).sum();
        let switches: u64 = contention.iter().filter_map(|s| s.involuntary).sum();
        let cpus: std::collections::BTreeSet<usize> = contention.iter().map(|s| s.cpu).collect();
        a.say(
            Verdict::Warn,
            format!(
                "CPU contention: {} stalls on CPU {} (longest {}), the threads runnable but \
                 waiting {} for a CPU with {switches} involuntary switches: other processes \
                 took the cores' CPUs; no operator blocked — {CONTENTION_ADVICE}",
                contention.len(),
                cpus.iter()
                    .map(|c| c.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                ms(longest),
                ms(waited),
            ),
        );
    }
    let mut by_op: BTreeMap<(String, StallCause), (usize, f64)> = BTreeMap::new();
    for s in d
        .stalls
        .iter()
        .filter(|s| s.cause != StallCause::Contention)
    {
        let key = s
            .operator
            .clone()
            .unwrap_or_else(|| "(the loop, outside operators)".into());
        let e = by_op.entry((key, s.cause)).or_default();
        e.0 += 1;
        e.1 = e.1.max(s.duration_ms);
    }
    for ((op, cause), (n, longest)) in by_op {
        let in_op = !op.starts_with('(');
        let v = match (in_op, cause) {
            (true, StallCause::Blocking | StallCause::DiskWait) => Verdict::Problem,
            _ => Verdict::Warn,
        };
        a.say(
            v,
            format!(
                "{}: {n} stalls, longest {}; {}{}",
                if in_op { format!("operator `{op}`") } else { op.clone() },
                ms(longest),
                cause.explain(),
                match (in_op, cause) {
                    (true, StallCause::Blocking | StallCause::DiskWait) =>
                        " — a blocking call: move it to an async operator (it runs on the core's io_uring)",
                    (true, StallCause::Computation) =>
                        " — split the work or move it off the record path",
                    _ => "",
                }
            ),
        );
    }
    a
}

/// How long each core's thread waited for its CPU over the run.
fn cpu_wait(a: &mut Answer, d: &RunDigest) {
    if d.sched.is_empty() {
        return;
    }
    let worst = d
        .sched
        .iter()
        .max_by(|x, y| x.wait_share().total_cmp(&y.wait_share()))
        .expect("not empty");
    let each = d
        .sched
        .iter()
        .map(|c| {
            format!(
                "CPU {} waited {:.1}% (ran {:.0}%)",
                c.cpu,
                c.wait_share() * 100.0,
                c.run_share() * 100.0
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    if worst.wait_share() >= CPU_WAIT_WARN {
        a.say(
            Verdict::Warn,
            format!(
                "CPU contention: the cores' threads were runnable but waiting for their CPU \
                 ({each} of the run; run-queue delay from the kernel's schedstat) — \
                 {CONTENTION_ADVICE}"
            ),
        );
    } else {
        a.say(
            Verdict::Ok,
            format!("the cores had their CPUs: {each} of the run waiting for them"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::protocol::TriggerKind;
    use crate::config::CheckpointConfig;
    use crate::monitor::stall::ThreadState;

    fn entry(id: u64, state: State, duration_ms: f64) -> Entry {
        Entry {
            state,
            triggered_unix_ms: 2_000 + id,
            duration_ms,
            alignment_ms: 1.0,
            sync_ms: 2.0,
            async_ms: 10.0,
            bytes_full: 1 << 20,
            bytes_incremental: 1 << 20,
            failure: (state == State::Failed).then(|| {
                "expired after 1000 ms: core 1 did not ack (waiting for operator `count` 0)"
                    .to_string()
            }),
            ..Entry::triggered(id, TriggerKind::Periodic)
        }
    }

    fn digest() -> RunDigest {
        RunDigest {
            schema: SCHEMA.into(),
            started_unix_ms: 2_000,
            elapsed_s: 10.0,
            cores: 2,
            outcome: "done".into(),
            stall_threshold_ms: Some(20.0),
            ..RunDigest::default()
        }
    }

    fn find<'a>(a: &'a Answer, needle: &str) -> &'a (Verdict, String) {
        a.findings
            .iter()
            .find(|(_, t)| t.contains(needle))
            .unwrap_or_else(|| panic!("no finding with {needle:?} in {a}"))
    }

    #[test]
    fn without_checkpointing_or_async_the_questions_do_not_apply() {
        let answers = diagnose(&digest(), &JobConfig::default(), &[]);
        assert_eq!(answers.len(), 3);
        assert_eq!(answers[0].verdict, Verdict::NotApplicable);
        assert_eq!(answers[1].verdict, Verdict::NotApplicable);
        assert_eq!(answers[2].verdict, Verdict::Ok);
    }

    #[test]
    fn a_failed_checkpoint_is_named_with_its_reason_and_earlier_runs_are_counted() {
        let job = JobConfig {
            checkpoint: Some(CheckpointConfig {
                interval_ms: Some(1_000),
                timeout_ms: 1_000,
                ..CheckpointConfig::default()
            }),
            ..JobConfig::default()
        };
        let mut old = entry(1, State::Failed, 1_000.0);
        old.triggered_unix_ms = 1_000; // before this run
        let history = vec![
            old,
            entry(2, State::Complete, 800.0),
            entry(3, State::Failed, 1_000.0),
        ];
        let a = &diagnose(&digest(), &job, &history)[0];
        assert_eq!(a.verdict, Verdict::Problem);
        assert!(find(a, "checkpoint 3 failed")
            .1
            .contains("core 1 did not ack"));
        assert_eq!(find(a, "earlier runs").0, Verdict::Warn);
        // 800 ms of a 1000 ms timeout.
        assert_eq!(find(a, "timeout:").0, Verdict::Warn);
        assert!(find(a, "timeout:").1.contains("80%"));
        // C/T = 800 / 1000.
        assert!(find(a, "C/T").1.contains("80.0%"));
    }

    #[test]
    fn a_stall_in_an_operator_is_a_blocking_call_for_both_questions() {
        let mut d = digest();
        d.stalls.push(Stall {
            core: 1,
            cpu: 1,
            operator: Some("enrich".into()),
            partition: Some(0),
            duration_ms: 120.0,
            at_ms: 500.0,
            thread: ThreadState::Sleeping,
            cause: StallCause::Blocking,
            run_delay_ms: Some(0.0),
            involuntary: Some(0),
            voluntary: Some(1),
        });
        let job = JobConfig {
            checkpoint: Some(CheckpointConfig::default()),
            ..JobConfig::default()
        };
        let answers = diagnose(&d, &job, &[entry(1, State::Complete, 5.0)]);
        assert_eq!(find(&answers[0], "blocking calls").0, Verdict::Problem);
        assert!(find(&answers[0], "blocking calls").1.contains("`enrich`"));
        assert_eq!(answers[2].verdict, Verdict::Problem);
        assert!(find(&answers[2], "operator `enrich`")
            .1
            .contains("async operator"));
    }

    fn contended_stall(core: usize, op: &str) -> Stall {
        Stall {
            core,
            cpu: core,
            operator: Some(op.into()),
            partition: Some(0),
            duration_ms: 30.0,
            at_ms: 100.0 * core as f64,
            thread: ThreadState::Running,
            cause: StallCause::Contention,
            run_delay_ms: Some(24.0),
            involuntary: Some(7),
            voluntary: Some(0),
        }
    }

    #[test]
    fn contention_stalls_in_operators_are_contention_with_its_advice_not_blocking_calls() {
        let mut d = digest();
        for i in 0..100 {
            d.stalls.push(contended_stall(i % 2, "count"));
        }
        d.sched = vec![
            CoreSched {
                core: 0,
                cpu: 0,
                span_ms: 5_000.0,
                runtime_ms: 1_000.0,
                run_delay_ms: 1_500.0,
                voluntary: 10,
                involuntary: 4_000,
            },
            CoreSched {
                core: 1,
                cpu: 1,
                span_ms: 5_000.0,
                runtime_ms: 1_000.0,
                run_delay_ms: 100.0,
                voluntary: 10,
                involuntary: 300,
            },
        ];
        let job = JobConfig {
            checkpoint: Some(CheckpointConfig::default()),
            ..JobConfig::default()
        };
        let answers = diagnose(&d, &job, &[entry(1, State::Complete, 5.0)]);
        // Question 1: no blocking call, but contention named.
        assert_eq!(find(&answers[0], "blocking calls").0, Verdict::Ok);
        assert!(find(&answers[0], "CPU contention").1.contains("100 stalls"));
        // Question 3: contention, once, with its advice; nothing to FIX.
        let a = &answers[2];
        assert_eq!(a.verdict, Verdict::Warn, "{a}");
        assert!(!a.to_string().contains("blocking call"), "{a}");
        let stalls = find(a, "100 stalls");
        assert!(stalls.1.contains("CPU contention"), "{}", stalls.1);
        assert!(
            stalls.1.contains("fewer cores than the machine has"),
            "{}",
            stalls.1
        );
        assert!(stalls.1.contains("isolate its cores"), "{}", stalls.1);
        assert!(stalls.1.contains("spin"), "{}", stalls.1);
        assert!(
            stalls.1.contains("waiting 2400 ms for a CPU"),
            "{}",
            stalls.1
        );
        let wait = find(a, "CPU 0 waited 30.0%");
        assert_eq!(wait.0, Verdict::Warn);
        assert_eq!(
            a.findings
                .iter()
                .filter(|(_, t)| t.contains("CPU contention"))
                .count(),
            2,
            "one line for the stalls, one for the run's waiting: {a}"
        );
    }

    #[test]
    fn a_quiet_cpu_is_said_to_be_the_cores_own() {
        let mut d = digest();
        d.sched = vec![CoreSched {
            core: 0,
            cpu: 3,
            span_ms: 5_000.0,
            runtime_ms: 4_900.0,
            run_delay_ms: 5.0,
            voluntary: 1,
            involuntary: 20,
        }];
        let a = &diagnose(&d, &JobConfig::default(), &[])[2];
        assert_eq!(a.verdict, Verdict::Ok, "{a}");
        assert!(find(a, "had their CPUs").1.contains("CPU 3 waited 0.1%"));
    }

    #[test]
    fn a_digest_without_the_new_fields_still_reads() {
        let dir = tempfile::tempdir().unwrap();
        let mut v = serde_json::to_value(digest()).unwrap();
        v.as_object_mut().unwrap().remove("sched");
        v["stalls"] = serde_json::json!([{
            "core": 0, "cpu": 0, "operator": "x", "partition": 0, "duration_ms": 30.0,
            "at_ms": 1.0, "thread": "Running"
        }]);
        std::fs::create_dir_all(dir.path().join(".rill")).unwrap();
        std::fs::write(digest_path(dir.path()), v.to_string()).unwrap();
        let d = read_digest(dir.path()).unwrap();
        assert!(d.sched.is_empty());
        assert_eq!(d.stalls[0].cause, StallCause::Unknown);
    }

    fn async_digest(capacity: u64, io_ms: f64, full_us: u64) -> RunDigest {
        let mut d = digest();
        // 2 partitions, 10 s, 20k requests: λ = 2000/s.
        for (k, v) in [
            ("async_partitions", 2),
            ("async_capacity_start", 2 * capacity),
            ("async_attempts", 20_000),
            ("async_completed", 20_000),
            ("source_records", 20_000),
            ("async_full_us", full_us),
        ] {
            d.counters.insert(k.into(), v);
        }
        d.io_time = Some(Percentiles {
            samples: 20_000,
            mean_ms: io_ms,
            p50_ms: io_ms,
            p99_ms: io_ms * 2.0,
            p999_ms: io_ms * 3.0,
            max_ms: io_ms * 4.0,
        });
        d
    }

    #[test]
    fn the_capacity_answer_follows_littles_law() {
        let job = JobConfig {
            generator: Some(crate::config::GeneratorConfig {
                rate_eps: 2_000,
                ..Default::default()
            }),
            ..JobConfig::default()
        };
        // λ·t / partitions = 2000/s × 10 ms / 2 = 10 per partition.
        let short = &diagnose(&async_digest(8, 10.0, 6_000_000), &job, &[])[1];
        let f = find(short, "capacity:");
        assert_eq!(f.0, Verdict::Problem, "{}", f.1);
        assert!(f.1.contains("needed N ≥ λ·t/partitions = 10.0"), "{}", f.1);
        assert!(
            f.1.contains("raise [async] capacity to about 15"),
            "{}",
            f.1
        );
        let tight = &diagnose(&async_digest(12, 10.0, 0), &job, &[])[1];
        assert_eq!(find(tight, "capacity:").0, Verdict::Warn);
        let ample = &diagnose(&async_digest(100, 10.0, 0), &job, &[])[1];
        assert_eq!(find(ample, "capacity:").0, Verdict::Ok);
        // A capacity-bound run throttles its input: the offered rate is the demand.
        let offered = JobConfig {
            generator: Some(crate::config::GeneratorConfig {
                rate_eps: 8_000,
                ..Default::default()
            }),
            ..JobConfig::default()
        };
        let behind = &diagnose(&async_digest(12, 10.0, 0), &offered, &[])[1];
        assert!(find(behind, "capacity:").1.contains("λ = 8000/s"));
        assert_eq!(find(behind, "capacity:").0, Verdict::Problem);
        assert!(find(ample, "IO time:").1.contains("p50 10.0 ms"));
    }

    #[test]
    fn steady_memory_growth_is_flagged() {
        let mut d = digest();
        let mut m = MemoryTrend::default();
        for t in 0..60 {
            m.add(t as f64, (100 << 20) + t * (2 << 20));
        }
        d.memory = Some(m);
        let a = &diagnose(&d, &JobConfig::default(), &[])[1];
        assert_eq!(find(a, "memory:").0, Verdict::Warn);
        let mut flat = digest();
        let mut m = MemoryTrend::default();
        for t in 0..60 {
            m.add(t as f64, 100 << 20);
        }
        flat.memory = Some(m);
        let a = &diagnose(&flat, &JobConfig::default(), &[])[1];
        assert_eq!(find(a, "memory:").0, Verdict::Ok);
    }

    #[test]
    fn the_digest_round_trips_through_its_file() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read_digest(dir.path())
            .unwrap_err()
            .contains("run the job first"));
        let d = async_digest(8, 1.0, 0);
        write_digest(dir.path(), &d).unwrap();
        assert_eq!(read_digest(dir.path()).unwrap(), d);
    }
}
