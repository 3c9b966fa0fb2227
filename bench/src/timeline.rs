//! Latency over time. The engine's `JobReport` has run-level histograms only, so for the
//! default `latency` pipeline the harness builds the same graph as
//! `rill_engine::pipelines::latency::build` (generator → `key_by(key)` → per-key count →
//! sink) with a sink that does what `LatencySink` does — records `now − due` into the
//! core's metrics, so the `JobReport` is the same — and also keeps one small histogram
//! per second of the schedule. Each record's place in the schedule is exact: event `seq`
//! is due `seq / rate` after the start. The per-second histograms leave the core once,
//! in `finish`. Other pipelines run through `rill_engine::pipelines::build` unchanged and
//! have no timeline.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use hdrhistogram::Histogram;
use rill_engine::clock::{Clock, MonotonicClock};
use rill_engine::config::JobSpec;
use rill_engine::dataflow::{JobGraph, PartitionContext, Pipeline, Sink, SinkPartition};
use rill_engine::metrics::MetricsHandle;
use rill_engine::pipelines::latency::LatencyEvent;
use serde::{Deserialize, Serialize};

use crate::stats::MAX_LATENCY_NS;

/// Width of one timeline interval.
pub const INTERVAL_NS: u64 = 1_000_000_000;

fn small_histogram() -> Histogram<u64> {
    // Two significant digits keep a per-second histogram at a few KiB.
    Histogram::new_with_bounds(1, MAX_LATENCY_NS, 2).expect("valid histogram bounds")
}

/// One partition's intervals, indexed by second: latency by the interval an event was
/// due in, arrivals by the interval it reached the sink in. Dense vectors: a run has few
/// seconds, and a record costs two index operations.
#[derive(Default)]
pub struct Buckets {
    due: Vec<Option<Histogram<u64>>>,
    arrived: Vec<u64>,
}

impl Buckets {
    #[inline]
    fn due(&mut self, i: usize) -> &mut Histogram<u64> {
        if i >= self.due.len() {
            self.due.resize_with(i + 1, || None);
        }
        self.due[i].get_or_insert_with(small_histogram)
    }

    #[inline]
    fn arrived(&mut self, i: usize) -> &mut u64 {
        if i >= self.arrived.len() {
            self.arrived.resize(i + 1, 0);
        }
        &mut self.arrived[i]
    }
}

/// Where sink partitions leave their buckets at the end of the run.
pub type Collector = Arc<Mutex<Vec<Buckets>>>;

/// The latency sink with a timeline.
pub struct TimelineSink {
    rate_eps: u64,
    collector: Collector,
}

impl Sink<LatencyEvent> for TimelineSink {
    fn partition(
        &self,
        ctx: &PartitionContext<'_>,
    ) -> rill_engine::Result<Box<dyn SinkPartition<LatencyEvent>>> {
        Ok(Box::new(TimelinePartition {
            rate_eps: self.rate_eps,
            clock: ctx.clock,
            metrics: ctx.metrics.clone(),
            records: 0,
            buckets: Buckets::default(),
            collector: self.collector.clone(),
        }))
    }
}

struct TimelinePartition {
    rate_eps: u64,
    clock: MonotonicClock,
    metrics: MetricsHandle,
    records: u64,
    buckets: Buckets,
    collector: Collector,
}

impl SinkPartition<LatencyEvent> for TimelinePartition {
    #[inline]
    fn write(&mut self, e: LatencyEvent) -> rill_engine::Result<()> {
        let now = self.clock.now_ns();
        let latency = now.saturating_sub(e.due_ns);
        if e.measure {
            self.metrics.record_latency(latency, now);
        } else {
            self.metrics.note_arrival(now);
        }
        // The generator's schedule: event `seq` is due `seq / rate` after the start.
        let offset = (u128::from(e.seq) * 1_000_000_000 / u128::from(self.rate_eps)) as u64;
        let start = e.due_ns.saturating_sub(offset);
        self.buckets
            .due((offset / INTERVAL_NS) as usize)
            .saturating_record(latency.clamp(1, MAX_LATENCY_NS));
        *self
            .buckets
            .arrived((now.saturating_sub(start) / INTERVAL_NS) as usize) += 1;
        self.records += 1;
        Ok(())
    }

    fn finish(&mut self) -> rill_engine::Result<()> {
        self.metrics
            .add("sink_records", std::mem::take(&mut self.records));
        let b = std::mem::take(&mut self.buckets);
        self.collector
            .lock()
            .expect("a sink partition panicked while holding the collector")
            .push(b);
        Ok(())
    }
}

/// Builds the default latency pipeline with a timeline sink; the same operators, names
/// and parameters as `rill_engine::pipelines::latency::build`.
pub fn build_latency(spec: &JobSpec) -> rill_engine::Result<(JobGraph, Collector)> {
    let g = spec.job.generator.clone().unwrap_or_default();
    let collector: Collector = Arc::default();
    let p = Pipeline::new(spec.job.max_key_groups);
    rill_engine::pipelines::latency::counted_events(&p, &g, g.keys).sink(
        "latency",
        TimelineSink {
            rate_eps: g.rate_eps,
            collector: collector.clone(),
        },
    );
    Ok((p.build(spec.default_parallelism())?, collector))
}

/// One second of a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    /// Seconds since the start of the schedule (the interval's start).
    pub t_s: f64,
    /// Whether the interval is (partly) in the warm-up.
    pub warmup: bool,
    /// Events due in this interval that reached a sink.
    pub events: u64,
    /// Latency of the events due in this interval, microseconds.
    pub p50_us: f64,
    /// p99, microseconds.
    pub p99_us: f64,
    /// p99.9, microseconds.
    pub p999_us: f64,
    /// Max, microseconds.
    pub max_us: f64,
    /// Events that reached a sink during this interval, per second.
    pub delivered_eps: f64,
}

/// Merges what the sink partitions collected into one row per interval.
pub fn collect(collector: &Collector, warmup_ms: u64) -> Vec<Interval> {
    let parts = collector.lock().expect("collector");
    let mut due: BTreeMap<u64, Histogram<u64>> = BTreeMap::new();
    let mut arrived: BTreeMap<u64, u64> = BTreeMap::new();
    for b in parts.iter() {
        for (k, h) in b.due.iter().enumerate() {
            if let Some(h) = h {
                due.entry(k as u64)
                    .or_insert_with(small_histogram)
                    .add(h)
                    .expect("same bounds");
            }
        }
        for (k, n) in b.arrived.iter().enumerate() {
            if *n > 0 {
                *arrived.entry(k as u64).or_default() += n;
            }
        }
    }
    let last = due.keys().chain(arrived.keys()).copied().max().unwrap_or(0);
    let empty = small_histogram();
    (0..=last)
        .filter(|k| due.contains_key(k) || arrived.contains_key(k))
        .map(|k| {
            let h = due.get(&k).unwrap_or(&empty);
            let q = |q: f64| {
                if h.is_empty() {
                    0.0
                } else {
                    h.value_at_quantile(q) as f64 / 1e3
                }
            };
            Interval {
                t_s: (k * INTERVAL_NS) as f64 / 1e9,
                warmup: k * INTERVAL_NS < warmup_ms * 1_000_000,
                events: h.len(),
                p50_us: q(0.5),
                p99_us: q(0.99),
                p999_us: q(0.999),
                max_us: if h.is_empty() {
                    0.0
                } else {
                    h.max() as f64 / 1e3
                },
                delivered_eps: arrived.get(&k).copied().unwrap_or(0) as f64 * 1e9
                    / INTERVAL_NS as f64,
            }
        })
        .collect()
}
