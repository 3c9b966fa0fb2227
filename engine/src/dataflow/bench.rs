//! Hooks for the criterion benchmarks in `perf/benches/` (hidden from the docs; not an API):
//! an exchange [`Receiver`](super::exchange) fed by rings, and a window operator, each built
//! and called exactly as the shard builds and calls them, so a benchmark times the engine's
//! own code rather than a copy of it.
//!
//! Owns: the construction of those two outside a pipeline and a chain end that hands what
//! arrives to a closure. Must not: be used by the engine, or add behaviour to what it
//! drives (every method is one call into the real code).

use std::cell::{Cell, RefCell};
use std::hash::Hash;
use std::marker::PhantomData;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use super::exchange::{Alignment, Receiver, RecvInput, Routed};
use super::ops::Emit;
use super::timers::{TimedOp, Timers};
use super::windows::{Aggregate, WindowOutput, WindowProcess, WindowSpec};
use super::Keyed;
use crate::checkpoint::codec::Entry;
use crate::checkpoint::core::CoreCheckpoints;
use crate::clock::{Clock, MonotonicClock};
use crate::config::CheckpointMode;
use crate::ids::{CheckpointId, CoreId, KeyGroup};
use crate::message::{Barrier, Control, Message, Watermark};
use crate::ring::{channel, Doorbell, Producer};
use crate::state::StateInit;

/// The end of a chain: records go to `f`, barriers are counted.
pub(crate) struct FnSink<T, F> {
    f: F,
    barriers: Rc<Cell<u64>>,
    last_barrier: Rc<Cell<Option<CheckpointId>>>,
    _t: PhantomData<fn(T)>,
}

impl<T, F: FnMut(T)> FnSink<T, F> {
    pub(crate) fn new(f: F) -> Self {
        Self {
            f,
            barriers: Rc::default(),
            last_barrier: Rc::default(),
            _t: PhantomData,
        }
    }
}

impl<T, F: FnMut(T)> Emit<T> for FnSink<T, F> {
    #[inline]
    fn data(&mut self, rec: T) {
        (self.f)(rec);
    }
    fn control(&mut self, c: Control) {
        if let Control::Barrier(b) = c {
            self.barriers.set(self.barriers.get() + 1);
            self.last_barrier.set(Some(b.id));
        }
    }
    fn end(&mut self) {}
}

type Ring = Producer<Message<Routed<u64>>>;

/// One exchange receiver on core 0 whose inputs are all rings from other cores, with one
/// local partition that counts the records and barriers reaching it.
pub struct ReceiverDriver {
    rx: Receiver<u64>,
    rings: Vec<Ring>,
    core: Rc<RefCell<CoreCheckpoints>>,
    clock: MonotonicClock,
    records: Rc<Cell<u64>>,
    barriers: Rc<Cell<u64>>,
    last_barrier: Rc<Cell<Option<CheckpointId>>>,
}

impl ReceiverDriver {
    /// `inputs` rings of `ring_capacity` slots; the receiver takes up to
    /// `ring_capacity / 4` records per input per poll, as a job with the default
    /// `batch_max` does. `exactly_once`: aligned checkpoints (an input that delivered a
    /// barrier is held until every input has); otherwise at-least-once (nothing held).
    pub fn new(inputs: usize, ring_capacity: usize, exactly_once: bool) -> Self {
        let mode = if exactly_once {
            CheckpointMode::ExactlyOnce
        } else {
            CheckpointMode::AtLeastOnce
        };
        let core = Rc::new(RefCell::new(CoreCheckpoints::new(0, mode, false, 4)));
        let records = Rc::new(Cell::new(0u64));
        let counted = records.clone();
        let sink = FnSink::new(move |_: u64| counted.set(counted.get() + 1));
        let (barriers, last_barrier) = (sink.barriers.clone(), sink.last_barrier.clone());
        let mut rings = Vec::with_capacity(inputs);
        let mut recv = Vec::with_capacity(inputs);
        for i in 0..inputs {
            let (tx, rx) = channel::<Message<Routed<u64>>>(ring_capacity);
            rings.push(tx);
            recv.push(RecvInput {
                ring: Some(rx),
                producer: Arc::new(Doorbell::new()),
                core: CoreId(i + 1),
            });
        }
        let clock = MonotonicClock::new(Instant::now());
        let align = Alignment {
            hold: exactly_once,
            unaligned_after_ns: None,
            core: core.clone(),
            participant: None,
            clock,
            name: "bench".into(),
            core_index: 0,
        };
        let burst = (ring_capacity / 4).max(1);
        let rx = Receiver::new(recv, vec![Some(Box::new(sink))], burst, Some(align));
        Self {
            rx,
            rings,
            core,
            clock,
            records,
            barriers,
            last_barrier,
        }
    }

    /// Pushes barrier `id` onto input `input`'s ring; false if that ring is full.
    pub fn push_barrier(&mut self, input: usize, id: u64) -> bool {
        let b = Message::Barrier(Barrier::new(CheckpointId(id)));
        self.rings[input].try_push(b).is_ok()
    }

    /// Pushes a batch of records onto input `input`'s ring; false if that ring is full.
    pub fn push_data(&mut self, input: usize, records: &[u64]) -> bool {
        let batch = records.iter().map(|r| (0, *r)).collect();
        self.rings[input].try_push(Message::Data(batch)).is_ok()
    }

    /// One poll, as the shard loop's receiver driver makes: returns whether anything
    /// arrived.
    #[inline]
    pub fn poll(&mut self) -> bool {
        self.rx.poll()
    }

    /// Records delivered to the partition so far.
    pub fn records(&self) -> u64 {
        self.records.get()
    }

    /// Barriers forwarded to the partition so far, and the last one's id.
    pub fn barriers(&self) -> (u64, Option<u64>) {
        (self.barriers.get(), self.last_barrier.get().map(|c| c.0))
    }

    /// Drops the core's bookkeeping of checkpoints up to `id` (in a job the coordinator
    /// completes them); call between timed runs so that table stays as small as in a job.
    pub fn forget_checkpoints(&mut self, id: u64) {
        let mut c = self.core.borrow_mut();
        c.on_abort(CheckpointId(id), self.clock.now_ns());
        c.outbox.clear();
    }
}

type WindowOut<K, V, A> = WindowOutput<K, <A as Aggregate<V>>::Out, V>;
type WindowOp<K, V, A, F> = TimedOp<K, V, WindowProcess<K, V, A, F>, WindowOut<K, V, A>>;

/// One window operator partition owning `max_key_groups` key groups (not incremental),
/// handing its output to a closure; late records are counted, not emitted.
pub struct WindowDriver<K, V, A: Aggregate<V>, F> {
    op: WindowOp<K, V, A, F>,
}

impl<K, V, A, F> WindowDriver<K, V, A, F>
where
    K: Hash + Eq + Ord + Clone + 'static,
    V: 'static,
    A: Aggregate<V>,
    F: Fn(&V) -> u64 + 'static,
    (K, Vec<(u8, u64)>): Entry<K = K, V = Vec<(u8, u64)>> + 'static,
    (K, Vec<(u64, A::Acc)>): Entry<K = K, V = Vec<(u64, A::Acc)>> + 'static,
    (K, Vec<(u64, u64, A::Acc)>): Entry<K = K, V = Vec<(u64, u64, A::Acc)>> + 'static,
{
    /// Windows of `spec` over event time `ts` (ms) aggregated by `agg`; every output goes
    /// to `sink`.
    pub fn new(
        max_key_groups: u16,
        spec: WindowSpec,
        ts: F,
        agg: A,
        sink: impl FnMut(WindowOut<K, V, A>) + 'static,
    ) -> Self {
        let mut init = StateInit::new(max_key_groups);
        let timers = Timers::declare(&mut init);
        let f = WindowProcess::declare(&mut init, spec, Arc::new(agg), Arc::new(ts), false);
        Self {
            op: TimedOp::standalone(
                "bench",
                max_key_groups,
                init,
                timers,
                f,
                Box::new(FnSink::new(sink)),
            ),
        }
    }

    /// One record of `key` (in `key_group`, as `key_by` computed it).
    #[inline]
    pub fn record(&mut self, key: K, key_group: KeyGroup, value: V) {
        self.op.data(Keyed {
            key,
            key_group,
            value,
        });
    }

    /// The watermark reaches `ms`: due windows fire.
    pub fn watermark(&mut self, ms: u64) {
        self.op.control(Control::Watermark(Watermark(ms)));
    }

    /// End of input: every remaining window fires.
    pub fn end(&mut self) {
        self.op.end();
    }

    /// Records dropped as late so far.
    pub fn late_records(&self) -> u64 {
        self.op
            .core
            .borrow()
            .metrics
            .report(CoreId(0))
            .counters
            .get("late_records")
            .copied()
            .unwrap_or(0)
    }
}
