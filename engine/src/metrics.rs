//! Per-core metrics: plain counters and an HdrHistogram of end-to-end latency, owned by
//! the core's shard (no atomics, no locks) and merged into a `JobReport` after the run,
//! off the hot path. Nothing here is global.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;
use std::rc::Rc;
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::ids::CoreId;

/// Highest latency the histograms track (60 s); larger values are clamped.
const MAX_LATENCY_NS: u64 = 60_000_000_000;

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3).expect("valid histogram bounds")
}

/// One core's metrics while it runs.
#[derive(Debug)]
pub struct ShardMetrics {
    latency: Histogram<u64>,
    counters: BTreeMap<&'static str, u64>,
    first_arrival_ns: u64,
    last_arrival_ns: u64,
}

impl Default for ShardMetrics {
    fn default() -> Self {
        Self {
            latency: new_histogram(),
            counters: BTreeMap::new(),
            first_arrival_ns: 0,
            last_arrival_ns: 0,
        }
    }
}

/// A core-local handle on its `ShardMetrics`.
#[derive(Clone, Debug, Default)]
pub struct MetricsHandle(Rc<RefCell<ShardMetrics>>);

impl MetricsHandle {
    /// Records one end-to-end latency sample, observed at `now_ns`.
    #[inline]
    pub fn record_latency(&self, latency_ns: u64, now_ns: u64) {
        let mut m = self.0.borrow_mut();
        m.latency
            .saturating_record(latency_ns.clamp(1, MAX_LATENCY_NS));
        if m.first_arrival_ns == 0 {
            m.first_arrival_ns = now_ns;
        }
        m.last_arrival_ns = m.last_arrival_ns.max(now_ns);
    }

    /// Notes that a record reached a sink at `now_ns` (without a latency sample).
    #[inline]
    pub fn note_arrival(&self, now_ns: u64) {
        let mut m = self.0.borrow_mut();
        if m.first_arrival_ns == 0 {
            m.first_arrival_ns = now_ns;
        }
        m.last_arrival_ns = m.last_arrival_ns.max(now_ns);
    }

    /// Adds `n` to the counter `name`.
    #[inline]
    pub fn add(&self, name: &'static str, n: u64) {
        *self.0.borrow_mut().counters.entry(name).or_default() += n;
    }

    /// Turns the metrics into a report that can leave the core.
    pub fn report(&self, core: CoreId) -> ShardReport {
        let m = self.0.borrow();
        ShardReport {
            core,
            latency: m.latency.clone(),
            counters: m
                .counters
                .iter()
                .map(|(k, v)| ((*k).to_string(), *v))
                .collect(),
            last_arrival_ns: m.last_arrival_ns,
            first_arrival_ns: m.first_arrival_ns,
            checkpoints: Vec::new(),
        }
    }
}

/// One core's metrics after the run.
#[derive(Clone, Debug)]
pub struct ShardReport {
    /// The core.
    pub core: CoreId,
    /// End-to-end latency samples, ns.
    pub latency: Histogram<u64>,
    /// Counters by name.
    pub counters: BTreeMap<String, u64>,
    /// When the last record reached a sink on this core (ns on the job clock).
    pub last_arrival_ns: u64,
    /// When the first record reached a sink on this core (ns on the job clock; 0: none).
    pub first_arrival_ns: u64,
    /// Checkpoints that finished during the run (first core only).
    pub checkpoints: Vec<crate::checkpoint::history::Entry>,
}

/// The whole job's metrics, merged from every core.
#[derive(Clone, Debug)]
pub struct JobReport {
    /// Per core.
    pub shards: Vec<ShardReport>,
    /// All latency samples merged, ns.
    pub latency: Histogram<u64>,
    /// Counters summed over cores.
    pub counters: BTreeMap<String, u64>,
    /// When the sources started (ns on the job clock).
    pub start_ns: u64,
    /// Wall time from start to the end of the run.
    pub elapsed: Duration,
    /// Whether the job was stopped by a signal before its input was done.
    pub stopped: bool,
    /// Checkpoints that finished during the run, in order.
    pub checkpoints: Vec<crate::checkpoint::history::Entry>,
    /// The checkpoint the run restored from.
    pub restored_from: Option<u64>,
    /// How often the job was restarted after a failure before this run.
    pub restarts: u32,
    /// From the start of the run (restore included) to the first record at a sink.
    pub first_output: Option<Duration>,
}

impl JobReport {
    /// Merges per-core reports.
    pub fn merge(
        shards: Vec<ShardReport>,
        start_ns: u64,
        elapsed: Duration,
        stopped: bool,
    ) -> Self {
        let mut latency = new_histogram();
        let mut counters = BTreeMap::new();
        let mut checkpoints = Vec::new();
        for s in &shards {
            checkpoints.extend(s.checkpoints.iter().cloned());
            latency.add(&s.latency).expect("histograms share bounds");
            for (k, v) in &s.counters {
                *counters.entry(k.clone()).or_default() += *v;
            }
        }
        Self {
            shards,
            latency,
            counters,
            start_ns,
            elapsed,
            stopped,
            checkpoints,
            restored_from: None,
            restarts: 0,
            first_output: None,
        }
    }

    /// Checkpoints that completed during the run.
    pub fn checkpoints_completed(&self) -> usize {
        self.checkpoints
            .iter()
            .filter(|c| c.state == crate::checkpoint::history::State::Complete)
            .count()
    }

    /// Checkpoints that failed during the run.
    pub fn checkpoints_failed(&self) -> usize {
        self.checkpoints
            .iter()
            .filter(|c| c.state == crate::checkpoint::history::State::Failed)
            .count()
    }

    /// Counter `name` summed over cores.
    pub fn counter(&self, name: &str) -> u64 {
        self.counters.get(name).copied().unwrap_or(0)
    }

    /// Latency at quantile `q` (0..=1), microseconds.
    pub fn latency_us(&self, q: f64) -> f64 {
        self.latency.value_at_quantile(q) as f64 / 1_000.0
    }

    /// Records that reached a sink per second, from the start to the last arrival.
    pub fn sink_throughput_eps(&self) -> f64 {
        let last = self
            .shards
            .iter()
            .map(|s| s.last_arrival_ns)
            .max()
            .unwrap_or(0);
        let span = last.saturating_sub(self.start_ns);
        if span == 0 {
            return 0.0;
        }
        self.counter("sink_records") as f64 * 1e9 / span as f64
    }
}

impl fmt::Display for JobReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "rill: {} in {:.2} s{}",
            if self.stopped { "stopped" } else { "done" },
            self.elapsed.as_secs_f64(),
            if self.stopped {
                " (by signal; input not finished)"
            } else {
                ""
            }
        )?;
        if !self.latency.is_empty() {
            writeln!(
                f,
                "latency (us)  p50 {:.1}  p99 {:.1}  p99.9 {:.1}  p99.99 {:.1}  max {:.1}  ({} samples)",
                self.latency_us(0.5),
                self.latency_us(0.99),
                self.latency_us(0.999),
                self.latency_us(0.9999),
                self.latency.max() as f64 / 1_000.0,
                self.latency.len()
            )?;
            writeln!(
                f,
                "throughput    {:.0} events/s reached the sinks",
                self.sink_throughput_eps()
            )?;
        }
        if let Some(r) = self.restored_from {
            writeln!(f, "restored from  checkpoint {r}")?;
        }
        if let Some(t) = self.first_output {
            writeln!(
                f,
                "first output  {:.1} ms after the run started (restore included)",
                t.as_secs_f64() * 1e3
            )?;
        }
        if self.restarts > 0 {
            writeln!(f, "restarts      {}", self.restarts)?;
        }
        if !self.checkpoints.is_empty() {
            let done: Vec<&crate::checkpoint::history::Entry> = self
                .checkpoints
                .iter()
                .filter(|c| c.state == crate::checkpoint::history::State::Complete)
                .collect();
            let mut d: Vec<f64> = done.iter().map(|c| c.duration_ms).collect();
            let mut a: Vec<f64> = done.iter().map(|c| c.alignment_ms).collect();
            d.sort_by(f64::total_cmp);
            a.sort_by(f64::total_cmp);
            let p50 = |v: &[f64]| v.get(v.len() / 2).copied().unwrap_or(0.0);
            let max = |v: &[f64]| v.last().copied().unwrap_or(0.0);
            writeln!(
                f,
                "checkpoints   {} complete, {} failed; duration p50 {:.1} ms max {:.1} ms; \
                 alignment p50 {:.2} ms max {:.2} ms; last {} bytes",
                done.len(),
                self.checkpoints_failed(),
                p50(&d),
                max(&d),
                p50(&a),
                max(&a),
                done.last().map_or(0, |c| c.bytes_full)
            )?;
        }
        for (k, v) in &self.counters {
            writeln!(f, "{k:<25} {v}")?;
        }
        for s in &self.shards {
            let n: u64 = s.counters.get("sink_records").copied().unwrap_or(0);
            writeln!(f, "  {}: {} records to sinks", s.core, n)?;
        }
        Ok(())
    }
}
