//! Hooks for the criterion benchmarks in `perf/benches/` (hidden from the docs; not an API):
//! one async operator partition built as the shard builds it (no checkpoint participant,
//! sources not finished) and called as the chain and the shard loop call it, so a
//! benchmark times the operator's own bookkeeping per request.
//!
//! Owns: that construction. Must not: be used by the engine, or add behaviour to the
//! operator (every method is one call into the real code).

use std::cell::RefCell;
use std::rc::Rc;

use super::op::{AsyncCore, AsyncOp, AsyncParts};
use super::{AsyncOptions, BoxFuture, Timers};
use crate::checkpoint::codec::Record;
use crate::dataflow::bench::FnSink;
use crate::dataflow::exchange::Port;
use crate::dataflow::ops::{Emit, FailureSlot};
use crate::error::EngineError;
use crate::message::{Control, Watermark};
use crate::metrics::MetricsHandle;

/// One partition of an async operator whose results go to a closure.
pub struct AsyncDriver<T, U> {
    core: Rc<RefCell<AsyncCore<T, U>>>,
    op: AsyncOp<T, U>,
    failure: FailureSlot,
}

impl<T: Clone + Record + 'static, U: 'static> AsyncDriver<T, U> {
    /// An operator with `opts` on the core's `timers` that calls `call` per request and
    /// hands each result record to `sink`.
    pub fn new(
        opts: AsyncOptions<T, U>,
        timers: Timers,
        call: impl FnMut(T) -> BoxFuture<U> + 'static,
        sink: impl FnMut(U) + 'static,
    ) -> Self {
        let failure = FailureSlot::default();
        let parts = AsyncParts {
            name: "bench".into(),
            partition: 0,
            timers,
            failure: failure.clone(),
            metrics: MetricsHandle::default(),
            ckpt: None,
            sources_done: Box::new(|| false),
        };
        let core = Rc::new(RefCell::new(AsyncCore::new(
            parts,
            opts,
            Box::new(call),
            Box::new(FnSink::new(sink)),
            Vec::new(),
        )));
        Self {
            op: AsyncOp(core.clone()),
            core,
            failure,
        }
    }

    /// One input record, as the chain delivers it.
    #[inline]
    pub fn data(&mut self, rec: T) {
        self.op.data(rec);
    }

    /// A watermark, as the chain delivers it.
    pub fn watermark(&mut self, ms: u64) {
        self.op.control(Control::Watermark(Watermark(ms)));
    }

    /// End of input.
    pub fn end(&mut self) {
        self.op.end();
    }

    /// One round of the shard loop at `now_ns`: fires timers, polls woken requests, times
    /// out, retries, admits and emits. Returns whether anything moved.
    #[inline]
    pub fn flush(&mut self, now_ns: u64) -> bool {
        self.core.borrow_mut().flush(now_ns)
    }

    /// Whether the operator is at capacity (its drivers would stop feeding it).
    pub fn is_blocked(&self) -> bool {
        self.core.borrow().is_blocked()
    }

    /// Whether nothing is in flight, held or waiting.
    pub fn is_drained(&self) -> bool {
        self.core.borrow().is_drained()
    }

    /// The operator's failure, if it failed.
    pub fn take_failure(&self) -> Option<EngineError> {
        self.failure.take()
    }
}
