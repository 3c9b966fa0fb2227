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
use crate::connectors::{Generator, LatencySink};
use crate::dataflow::{JobGraph, Out, Pipeline};
use crate::error::Result;
use crate::keys::stable_hash;
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
    let events = (u128::from(g.rate_eps) * u128::from(g.duration_ms) / 1_000) as u64;
    let p = Pipeline::new(spec.job.max_key_groups);
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
