//! Runs one scenario in-process: the job runs through `rill_engine::runtime::Job` on a
//! thread of its own while the calling thread prints a progress line (stderr, about once
//! a second) and samples the executor threads' CPU time. Nothing here interprets the
//! results; that is `report`'s job.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use rill_engine::app::Ctx;
use rill_engine::config::{JobSpec, PipelineKind};
use rill_engine::metrics::JobReport;
use rill_engine::pipelines;
use rill_engine::runtime::Job;

use crate::machine::{process_cpu_s, this_thread_cpu_s, CpuSampler};
use crate::scenario::{LoadFile, Scenario, Settings, Window};
use crate::scrape::{self, CoreReading, Reading, WindowCount};
use crate::timeline::{self, Interval};

/// Name prefix of the engine's executor threads (`rill-cpuN`).
pub const EXECUTOR_PREFIX: &str = "rill-cpu";

/// CPU time a run used.
#[derive(Clone, Debug, Default)]
pub struct CpuUsage {
    /// CPU seconds by executor thread name (`rill-cpu0`), sampled while it ran.
    pub per_core_s: std::collections::BTreeMap<String, f64>,
    /// CPU seconds of the whole process during the run (getrusage before/after).
    pub process_s: f64,
}

/// Everything one run produced.
pub struct RunOutcome {
    /// The scenario's name.
    pub scenario: String,
    /// Its directory.
    pub scenario_dir: std::path::PathBuf,
    /// The resolved job.
    pub spec: JobSpec,
    /// job.toml overrides applied.
    pub overrides: Vec<String>,
    /// Overrides applied to every core file.
    pub core_sets: Vec<String>,
    /// The engine's report.
    pub report: JobReport,
    /// Per-second latency (empty for pipelines without the timeline sink).
    pub timeline: Vec<Interval>,
    /// CPU time.
    pub cpu: CpuUsage,
    /// Wall time of `Job::run`.
    pub wall: Duration,
    /// When `Job::run` was started, ms since the Unix epoch (to place the engine's
    /// checkpoint times on the run's time axis).
    pub started_unix_ms: f64,
    /// The scenario's load.toml as read.
    pub load_file: LoadFile,
    /// For runs measured over a window of time (flat out, or without latency samples):
    /// what the window saw. `None` for the others, and when the endpoint was off.
    pub window: Option<WindowOutcome>,
    /// The window the run was to be measured over, whether or not it could be.
    pub planned_window: Option<Window>,
}

/// What the measured window of a run saw.
#[derive(Clone, Debug)]
pub struct WindowOutcome {
    /// The window as planned.
    pub window: Window,
    /// The source's events in it, per core.
    pub count: WindowCount,
    /// CPU seconds of each executor (`rill-cpu0`) in the window.
    pub cpu_per_core_s: std::collections::BTreeMap<String, f64>,
}

/// How the progress line is labelled and how long the run is expected to take.
pub struct Progress {
    label: String,
    expected: Option<Duration>,
    enabled: bool,
    /// On a terminal the line is redrawn in place; elsewhere (CI logs) one line per update.
    tty: bool,
}

impl Progress {
    /// A progress line labelled `label` for a run expected to take `expected`.
    pub fn new(label: String, expected: Option<Duration>, enabled: bool) -> Self {
        Self {
            label,
            expected,
            enabled,
            tty: std::io::IsTerminal::is_terminal(&std::io::stderr()),
        }
    }

    /// Runs `f` on a thread of its own while this thread prints the line about once a
    /// second.
    pub fn around<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
        let started = Instant::now();
        let handle = std::thread::Builder::new()
            .name("rill-bench-peer".into())
            .spawn(f)
            .context("start a thread")?;
        let mut last = Instant::now() - Duration::from_secs(1);
        while !handle.is_finished() {
            if last.elapsed() >= Duration::from_secs(1) {
                self.print(started.elapsed());
                last = Instant::now();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.done();
        handle.join().map_err(|_| anyhow!("the thread panicked"))
    }

    fn print(&self, elapsed: Duration) {
        if !self.enabled {
            return;
        }
        let line = match self.expected {
            Some(total) => format!(
                "{}: {:>5.1} / {:.1} s{}",
                self.label,
                elapsed.as_secs_f64(),
                total.as_secs_f64(),
                if elapsed > total { " (draining)" } else { "" }
            ),
            None => format!("{}: {:>5.1} s", self.label, elapsed.as_secs_f64()),
        };
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r\x1b[2K{line}");
        } else {
            let _ = writeln!(err, "{line}");
        }
        let _ = err.flush();
    }

    fn done(&self) {
        if self.enabled && self.tty {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
        }
    }
}

/// Runs `scenario` with `settings`; `progress` prints the progress line.
pub fn run(scenario: &Scenario, settings: &Settings, progress: bool) -> Result<RunOutcome> {
    run_with(scenario, settings, progress, |_| Ok(()))
}

/// [`run`], calling `before_job` with the resolved job right before it starts (the
/// harness measures the machine's floor on the job's CPUs there).
pub fn run_with(
    scenario: &Scenario,
    settings: &Settings,
    progress: bool,
    before_job: impl FnOnce(&JobSpec) -> Result<()>,
) -> Result<RunOutcome> {
    let m = scenario.materialise(settings)?;
    let window = m.window;
    let spec = m.spec.clone();
    let (graph, collector) = match spec.job.builtin() {
        Some(PipelineKind::Latency) => {
            let (g, c) = timeline::build_latency(&spec)?;
            (g, Some(c))
        }
        Some(_) => (pipelines::build(&spec)?, None),
        // The example etl job, built as its own binary builds it.
        None => (
            etl::build(&Ctx::new(&spec))?.build(spec.default_parallelism())?,
            None,
        ),
    };
    let gen = spec.job.generator.clone().unwrap_or_default();
    let p = Progress::new(
        format!(
            "rill-bench: {} on {} core{}",
            scenario.name,
            spec.cores.len(),
            if spec.cores.len() == 1 { "" } else { "s" }
        ),
        match window {
            Some(w) if w.flat_out => Some(Duration::from_secs_f64(w.warmup_s + w.duration_s)),
            _ => spec
                .job
                .has_generator()
                .then(|| Duration::from_millis(gen.duration_ms)),
        },
        progress,
    );
    before_job(&spec)?;
    let job = Job::new(spec.clone(), graph);
    let stop = job.stop_handle();
    let monitor = job.monitor_handle();
    let timeout = settings.timeout_s.map_or_else(
        || match p.expected {
            Some(d) => d * 2 + Duration::from_secs(30),
            None => Duration::from_secs(600),
        },
        Duration::from_secs_f64,
    );
    let cpu_before = process_cpu_s();
    let main_before = this_thread_cpu_s();
    let started = Instant::now();
    let started_unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1e3);
    let handle = std::thread::Builder::new()
        .name("rill-bench-job".into())
        .spawn(move || job.run())
        .context("start the job thread")?;
    let mut sampler = CpuSampler::default();
    let mut last_print = Instant::now() - Duration::from_secs(1);
    let mut aborted_at: Option<Instant> = None;
    // The measured window: a reading of the source's counters and the executors' CPU
    // at its start and at its end (flat out: then the sources are stopped).
    let mut window_start: Option<(Reading, std::collections::BTreeMap<String, f64>)> = None;
    let mut window_end: Option<(Reading, std::collections::BTreeMap<String, f64>)> = None;
    let mut window_error: Option<String> = None;
    while !handle.is_finished() {
        if let (Some(w), Some(addr)) = (window, monitor.metrics_addr()) {
            let t = started.elapsed().as_secs_f64();
            if window_start.is_none() && t >= w.warmup_s {
                if w.warmup_s == 0.0 {
                    // Nothing before the window: it starts with the job, at zero.
                    sampler.sample(EXECUTOR_PREFIX);
                    window_start = Some((Reading::new(), std::collections::BTreeMap::new()));
                } else {
                    match scrape::read(addr) {
                        Ok(r) => {
                            sampler.sample(EXECUTOR_PREFIX);
                            window_start = Some((r, sampler.per_thread()));
                        }
                        Err(e) => window_error = Some(format!("{e:#}")),
                    }
                }
            }
            if window_start.is_some() && window_end.is_none() && t >= w.warmup_s + w.duration_s {
                match scrape::read(addr) {
                    Ok(r) => {
                        sampler.sample(EXECUTOR_PREFIX);
                        window_end = Some((r, sampler.per_thread()));
                        if w.flat_out {
                            // As fast as it goes for the measured time, then drain.
                            stop.stop();
                        }
                    }
                    Err(e) => window_error = Some(format!("{e:#}")),
                }
            }
        }
        if aborted_at.is_none() && started.elapsed() > timeout {
            // A run that does not end is a bug (or a hang) to report, not to wait out.
            let threads = thread_states();
            stop.abort();
            aborted_at = Some(Instant::now());
            eprintln!(
                "\nrill-bench: the job did not finish within {:.0} s (--timeout); aborting. \
                 Threads: {threads}",
                timeout.as_secs_f64()
            );
        }
        if aborted_at.is_some_and(|t| t.elapsed() > Duration::from_secs(5)) {
            p.done();
            bail!(
                "scenario {}: the job did not finish within {:.0} s and did not stop when \
                 aborted (threads: {})",
                scenario.name,
                timeout.as_secs_f64(),
                thread_states()
            );
        }
        if last_print.elapsed() >= Duration::from_secs(1) {
            // Once a second: reading /proc preempts a pinned executor for a moment.
            sampler.sample(EXECUTOR_PREFIX);
            p.print(started.elapsed());
            last_print = Instant::now();
        }
        // Wake at the window's edges, not up to 100 ms after them.
        let mut nap = Duration::from_millis(100);
        if let Some(w) = window {
            for edge in [w.warmup_s, w.warmup_s + w.duration_s] {
                let left = edge - started.elapsed().as_secs_f64();
                if left > 0.0 {
                    nap = nap.min(Duration::from_secs_f64(left));
                }
            }
        }
        std::thread::sleep(nap);
    }
    let finished = Instant::now();
    let wall = started.elapsed();
    p.done();
    let result = handle
        .join()
        .map_err(|_| anyhow!("the job thread panicked"))?;
    if aborted_at.is_some() {
        bail!(
            "scenario {}: the job did not finish within {:.0} s and was aborted",
            scenario.name,
            timeout.as_secs_f64()
        );
    }
    let report = result.with_context(|| format!("scenario {} failed", scenario.name))?;
    let cpu = CpuUsage {
        per_core_s: complete_per_core(
            sampler.per_thread(),
            process_cpu_s() - cpu_before - (this_thread_cpu_s() - main_before),
        ),
        process_s: process_cpu_s() - cpu_before,
    };
    let timeline = collector
        .map(|c| timeline::collect(&c, gen.warmup_ms))
        .unwrap_or_default();
    let window_outcome = match (window, window_start) {
        (Some(w), Some((a, cpu_a))) => {
            // A job that ended before the window did (an open-loop schedule done early):
            // its final counters, at the moment it ended.
            let (b, cpu_b) = window_end.unwrap_or_else(|| {
                let end: Reading = report
                    .shards
                    .iter()
                    .zip(&spec.cores)
                    .map(|(s, c)| {
                        (
                            format!("cpu{}", c.cpu.0),
                            CoreReading {
                                source_records: s
                                    .counters
                                    .get("source_records")
                                    .copied()
                                    .unwrap_or(0),
                                at: finished,
                            },
                        )
                    })
                    .collect();
                (end, sampler.per_thread())
            });
            let cpu_per_core_s = cpu_b
                .iter()
                .map(|(k, v)| (k.clone(), v - cpu_a.get(k).copied().unwrap_or(0.0)))
                .collect();
            Some(WindowOutcome {
                window: w,
                count: WindowCount::between(&a, &b, started),
                cpu_per_core_s,
            })
        }
        (Some(_), None) => {
            eprintln!(
                "rill-bench: the measured window could not be read from the metrics endpoint \
                 ({}); throughput is over the whole run",
                window_error.unwrap_or_else(|| "the endpoint is off".into())
            );
            None
        }
        _ => None,
    };
    Ok(RunOutcome {
        scenario: scenario.name.clone(),
        scenario_dir: scenario.dir.clone(),
        spec,
        overrides: m.overrides.clone(),
        core_sets: m.core_sets.clone(),
        report,
        timeline,
        cpu,
        wall,
        started_unix_ms,
        load_file: scenario.load.clone(),
        window: window_outcome,
        planned_window: window,
    })
}

/// Per-executor CPU seconds sampled once a second miss what each thread used after the
/// last sample. `others_s` (the process's CPU during the run less the sampling thread's
/// own) is exact; what it has beyond the samples is split over the executors in
/// proportion to their samples (the job and helper threads only wait).
pub fn complete_per_core(
    sampled: std::collections::BTreeMap<String, f64>,
    others_s: f64,
) -> std::collections::BTreeMap<String, f64> {
    let sum: f64 = sampled.values().sum();
    let rest = others_s - sum;
    if sum <= 0.0 || rest <= 0.0 {
        return sampled;
    }
    sampled
        .into_iter()
        .map(|(k, v)| (k, v + rest * v / sum))
        .collect()
}

/// `name state wchan` of every executor thread, for a hang report.
fn thread_states() -> String {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return "n/a".into();
    };
    let mut out = Vec::new();
    for t in tasks.flatten() {
        let d = t.path();
        let name = std::fs::read_to_string(d.join("comm")).unwrap_or_default();
        if !name.starts_with(EXECUTOR_PREFIX) {
            continue;
        }
        let stat = std::fs::read_to_string(d.join("stat")).unwrap_or_default();
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, r)| r.split_whitespace().next().map(str::to_string))
            .unwrap_or_default();
        let wchan = std::fs::read_to_string(d.join("wchan")).unwrap_or_default();
        out.push(format!("{} {state} {wchan}", name.trim()));
    }
    out.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unsampled_remainder_is_split_in_proportion() {
        let sampled = [("a".to_string(), 3.0), ("b".to_string(), 1.0)]
            .into_iter()
            .collect();
        let c = complete_per_core(sampled, 6.0);
        assert_eq!(c["a"], 4.5);
        assert_eq!(c["b"], 1.5);
        let sampled: std::collections::BTreeMap<String, f64> =
            [("a".to_string(), 3.0)].into_iter().collect();
        assert_eq!(complete_per_core(sampled.clone(), 2.0), sampled);
    }
}
