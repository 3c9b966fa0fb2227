//! The `keyed-async` latency job: an open-loop generator (rate from `[generator]`, keys
//! from `[source] keys`) → `key_by(key)` → a per-key count in keyed state → an async
//! lookup (`[async]` mode, capacity, timeout; `[lookup]` a simulated service with a
//! configured delay distribution, waited for on the core's timers, or Redis on the core's
//! io_uring) → the latency sink.
//! The lookup's IO delay is the latency floor; what the sink measures above it is the
//! engine's overhead.

use std::future::Future;
use std::pin::Pin;

use crate::asyncio::lookup::{SimulatedLookup, ThreadPoolLookup};
use crate::asyncio::redis::{RedisClient, Reply};
use crate::asyncio::AsyncError;
use crate::config::asyncio::{ExecutorSetting, LookupKind};
use crate::config::JobSpec;
use crate::connectors::LatencySink;
use crate::dataflow::{JobGraph, Pipeline};
use crate::error::Result;
use crate::pipelines::latency::LatencyEvent;

/// The service of one partition.
enum Service {
    Simulated(SimulatedLookup),
    /// The thread-pool comparison (`executor = "thread-pool"`).
    Pool(ThreadPoolLookup),
    /// `GET key:<key>`; the connection error, if connecting failed (every request then
    /// fails with it, naming the operator).
    Redis(std::result::Result<RedisClient, String>),
}

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
    let latency = lookup.latency();
    let seed = lookup.seed;
    let kind = lookup.kind;
    let (executor, pool_threads) = (lookup.executor, lookup.pool_threads);
    let addr = lookup.addr.clone();
    let p = Pipeline::new(spec.job.max_key_groups);
    super::latency::counted_events(&p, &g, keys)
        .async_map("lookup", opts, move |ctx| {
            let mut service = match kind {
                LookupKind::Simulated if executor == ExecutorSetting::ThreadPool => {
                    Service::Pool(ThreadPoolLookup::new(
                        ctx.timers.clone(),
                        latency,
                        seed.wrapping_add(u64::from(ctx.partition)),
                        pool_threads,
                    ))
                }
                LookupKind::Simulated => Service::Simulated(SimulatedLookup::new(
                    ctx.timers.clone(),
                    latency,
                    seed.wrapping_add(u64::from(ctx.partition)),
                )),
                LookupKind::Redis => Service::Redis(
                    ctx.timers
                        .uring()
                        .and_then(|u| RedisClient::connect(&addr, u))
                        .map_err(|e| format!("connecting to redis at {addr}: {e}")),
                ),
            };
            move |e: LatencyEvent| -> Pin<Box<dyn Future<Output = Result<LatencyEvent, AsyncError>>>> {
                match &mut service {
                    Service::Simulated(s) => {
                        let fut = s.call(e, |e| e);
                        Box::pin(async move { fut.await.map(|mut v| v.remove(0)) })
                    }
                    Service::Pool(s) => {
                        let fut = s.call(e, |e| e);
                        Box::pin(async move { fut.await.map(|mut v| v.remove(0)) })
                    }
                    Service::Redis(Ok(c)) => {
                        let req = c.get(format!("key:{}", e.key).as_bytes());
                        Box::pin(async move {
                            match req.await? {
                                Reply::Bulk(Some(_)) => Ok(e),
                                other => Err(AsyncError::Service(format!(
                                    "GET key:{}: {other:?}",
                                    e.key
                                ))),
                            }
                        })
                    }
                    Service::Redis(Err(m)) => {
                        let m = m.clone();
                        Box::pin(async move { Err(AsyncError::Service(m)) })
                    }
                }
            }
        })
        .sink(
            "latency",
            LatencySink::new(|e: &LatencyEvent| (e.due_ns, e.measure)).with_cost_ns(g.sink_cost_ns),
        );
    p.build(spec.default_parallelism())
}
