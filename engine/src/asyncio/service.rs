//! The lookup service `[lookup]` configures, for any pipeline's async operator: the
//! simulated service on the core's timers, the same on a pool of OS threads
//! (`executor = "thread-pool"`), or Redis on the core's io_uring (`kind = "redis"`:
//! `GET key:<key>` on one pipelined connection per partition). The built-in
//! `keyed-async` job and the example jobs use it, so that every `[lookup]` key means the
//! same in each. A pipeline gets its table from `app::Ctx::lookup`.

use std::future::Future;
use std::pin::Pin;

use super::lookup::{SimulatedLookup, ThreadPoolLookup};
use super::redis::{RedisClient, Reply};
use super::{AsyncCtx, AsyncError};
use crate::config::asyncio::{ExecutorSetting, LookupConfig, LookupKind};

/// One lookup in flight: the input back, with the value Redis holds for its key (`None`
/// from the simulated services, which have no values).
pub type Lookup<T> = Pin<Box<dyn Future<Output = Result<(T, Option<Vec<u8>>), AsyncError>>>>;

/// The service of one partition.
pub enum Service {
    /// The simulated delay on the core's timers.
    Simulated(SimulatedLookup),
    /// The simulated delay as blocking calls on a pool of OS threads (the comparison).
    Pool(ThreadPoolLookup),
    /// `GET key:<key>`; the connection error, if connecting failed (every request then
    /// fails with it, naming the operator).
    Redis(Result<RedisClient, String>),
}

impl Service {
    /// The service `cfg` describes, for the partition of `ctx`.
    pub fn new(cfg: &LookupConfig, ctx: &AsyncCtx) -> Self {
        let seed = cfg.seed.wrapping_add(u64::from(ctx.partition));
        match cfg.kind {
            LookupKind::Simulated if cfg.executor == ExecutorSetting::ThreadPool => Service::Pool(
                ThreadPoolLookup::new(ctx.timers.clone(), cfg.latency(), seed, cfg.pool_threads),
            ),
            LookupKind::Simulated => Service::Simulated(SimulatedLookup::new(
                ctx.timers.clone(),
                cfg.latency(),
                seed,
            )),
            LookupKind::Redis => Service::Redis(
                ctx.timers
                    .uring()
                    .and_then(|u| RedisClient::connect(&cfg.addr, u))
                    .map_err(|e| format!("connecting to redis at {}: {e}", cfg.addr)),
            ),
        }
    }

    /// Looks `key` up for `input`. The simulated services answer after their delay with
    /// no value; Redis answers with the value of `GET key:<key>`, and a missing key fails
    /// the request, naming it.
    pub fn get<T: 'static>(&mut self, key: impl std::fmt::Display, input: T) -> Lookup<T> {
        match self {
            Service::Simulated(s) => {
                let fut = s.call(input, |i| i);
                Box::pin(async move { fut.await.map(|mut v| (v.remove(0), None)) })
            }
            Service::Pool(s) => {
                let fut = s.call(input, |i| i);
                Box::pin(async move { fut.await.map(|mut v| (v.remove(0), None)) })
            }
            Service::Redis(Ok(c)) => {
                let key = format!("key:{key}");
                let req = c.get(key.as_bytes());
                Box::pin(async move {
                    match req.await? {
                        Reply::Bulk(Some(v)) => Ok((input, Some(v))),
                        other => Err(AsyncError::Service(format!("GET {key}: {other:?}"))),
                    }
                })
            }
            Service::Redis(Err(m)) => {
                let m = m.clone();
                Box::pin(async move { Err(AsyncError::Service(m)) })
            }
        }
    }
}
