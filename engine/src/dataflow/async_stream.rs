//! `async_map` / `async_flat_map` on a stream: wires an `asyncio` operator partition into
//! its core (timers, checkpoint participant, restored in-flight inputs, and a port the
//! shard loop flushes every round), with the capacity the core file may override
//! (`async_capacity`). The operator itself lives in `crate::asyncio`.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;

use super::graph::NodeKind;
use super::ops::BoxEmit;
use super::{Data, Stream};
use crate::asyncio::op::{
    async_operator_id, async_watermark_id, replay, Archive, AsyncCore, AsyncOp, AsyncParts,
};
use crate::asyncio::{AsyncCtx, AsyncError, AsyncOptions, AsyncResult, BoxFuture, Capacity};
use crate::checkpoint::codec::Record;
use crate::error::EngineError;

impl<T: Data + Record> Stream<T> {
    /// Runs `call` (made per partition by `factory`, on its core) for every record as a
    /// future polled by the core; each result is any number of records. See
    /// [`crate::asyncio`] for modes, capacity, timeouts, retries and checkpoints.
    /// Records must be archivable: the inputs of unfinished requests are checkpointed.
    pub fn async_flat_map<U, G, F, Fut>(
        &self,
        name: &str,
        opts: AsyncOptions<T, U>,
        factory: G,
    ) -> Stream<U>
    where
        U: Data,
        G: Fn(&AsyncCtx) -> F + Send + Sync + 'static,
        F: FnMut(T) -> Fut + 'static,
        Fut: Future<Output = AsyncResult<U>> + 'static,
    {
        let factory = Arc::new(factory);
        let opts = Arc::new(opts);
        let node = self.b.borrow_mut().add_op::<T>(
            name,
            self.node,
            NodeKind::Op,
            Arc::new(move |inst, node, _from, p| {
                let timers = inst.core_timers();
                let ctx = AsyncCtx {
                    timers: timers.clone(),
                    partition: p.0,
                };
                let mut f = factory(&ctx);
                let call: Box<dyn FnMut(T) -> BoxFuture<U>> =
                    Box::new(move |t| Box::pin(f(t)) as BoxFuture<U>);
                let down: BoxEmit<U> = inst.downstream_noted::<U>(node, p);
                let opname = inst.node_name(node).to_string();
                // Per old partition (same index modulo the parallelism): its archived
                // inputs and the watermarks among them, replayed in order.
                let mut parts: BTreeMap<u32, Archive<T>> = BTreeMap::new();
                if let Some(r) = inst.restore() {
                    let par = inst.parallelism(node);
                    let mine = |blob: &&rill_storage::RecordView| {
                        blob.header().owner.partition.0 % par == p.0
                    };
                    for blob in r.blobs(async_operator_id(&opname)).into_iter().filter(mine) {
                        let old = blob.header().owner.partition.0;
                        match T::decode(blob.payload()) {
                            Ok(v) => parts.entry(old).or_default().0.extend(v),
                            Err(e) => inst.fail(EngineError::Restore {
                                checkpoint: r.id,
                                reason: format!("in-flight inputs of `{opname}`: {e}"),
                            }),
                        }
                    }
                    for blob in r
                        .blobs(async_watermark_id(&opname))
                        .into_iter()
                        .filter(mine)
                    {
                        let old = blob.header().owner.partition.0;
                        match <(u64, u64)>::decode(blob.payload()) {
                            Ok(v) => parts.entry(old).or_default().1.extend(v),
                            Err(e) => inst.fail(EngineError::Restore {
                                checkpoint: r.id,
                                reason: format!("queued watermarks of `{opname}`: {e}"),
                            }),
                        }
                    }
                }
                let restored = replay(parts.into_values().collect());
                let parts = AsyncParts {
                    name: opname,
                    partition: p.0,
                    timers,
                    failure: inst.failure(),
                    metrics: inst.metrics(),
                    ckpt: inst.participant(node, p, "operator"),
                    sources_done: inst.sources_done(),
                };
                // The core file's `async_capacity` beats the operator's capacity (fixed
                // or auto) for the partitions on this core.
                let mut opts = (*opts).clone();
                if let Some(n) = inst.async_capacity() {
                    opts.capacity = Capacity::Fixed(n);
                }
                let core = Rc::new(RefCell::new(AsyncCore::new(
                    parts, opts, call, down, restored,
                )));
                crate::asyncio::op::register_gauges(&core, &inst.metrics());
                inst.register_port(core.clone(), node, p);
                Box::new(AsyncOp(core))
            }),
        );
        Stream::at(&self.b, node)
    }

    /// `async_flat_map` whose call returns exactly one record.
    pub fn async_map<U, G, F, Fut>(
        &self,
        name: &str,
        opts: AsyncOptions<T, U>,
        factory: G,
    ) -> Stream<U>
    where
        U: Data,
        G: Fn(&AsyncCtx) -> F + Send + Sync + 'static,
        F: FnMut(T) -> Fut + 'static,
        Fut: Future<Output = Result<U, AsyncError>> + 'static,
    {
        self.async_flat_map(name, opts, move |ctx| {
            let mut f = factory(ctx);
            move |t| {
                let fut = f(t);
                async move { fut.await.map(|u| vec![u]) }
            }
        })
    }
}
