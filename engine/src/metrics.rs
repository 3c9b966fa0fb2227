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
    /// Async requests, issue to completion (retries included), ns.
    io_time: Histogram<u64>,
    io_time_ns_total: u64,
    counters: BTreeMap<&'static str, u64>,
    gauges: Vec<Gauge>,
    first_arrival_ns: u64,
    last_arrival_ns: u64,
}

/// A value read only when the core publishes a snapshot (never on the record path), such
/// as an async partition's requests in flight. `read` returns `None` when the value is
/// gone (its operator ended) or busy.
struct Gauge {
    name: &'static str,
    operator: String,
    partition: u32,
    read: Box<dyn Fn() -> Option<f64>>,
}

impl fmt::Debug for Gauge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Gauge({} {} {})",
            self.name, self.operator, self.partition
        )
    }
}

/// Latency quantiles of one histogram, in seconds, for export.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Quantiles {
    /// Samples.
    pub count: u64,
    /// Sum of the samples (from the histogram's mean), seconds.
    pub sum_s: f64,
    /// (quantile, seconds) for 0.5, 0.9, 0.99, 0.999, 0.9999 and 1 (max).
    pub values: Vec<(f64, f64)>,
}

impl Quantiles {
    /// The quantiles of `h` (values in ns).
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let values = [0.5, 0.9, 0.99, 0.999, 0.9999]
            .into_iter()
            .map(|q| (q, h.value_at_quantile(q) as f64 / 1e9))
            .chain(std::iter::once((1.0, h.max() as f64 / 1e9)))
            .collect();
        Self {
            count: h.len(),
            sum_s: h.mean() * h.len() as f64 / 1e9,
            values,
        }
    }
}

/// One gauge's value at publish time.
#[derive(Clone, Debug, PartialEq)]
pub struct GaugeValue {
    /// Metric name (without the `rill_` prefix).
    pub name: &'static str,
    /// The operator it belongs to.
    pub operator: String,
    /// The operator's partition.
    pub partition: u32,
    /// The value.
    pub value: f64,
}

/// What a core publishes for the metrics endpoint: a copy of its counters and gauges,
/// taken on the core between two rounds of its loop.
#[derive(Clone, Debug, Default)]
pub struct CoreSnapshot {
    /// When it was taken (ns on the job clock); 0: never published.
    pub at_ns: u64,
    /// Counters by name.
    pub counters: BTreeMap<String, u64>,
    /// End-to-end latency at the sinks of this core.
    pub latency: Quantiles,
    /// Async request times of this core.
    pub io_time: Quantiles,
    /// Gauges registered by this core's operators.
    pub gauges: Vec<GaugeValue>,
    /// The checkpoint figures (first core only).
    pub checkpoints: Option<CheckpointGauges>,
}

/// Checkpoint figures for the metrics endpoint, from the coordinator's history.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CheckpointGauges {
    /// Checkpoints completed in this run.
    pub completed: u64,
    /// Checkpoints failed in this run.
    pub failed: u64,
    /// The newest completed checkpoint's id.
    pub last_id: u64,
    /// Its duration, trigger to complete, seconds.
    pub last_duration_s: f64,
    /// Its longest alignment, seconds.
    pub last_alignment_s: f64,
    /// Its synchronous part, seconds.
    pub last_sync_s: f64,
    /// Its asynchronous part (write and sync), seconds.
    pub last_async_s: f64,
    /// Its full size, bytes.
    pub last_bytes: u64,
}

impl CheckpointGauges {
    /// The figures of `history` (checkpoints that ended, in order).
    pub fn of(history: &[crate::checkpoint::history::Entry]) -> Self {
        use crate::checkpoint::history::State;
        let mut g = Self::default();
        for e in history {
            match e.state {
                State::Complete => {
                    g.completed += 1;
                    g.last_id = e.id;
                    g.last_duration_s = e.duration_ms / 1e3;
                    g.last_alignment_s = e.alignment_ms / 1e3;
                    g.last_sync_s = e.sync_ms / 1e3;
                    g.last_async_s = e.async_ms / 1e3;
                    g.last_bytes = e.bytes_full;
                }
                State::Failed => g.failed += 1,
                _ => {}
            }
        }
        g
    }
}

impl Default for ShardMetrics {
    fn default() -> Self {
        Self {
            latency: new_histogram(),
            io_time: new_histogram(),
            io_time_ns_total: 0,
            counters: BTreeMap::new(),
            gauges: Vec::new(),
            first_arrival_ns: 0,
            last_arrival_ns: 0,
        }
    }
}

impl ShardMetrics {
    /// The counters, with the async request totals derived from the IO-time histogram.
    fn counters_by_name(&self) -> BTreeMap<String, u64> {
        let mut counters: BTreeMap<String, u64> = self
            .counters
            .iter()
            .map(|(k, v)| ((*k).to_string(), *v))
            .collect();
        if !self.io_time.is_empty() {
            counters.insert("async_completed".into(), self.io_time.len());
            counters.insert(
                "async_io_time_us_total".into(),
                self.io_time_ns_total / 1_000,
            );
        }
        counters
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

    /// Records one completed async request that took `ns` from issue to completion.
    #[inline]
    pub fn record_io_time(&self, ns: u64) {
        let mut m = self.0.borrow_mut();
        m.io_time.saturating_record(ns.clamp(1, MAX_LATENCY_NS));
        m.io_time_ns_total += ns;
    }

    /// Adds `n` to the counter `name`.
    #[inline]
    pub fn add(&self, name: &'static str, n: u64) {
        *self.0.borrow_mut().counters.entry(name).or_default() += n;
    }

    /// Registers a gauge of `operator` partition `partition`, read at publish time.
    pub fn gauge(
        &self,
        name: &'static str,
        operator: &str,
        partition: u32,
        read: impl Fn() -> Option<f64> + 'static,
    ) {
        self.0.borrow_mut().gauges.push(Gauge {
            name,
            operator: operator.to_string(),
            partition,
            read: Box::new(read),
        });
    }

    /// A copy of the counters, quantiles and gauges for the metrics endpoint.
    pub fn snapshot(&self, now_ns: u64) -> CoreSnapshot {
        let m = self.0.borrow();
        let counters = m.counters_by_name();
        let gauges = m
            .gauges
            .iter()
            .filter_map(|g| {
                (g.read)().map(|value| GaugeValue {
                    name: g.name,
                    operator: g.operator.clone(),
                    partition: g.partition,
                    value,
                })
            })
            .collect();
        CoreSnapshot {
            at_ns: now_ns,
            counters,
            latency: Quantiles::of(&m.latency),
            io_time: Quantiles::of(&m.io_time),
            gauges,
            checkpoints: None,
        }
    }

    /// Turns the metrics into a report that can leave the core.
    pub fn report(&self, core: CoreId) -> ShardReport {
        let m = self.0.borrow();
        let counters = m.counters_by_name();
        ShardReport {
            core,
            latency: m.latency.clone(),
            io_time: m.io_time.clone(),
            counters,
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
    /// Async request times, issue to completion, ns.
    pub io_time: Histogram<u64>,
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
    /// All async request times merged, ns.
    pub io_time: Histogram<u64>,
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
    /// From the start of the run (restore included) to the first output: the first record
    /// at a sink, or for a transactional file sink the first commit that held rows.
    pub first_output: Option<Duration>,
    /// What the job's monitor saw: stalls (loop rounds longer than the threshold, with
    /// their operators), the threshold, and the process's resident memory over the run.
    pub monitor: crate::monitor::MonitorOutcome,
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
        let mut io_time = new_histogram();
        let mut counters = BTreeMap::new();
        let mut checkpoints = Vec::new();
        for s in &shards {
            checkpoints.extend(s.checkpoints.iter().cloned());
            latency.add(&s.latency).expect("histograms share bounds");
            io_time.add(&s.io_time).expect("histograms share bounds");
            for (k, v) in &s.counters {
                *counters.entry(k.clone()).or_default() += *v;
            }
        }
        Self {
            shards,
            latency,
            io_time,
            counters,
            start_ns,
            elapsed,
            stopped,
            checkpoints,
            restored_from: None,
            restarts: 0,
            first_output: None,
            monitor: crate::monitor::MonitorOutcome::default(),
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
                "first output  {:.1} ms after the run started (restore included; file sinks: \
                 the first commit of rows)",
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
        // By cause, summarised: a crowded machine causes hundreds of contention stalls.
        for line in crate::monitor::stall::summarize(&self.monitor.stalls) {
            writeln!(f, "stalls        {line} (`rill doctor` has more)")?;
        }
        for c in &self.monitor.sched {
            writeln!(
                f,
                "cpu wait      core {} (CPU {}) ran {:.0}% and waited {:.1}% of {:.1} s for its CPU; \
                 {} involuntary, {} voluntary switches",
                c.core,
                c.cpu,
                c.run_share() * 100.0,
                c.wait_share() * 100.0,
                c.span_ms / 1e3,
                c.involuntary,
                c.voluntary
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
