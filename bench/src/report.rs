//! The run report: what a run measured, as JSON (`RunReport`, schema
//! `rill-bench.run.v1`) and as the summary table on the terminal. It reads the engine's
//! `JobReport` and decides whether the engine kept up with the offered load.
//!
//! Checkpoint and async statistics come from the engine's counters (0 when a counter is
//! absent); see [`Checkpoints::from_report`] for the one place to add the duration and
//! alignment percentiles once the engine reports them.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use rill_engine::metrics::JobReport;
use serde::{Deserialize, Serialize};

use crate::machine::Machine;
use crate::runner::RunOutcome;
use crate::scenario::LoadFile;
use crate::stats::{LatencySummary, PERCENTILES};
use crate::timeline::Interval;

/// The JSON schema name of a run report.
pub const SCHEMA: &str = "rill-bench.run.v1";

/// Achieved rate below this fraction of the offered rate means "did not keep up".
pub const KEEP_UP_FRACTION: f64 = 0.95;

/// The load a run was offered, as resolved from load.toml, the command line and job.toml.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Load {
    /// Offered rate, events per second (none for file sources and flat-out runs).
    pub offered_eps: Option<u64>,
    /// `--rate max`: as fast as the job goes for `duration_s` after the warm-up.
    #[serde(default)]
    pub flat_out: bool,
    /// Measured time after the warm-up, seconds (the run lasts warm-up + this).
    pub duration_s: Option<f64>,
    /// Warm-up before the measured time, seconds.
    pub warmup_s: Option<f64>,
    /// Distinct keys.
    pub keys: Option<u64>,
    /// The CPUs the executors were pinned to.
    pub cpus: Vec<usize>,
}

/// The measured window of a run whose throughput is read from the source's counters
/// (flat out, or a Nexmark query without a latency sink).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WindowSection {
    /// Its length as measured (the mean over the cores of the time between the two
    /// readings), seconds.
    pub seconds: f64,
    /// Source events in it, all cores.
    pub events: u64,
    /// Events per second, all cores.
    pub throughput_eps: f64,
    /// Events per second per core (`throughput_eps` / cores).
    pub throughput_per_core_eps: f64,
    /// Each core's own events per second.
    pub per_core_eps: BTreeMap<String, f64>,
    /// CPU seconds of each executor in the window.
    pub cpu_per_core_s: BTreeMap<String, f64>,
    /// Events per CPU-second of the executors in the window: on a machine shared with
    /// other work (the executors get only part of their CPUs), the steadier figure.
    #[serde(default)]
    pub events_per_cpu_s: f64,
}

/// A percentile summary in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct MsSummary {
    /// Median, ms.
    pub p50: f64,
    /// Max, ms.
    pub max: f64,
}

/// Checkpoint statistics.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Checkpoints {
    /// Checkpoints completed (counter `checkpoints_completed`).
    pub completed: u64,
    /// Checkpoints failed (counter `checkpoints_failed`).
    pub failed: u64,
    /// Bytes written by checkpoints (counter `checkpoint_bytes`).
    pub bytes: u64,
    /// Checkpoint duration C, when the engine reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<MsSummary>,
    /// Barrier alignment time, when the engine reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alignment_ms: Option<MsSummary>,
    /// The synchronous part (longest over cores): what a barrier held a core up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_ms: Option<MsSummary>,
    /// Archiving after the barrier, in slices between rounds of a core's loop (longest
    /// over cores; wall-clock time inside the slices).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive_ms: Option<MsSummary>,
}

impl Checkpoints {
    /// Reads the checkpoints that finished during the run (`JobReport::checkpoints`):
    /// counts, the full size of the last complete one, and the duration and alignment
    /// of the complete ones.
    pub fn from_report(r: &JobReport) -> Self {
        use rill_engine::checkpoint::history::State;
        let done: Vec<_> = r
            .checkpoints
            .iter()
            .filter(|c| c.state == State::Complete)
            .collect();
        let summary = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            (!v.is_empty()).then(|| MsSummary {
                p50: v[v.len() / 2],
                max: v[v.len() - 1],
            })
        };
        Self {
            completed: done.len() as u64,
            failed: r.checkpoints_failed() as u64,
            bytes: done.last().map_or(0, |c| c.bytes_full),
            duration_ms: summary(done.iter().map(|c| c.duration_ms).collect()),
            alignment_ms: summary(done.iter().map(|c| c.alignment_ms).collect()),
            sync_ms: summary(done.iter().map(|c| c.sync_ms).collect()),
            archive_ms: summary(done.iter().map(|c| c.archive_ms).collect()),
        }
    }
}

/// Async IO statistics.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AsyncStats {
    /// Most requests in flight at once (counter `async_in_flight_max`; summed over cores).
    pub in_flight_max: u64,
    /// Requests that timed out (counter `async_timeouts`).
    pub timeouts: u64,
    /// Requests retried (counter `async_retries`).
    pub retries: u64,
    /// Requests completed (counter `async_completed`).
    #[serde(default)]
    pub completed: u64,
    /// Mean IO time, issue to completion, ms (model N/t's t).
    #[serde(default)]
    pub io_time_ms: Option<f64>,
    /// Seconds partitions spent with every slot taken, summed (counter `async_full_us`).
    #[serde(default)]
    pub full_s: f64,
    /// Times a breaker opened (counter `async_breaker_opened`).
    #[serde(default)]
    pub breaker_opened: u64,
}

impl AsyncStats {
    /// Reads the async counters of `r`.
    pub fn from_report(r: &JobReport) -> Self {
        Self {
            in_flight_max: r.counter("async_in_flight_max"),
            timeouts: r.counter("async_timeouts"),
            retries: r.counter("async_retries"),
            completed: r.counter("async_completed"),
            io_time_ms: crate::models::io_time_from_counters(&r.counters),
            full_s: r.counter("async_full_us") as f64 / 1e6,
            breaker_opened: r.counter("async_breaker_opened"),
        }
    }
}

/// CPU time of a run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Cpu {
    /// CPU seconds per executor thread (`rill-cpuN`, or `timely-N` for the peer).
    pub per_core_s: BTreeMap<String, f64>,
    /// CPU seconds of the whole process during the run.
    pub process_s: f64,
    /// Wall seconds of the run.
    pub wall_s: f64,
}

/// One core's part of a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CoreRow {
    /// The core (`cpu0`).
    pub core: String,
    /// Records that reached a sink on it.
    pub sink_records: u64,
    /// Latency samples it recorded.
    pub samples: u64,
    /// Its own p99.9, microseconds.
    pub p999_us: f64,
}

/// The resolved configuration of a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Config {
    /// The scenario directory.
    pub scenario_dir: String,
    /// job.toml as the engine resolved it (defaults filled in), as JSON.
    pub job: serde_json::Value,
    /// Each core file as resolved, by CPU id.
    pub cores: BTreeMap<String, serde_json::Value>,
    /// The job.toml overrides applied (load parameters first, then `--set`).
    pub overrides: Vec<String>,
    /// The overrides applied to every core file.
    pub core_overrides: Vec<String>,
    /// The scenario's load.toml as read (the command line may override it; `load` has
    /// what the run used).
    pub load_toml: LoadFile,
}

/// The side-by-side peer's part of a run report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PeerSection {
    /// Which system (`timely`).
    pub system: String,
    /// Worker threads.
    pub workers: usize,
    /// Whether its workers were pinned to the same CPUs as rill's executors.
    pub pinned: bool,
    /// Its throughput over the measured window.
    pub throughput_eps: f64,
    /// Its latency.
    pub latency_us: BTreeMap<String, f64>,
    /// Its latency samples.
    pub latency_samples: u64,
    /// Its CPU time.
    pub cpu: Cpu,
    /// rill's p99.9 / the peer's (below 1: rill is faster).
    pub p999_ratio: f64,
    /// rill's throughput / the peer's.
    pub throughput_ratio: f64,
    /// rill / the peer at each percentile (`p50` … `p9999`, `max`).
    #[serde(default)]
    pub ratios: BTreeMap<String, f64>,
    /// Whether the peer kept up (the same verdict as rill's).
    #[serde(default)]
    pub kept_up: Option<bool>,
    /// Why not, if it did not.
    #[serde(default)]
    pub keep_up_problems: Vec<String>,
    /// How long after the end of the schedule its last record arrived, ms.
    #[serde(default)]
    pub end_lag_ms: Option<f64>,
    /// What else the peer reported (Flink: version, Java, checkpoints completed).
    #[serde(default)]
    pub details: BTreeMap<String, String>,
}

/// The whole run report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    /// [`SCHEMA`].
    pub schema: String,
    /// The scenario's name.
    pub scenario: String,
    /// The pipeline.
    pub pipeline: String,
    /// When the report was made, seconds since the Unix epoch.
    pub unix_time_s: u64,
    /// The load.
    pub load: Load,
    /// Events per second that reached the sinks over the measured window (after the
    /// warm-up, to the last arrival); for file sources, over the whole run.
    pub throughput_eps: f64,
    /// The engine's own figure: every sink record from the start to the last arrival.
    pub sink_throughput_eps: f64,
    /// Whether the engine kept up with the offered load.
    pub kept_up: bool,
    /// Why not, if it did not.
    pub keep_up_problems: Vec<String>,
    /// How long after the end of the schedule the last record reached a sink, ms.
    pub end_lag_ms: Option<f64>,
    /// The measured window, for runs measured from the source's counters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<WindowSection>,
    /// Latency: p50, p90, p99, p999, p9999, max, mean; microseconds.
    pub latency_us: BTreeMap<String, f64>,
    /// How many samples: `total`, and per percentile how many are at or above it.
    pub latency_samples: BTreeMap<String, u64>,
    /// Samples the schedule should have produced (measured events).
    pub expected_samples: Option<u64>,
    /// CPU time.
    pub cpu: Cpu,
    /// Checkpoints.
    pub checkpoints: Checkpoints,
    /// Async IO.
    #[serde(rename = "async")]
    pub async_io: AsyncStats,
    /// Every engine counter, summed over cores.
    pub counters: BTreeMap<String, u64>,
    /// Loop rounds longer than the stall threshold, with their operators.
    #[serde(default)]
    pub stalls: Vec<rill_engine::monitor::stall::Stall>,
    /// Per core.
    pub per_core: Vec<CoreRow>,
    /// Per second of the schedule (latency pipeline only).
    pub timeline: Vec<Interval>,
    /// When each checkpoint was triggered, seconds since the schedule's start.
    #[serde(default)]
    pub checkpoint_times_s: Vec<f64>,
    /// The resolved configuration.
    pub config: Config,
    /// The machine.
    pub machine: Machine,
    /// The side-by-side peer, when one ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<PeerSection>,
    /// CPU-bound noise processes that ran beside the job (`--noise`).
    #[serde(default)]
    pub noise: usize,
    /// CPU seconds the noise processes used over the whole run (their rusage).
    #[serde(default)]
    pub noise_cpu_s: f64,
    /// The machine's floor on the job's CPUs, measured right before the job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub floor: Option<crate::noise::FloorSection>,
}

/// Latency maps for the JSON report from a summary.
pub fn latency_maps(s: &LatencySummary) -> (BTreeMap<String, f64>, BTreeMap<String, u64>) {
    let mut us = BTreeMap::new();
    let mut n = BTreeMap::new();
    n.insert("total".to_string(), s.samples);
    for p in &s.percentiles {
        us.insert(p.name.clone(), p.us);
        n.insert(p.name.clone(), p.samples_at_or_above);
    }
    us.insert("max".into(), s.max_us);
    us.insert("mean".into(), s.mean_us);
    (us, n)
}

/// Measured events of a schedule: those due at or after the warm-up.
pub fn expected_samples(rate_eps: u64, duration_ms: u64, warmup_ms: u64) -> u64 {
    let events = (u128::from(rate_eps) * u128::from(duration_ms) / 1_000) as u64;
    let warm = (u128::from(warmup_ms) * 1_000_000 * u128::from(rate_eps)).div_ceil(1_000_000_000);
    events.saturating_sub(warm as u64)
}

/// The keep-up verdict: problems found (empty = kept up).
pub fn keep_up_problems(
    offered_eps: f64,
    achieved_eps: f64,
    samples: u64,
    expected: u64,
    end_lag_ms: f64,
    duration_ms: f64,
) -> Vec<String> {
    let mut p = Vec::new();
    if achieved_eps < KEEP_UP_FRACTION * offered_eps {
        p.push(format!(
            "achieved {achieved_eps:.0} events/s, below {:.0}% of the offered {offered_eps:.0}",
            KEEP_UP_FRACTION * 100.0
        ));
    }
    if samples < expected {
        p.push(format!(
            "only {samples} of {expected} measured events reached the sink"
        ));
    }
    let allowed = (duration_ms * 0.05).max(100.0);
    if end_lag_ms > allowed {
        p.push(format!(
            "the last event arrived {end_lag_ms:.0} ms after the schedule ended (a backlog)"
        ));
    }
    p
}

impl RunReport {
    /// Builds the report of `o`.
    pub fn new(o: &RunOutcome) -> Self {
        let r = &o.report;
        let latency = LatencySummary::of(&r.latency);
        let (latency_us, latency_samples) = latency_maps(&latency);
        let last_arrival = r
            .shards
            .iter()
            .map(|s| s.last_arrival_ns)
            .max()
            .unwrap_or(0);
        let since_start_ns = last_arrival.saturating_sub(r.start_ns) as f64;
        let is_gen = o.spec.job.has_generator();
        let g = o.spec.job.generator.clone().unwrap_or_default();
        let flat_out = o.planned_window.is_some_and(|w| w.flat_out);
        let window = o.window.as_ref().map(|w| {
            let eps = w.count.eps();
            WindowSection {
                seconds: w.count.seconds,
                events: w.count.events(),
                throughput_eps: eps,
                throughput_per_core_eps: eps / o.spec.cores.len().max(1) as f64,
                per_core_eps: w.count.per_core_eps.clone(),
                cpu_per_core_s: w.cpu_per_core_s.clone(),
                events_per_cpu_s: {
                    let cpu: f64 = w.cpu_per_core_s.values().sum();
                    if cpu > 0.0 {
                        w.count.events() as f64 / cpu
                    } else {
                        0.0
                    }
                },
            }
        });
        // Input events per second over the whole run: the figure of a windowed run whose
        // window could not be read (metrics endpoint off).
        let whole_run_eps = || {
            let secs = r.elapsed.as_secs_f64();
            if secs > 0.0 {
                r.counter("source_records") as f64 / secs
            } else {
                0.0
            }
        };
        let (throughput_eps, end_lag_ms, expected, problems) = if flat_out {
            // Nothing was offered, so nothing to keep up with.
            let thr = window
                .as_ref()
                .map_or_else(whole_run_eps, |w| w.throughput_eps);
            (thr, None, None, Vec::new())
        } else if o.planned_window.is_some() {
            // An open-loop generator job without latency samples: the source's rate in
            // the window against the offered rate, and whether the run ended on time.
            let thr = window
                .as_ref()
                .map_or_else(whole_run_eps, |w| w.throughput_eps);
            let lag = (r.elapsed.as_secs_f64() * 1e3 - g.duration_ms as f64).max(0.0);
            let problems =
                keep_up_problems(g.rate_eps as f64, thr, 0, 0, lag, g.duration_ms as f64);
            (thr, Some(lag), None, problems)
        } else if is_gen {
            let window_ns = since_start_ns - g.warmup_ms as f64 * 1e6;
            let thr = if window_ns > 0.0 {
                latency.samples as f64 * 1e9 / window_ns
            } else {
                0.0
            };
            let lag = (since_start_ns / 1e6 - g.duration_ms as f64).max(0.0);
            let expected = expected_samples(g.rate_eps, g.duration_ms, g.warmup_ms);
            let problems = keep_up_problems(
                g.rate_eps as f64,
                thr,
                latency.samples,
                expected,
                lag,
                g.duration_ms as f64,
            );
            (thr, Some(lag), Some(expected), problems)
        } else {
            (r.sink_throughput_eps(), None, None, Vec::new())
        };
        let cores = o
            .spec
            .cores
            .iter()
            .map(|c| {
                (
                    c.cpu.0.to_string(),
                    serde_json::to_value(&c.config).unwrap_or_default(),
                )
            })
            .collect();
        let per_core = r
            .shards
            .iter()
            .map(|s| CoreRow {
                core: s.core.to_string(),
                sink_records: s.counters.get("sink_records").copied().unwrap_or(0),
                samples: s.latency.len(),
                p999_us: if s.latency.is_empty() {
                    0.0
                } else {
                    s.latency.value_at_quantile(0.999) as f64 / 1e3
                },
            })
            .collect();
        Self {
            schema: SCHEMA.into(),
            scenario: o.scenario.clone(),
            pipeline: o.spec.job.pipeline_name().to_string(),
            unix_time_s: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            load: Load {
                offered_eps: (is_gen && !flat_out).then_some(g.rate_eps),
                flat_out,
                duration_s: match o.planned_window {
                    Some(w) if flat_out => Some(w.duration_s),
                    _ => is_gen.then(|| g.duration_ms.saturating_sub(g.warmup_ms) as f64 / 1e3),
                },
                warmup_s: match o.planned_window {
                    Some(w) if flat_out => Some(w.warmup_s),
                    _ => is_gen.then_some(g.warmup_ms as f64 / 1e3),
                },
                keys: is_gen.then_some(g.keys),
                cpus: o.spec.cores.iter().map(|c| c.cpu.0).collect(),
            },
            throughput_eps,
            sink_throughput_eps: r.sink_throughput_eps(),
            kept_up: problems.is_empty(),
            keep_up_problems: problems,
            end_lag_ms,
            window,
            latency_us,
            latency_samples,
            expected_samples: expected,
            cpu: Cpu {
                per_core_s: o.cpu.per_core_s.clone(),
                process_s: o.cpu.process_s,
                wall_s: o.wall.as_secs_f64(),
            },
            checkpoints: Checkpoints::from_report(r),
            async_io: AsyncStats::from_report(r),
            counters: r.counters.clone(),
            stalls: r.monitor.stalls.clone(),
            per_core,
            timeline: o.timeline.clone(),
            checkpoint_times_s: {
                let start_ms = o.started_unix_ms + r.start_ns as f64 / 1e6;
                r.checkpoints
                    .iter()
                    .map(|c| (c.triggered_unix_ms as f64 - start_ms) / 1e3)
                    .collect()
            },
            config: Config {
                scenario_dir: o.scenario_dir.display().to_string(),
                job: serde_json::to_value(&o.spec.job).unwrap_or_default(),
                cores,
                overrides: o.overrides.clone(),
                core_overrides: o.core_sets.clone(),
                load_toml: o.load_file.clone(),
            },
            machine: Machine::detect(),
            peer: None,
            noise: 0,
            noise_cpu_s: 0.0,
            floor: None,
        }
    }

    /// p99.9, microseconds.
    pub fn p999_us(&self) -> f64 {
        self.latency_us.get("p999").copied().unwrap_or(0.0)
    }

    /// The summary table printed after a run.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "scenario {} (pipeline {}) on CPUs {:?} — {}",
            self.scenario, self.pipeline, self.load.cpus, self.machine.cpu_model
        );
        match (
            self.load.offered_eps,
            self.load.flat_out,
            self.load.duration_s,
            self.load.warmup_s,
        ) {
            (Some(r), _, Some(d), Some(w)) => {
                let _ = writeln!(
                    s,
                    "load      {r} events/s offered, open loop, {d:.1} s measured after a \
                     {w:.1} s warm-up"
                );
            }
            (None, true, Some(d), Some(w)) => {
                let _ = writeln!(
                    s,
                    "load      flat out (as fast as it goes), {d:.1} s measured after a \
                     {w:.1} s warm-up"
                );
            }
            _ => {}
        }
        if self.noise > 0 {
            let _ = writeln!(
                s,
                "noise     {} CPU-bound process{} beside the job (unpinned, normal priority), \
                 for the whole run{}: {:.2} CPU-s",
                self.noise,
                if self.noise == 1 { "" } else { "es" },
                if self.peer.is_some() {
                    " of rill and the peer"
                } else {
                    ""
                },
                self.noise_cpu_s
            );
        }
        let cores_n = self.load.cpus.len().max(1) as f64;
        let _ = writeln!(
            s,
            "throughput {:.0} events/s, {:.0} per core{}",
            self.throughput_eps,
            self.throughput_eps / cores_n,
            match (&self.window, self.load.offered_eps, self.kept_up) {
                (Some(w), _, _) if self.load.flat_out => format!(
                    " (source events: {} in the measured {:.2} s)",
                    w.events, w.seconds
                ),
                (Some(w), Some(_), true) => format!(
                    " (source events: {} in the measured {:.2} s; kept up)",
                    w.events, w.seconds
                ),
                (_, Some(_), true) => "  (kept up)".to_string(),
                (_, Some(_), false) => format!(
                    "\n!!! THE ENGINE DID NOT KEEP UP: {}",
                    self.keep_up_problems.join("; ")
                ),
                (None, None, _) if self.pipeline.starts_with("nexmark") || self.load.flat_out => {
                    " (input events over the run's wall time: the metrics endpoint was off)".into()
                }
                (_, None, _) => " (file source: as fast as it goes)".into(),
            }
        );
        let mut head = format!("{:<14}", "latency (us)");
        for (_, label, _) in PERCENTILES {
            let _ = write!(head, "{label:>10}");
        }
        let _ = write!(head, "{:>10}{:>10}", "max", "samples");
        let _ = writeln!(s, "{head}");
        // Whole microseconds from 1 s up, so a backlog's figures keep their columns apart.
        let cell = |v: f64| {
            if v >= 1e6 {
                format!("{v:>10.0}")
            } else {
                format!("{v:>10.1}")
            }
        };
        let row = |name: &str, lat: &BTreeMap<String, f64>, n: u64| {
            let mut line = format!("{name:<14}");
            for (key, _, _) in PERCENTILES {
                line.push_str(&cell(lat.get(key).copied().unwrap_or(0.0)));
            }
            line.push_str(&cell(lat.get("max").copied().unwrap_or(0.0)));
            let _ = write!(line, "{n:>10}");
            line
        };
        let total = self.latency_samples.get("total").copied().unwrap_or(0);
        if self.load.flat_out {
            let _ = writeln!(
                s,
                "{:<14}(flat out: every event is due at the start, so latency is not measured)",
                "rill"
            );
        } else if total == 0 {
            let _ = writeln!(
                s,
                "{:<14}(no latency samples: the pipeline has no latency sink)",
                "rill"
            );
        } else {
            let _ = writeln!(s, "{}", row("rill", &self.latency_us, total));
            let mut behind = format!("{:<14}", "  samples >=");
            for (key, _, _) in PERCENTILES {
                let _ = write!(
                    behind,
                    "{:>10}",
                    self.latency_samples.get(key).copied().unwrap_or(0)
                );
            }
            let _ = writeln!(s, "{behind}");
        }
        if let Some(p) = &self.peer {
            let _ = writeln!(
                s,
                "{}",
                row(
                    &format!("{} (peer)", p.system),
                    &p.latency_us,
                    p.latency_samples
                )
            );
            if !p.ratios.is_empty() {
                let mut line = format!("{:<14}", "  rill/peer");
                for key in PERCENTILES.iter().map(|(k, _, _)| *k).chain(["max"]) {
                    match p.ratios.get(key) {
                        // Small ratios keep their digits (0.0026x, not 0.00x).
                        Some(r) if r.is_finite() && *r < 0.1 => {
                            let _ = write!(line, "{:>9.4}x", r);
                        }
                        Some(r) if r.is_finite() => {
                            let _ = write!(line, "{:>9.2}x", r);
                        }
                        _ => {
                            let _ = write!(line, "{:>10}", "-");
                        }
                    }
                }
                let _ = writeln!(s, "{line}");
            }
            let _ = writeln!(
                s,
                "peer      {} {} workers{}: {:.0} events/s{}; rill/peer: p99.9 {:.2}x, throughput {:.2}x",
                p.system,
                p.workers,
                if p.pinned { " pinned" } else { "" },
                p.throughput_eps,
                match p.kept_up {
                    Some(true) => " (kept up)".to_string(),
                    Some(false) => format!(" (DID NOT KEEP UP: {})", p.keep_up_problems.join("; ")),
                    None => String::new(),
                },
                p.p999_ratio,
                p.throughput_ratio
            );
            if !p.details.is_empty() {
                let d: Vec<String> = p.details.iter().map(|(k, v)| format!("{k} {v}")).collect();
                let _ = writeln!(s, "peer info {}", d.join(", "));
            }
            let cpu: Vec<String> = p
                .cpu
                .per_core_s
                .iter()
                .map(|(k, v)| format!("{k} {v:.2} s"))
                .collect();
            let _ = writeln!(
                s,
                "peer cpu  {}; process {:.2} s over {:.2} s wall",
                cpu.join(", "),
                p.cpu.process_s,
                p.cpu.wall_s
            );
        }
        if let Some(f) = &self.floor {
            s.push_str(&f.summary());
        }
        let cores: Vec<String> = self
            .cpu
            .per_core_s
            .iter()
            .map(|(k, v)| {
                format!(
                    "{} {v:.2} s ({:.0}%)",
                    k.trim_start_matches("rill-"),
                    100.0 * v / self.cpu.wall_s.max(1e-9)
                )
            })
            .collect();
        let _ = writeln!(
            s,
            "cpu       {}; process {:.2} s over {:.2} s wall",
            if cores.is_empty() {
                "per-core n/a".to_string()
            } else {
                cores.join(", ")
            },
            self.cpu.process_s,
            self.cpu.wall_s
        );
        if let Some(w) = &self.window {
            let cores: Vec<String> = w
                .cpu_per_core_s
                .iter()
                .map(|(k, v)| {
                    format!(
                        "{} {v:.2} s ({:.0}%)",
                        k.trim_start_matches("rill-"),
                        100.0 * v / w.seconds.max(1e-9)
                    )
                })
                .collect();
            let _ = writeln!(
                s,
                "cpu window {} over the measured {:.2} s; {:.0} events per CPU-second",
                if cores.is_empty() {
                    "per-core n/a".to_string()
                } else {
                    cores.join(", ")
                },
                w.seconds,
                w.events_per_cpu_s
            );
        }
        let c = &self.checkpoints;
        let _ = write!(
            s,
            "checkpoints {} completed, {} failed, {} bytes",
            c.completed, c.failed, c.bytes
        );
        if let Some(d) = c.duration_ms {
            let _ = write!(s, ", duration p50 {:.1} ms max {:.1} ms", d.p50, d.max);
        }
        if let Some(a) = c.alignment_ms {
            let _ = write!(s, ", alignment p50 {:.1} ms max {:.1} ms", a.p50, a.max);
        }
        if let Some(a) = c.sync_ms {
            let _ = write!(s, ", sync p50 {:.2} ms max {:.2} ms", a.p50, a.max);
        }
        if let Some(a) = c.archive_ms.filter(|a| a.max > 0.0) {
            let _ = write!(s, ", archive p50 {:.2} ms max {:.2} ms", a.p50, a.max);
        }
        let _ = writeln!(s);
        let a = &self.async_io;
        if a.completed > 0 {
            let _ = writeln!(
                s,
                "async     {} requests, IO time {:.2} ms mean, in flight max {}, full {:.2} s \
                 (summed over partitions), timeouts {}, retries {}, breaker opened {}",
                a.completed,
                a.io_time_ms.unwrap_or(0.0),
                a.in_flight_max,
                a.full_s,
                a.timeouts,
                a.retries,
                a.breaker_opened
            );
        }
        if !self.stalls.is_empty() {
            let longest = self
                .stalls
                .iter()
                .max_by(|x, y| x.duration_ms.total_cmp(&y.duration_ms))
                .expect("not empty");
            let _ = writeln!(
                s,
                "stalls    {}; the longest: {}",
                self.stalls.len(),
                longest.describe()
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_samples_excludes_the_warm_up_exactly() {
        // 1000 eps for 5 s: 5000 events; the first 1 s (seq 0..1000) is warm-up.
        assert_eq!(expected_samples(1_000, 5_000, 1_000), 4_000);
        assert_eq!(expected_samples(3, 1_000, 500), 1); // seq 0 (0 ms), 1 (333 ms) warm
        assert_eq!(expected_samples(1_000, 1_000, 0), 1_000);
    }

    #[test]
    fn keep_up_verdict_names_each_problem() {
        assert!(keep_up_problems(1e5, 99_000.0, 10, 10, 3.0, 5_000.0).is_empty());
        let p = keep_up_problems(1e5, 50_000.0, 9, 10, 2_000.0, 5_000.0);
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(p[0].contains("below 95%"));
    }
}
