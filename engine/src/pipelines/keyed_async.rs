//! The `keyed-async` latency job: an open-loop generator (rate from `[generator]`, keys
//! from `[source] keys`) → `key_by(key)` → a per-key count in keyed state → an async
//! lookup (`[async]` mode, capacity, timeout; `[lookup]` a simulated service with a
//! configured delay distribution, waited for on the core's timers, or Redis on the core's
//! io_uring) → the latency sink.
//! The lookup's IO delay is the latency floor; what the sink measures above it is the
//! engine's overhead.

use crate::asyncio::service::Service;
use crate::config::JobSpec;
use crate::connectors::LatencySink;
use crate::dataflow::{JobGraph, Pipeline};
use crate::error::Result;
use crate::pipelines::latency::LatencyEvent;

/// Builds the keyed-async pipeline. With `kind = "redis"`, each event's lookup is
/// `GET key:<key>` on one pipelined connection per partition; a missing key fails it.
pub fn build(spec: &JobSpec) -> Result<JobGraph> {
    let g = spec.job.generator.clone().unwrap_or_default();
    let keys = spec
        .job
        .source
        .as_ref()
        .and_then(|s| s.keys)
        .unwrap_or(g.keys);
    let opts = spec.job.async_io.clone().unwrap_or_default().options();
    let lookup = spec.job.lookup.clone().unwrap_or_default();
    let p = Pipeline::new(spec.job.max_key_groups);
    super::latency::counted_events(&p, &g, keys)
        .async_map("lookup", opts, move |ctx| {
            let mut service = Service::new(&lookup, ctx);
            move |e: LatencyEvent| {
                let fut = service.get(e.key, e);
                async move { fut.await.map(|(e, _)| e) }
            }
        })
        .sink(
            "latency",
            LatencySink::new(|e: &LatencyEvent| (e.due_ns, e.measure)).with_cost_ns(g.sink_cost_ns),
        );
    p.build(spec.default_parallelism())
}
