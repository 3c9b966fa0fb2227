//! The default latency job: an open-loop generator → `key_by(key)` → a per-key count in
//! keyed state → the latency sink. Half of the records (on 2 cores) cross a core, so it
//! measures the record path end to end: source, ring hop, keyed state, sink.

use crate::config::{GeneratorConfig, JobSpec};
use crate::connectors::{Generator, LatencySink};
use crate::dataflow::{JobGraph, Out, Pipeline, Stream};
use crate::error::Result;
use crate::keys::stable_hash;

/// One generated event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct LatencyEvent {
    /// Global sequence number.
    pub seq: u64,
    /// The key it is partitioned by.
    pub key: u64,
    /// When it was due (ns on the job clock).
    pub due_ns: u64,
    /// False during warm-up.
    pub measure: bool,
    /// How many events with this key came before it, plus one (set by the keyed count).
    pub count: u64,
}

/// The shared front of the latency-style jobs: the open-loop generator of `g` (events
/// with `keys` distinct keys) → `key_by(key)` → a per-key count in keyed state. Returns
/// the counted events; the caller adds what follows (a sink, an async lookup).
pub fn counted_events(p: &Pipeline, g: &GeneratorConfig, keys: u64) -> Stream<LatencyEvent> {
    let events = (u128::from(g.rate_eps) * u128::from(g.duration_ms) / 1_000) as u64;
    let mut source = p.source(
        "generator",
        Generator::new(g.rate_eps, events, g.warmup_ms * 1_000_000, move |t| {
            LatencyEvent {
                seq: t.seq,
                key: stable_hash(&t.seq) % keys,
                due_ns: t.due_ns,
                measure: t.measure,
                count: 0,
            }
        }),
    );
    if let Some(n) = g.partitions {
        source = source.parallelism(n);
    }
    source
        .key_by("by-key", |e: &LatencyEvent| e.key)
        .process("count", |init| {
            let count = init.value::<u64>("count");
            move |ctx, mut e: LatencyEvent, out: &mut Out<'_, LatencyEvent>| {
                e.count = count.update(
                    ctx,
                    || 0,
                    |c| {
                        *c += 1;
                        *c
                    },
                );
                out.emit(e);
            }
        })
}

/// Builds the latency pipeline from the `[generator]` table.
pub fn build(spec: &JobSpec) -> Result<JobGraph> {
    let g = spec.job.generator.clone().unwrap_or_default();
    let p = Pipeline::new(spec.job.max_key_groups);
    counted_events(&p, &g, g.keys).sink(
        "latency",
        LatencySink::new(|e: &LatencyEvent| (e.due_ns, e.measure)).with_cost_ns(g.sink_cost_ns),
    );
    p.build(spec.default_parallelism())
}
