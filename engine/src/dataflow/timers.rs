//! Timers of keyed `process` functions: event-time timers fired when the operator's
//! watermark passes them, processing-time timers fired by the shard loop when the job
//! clock passes them. Timers are deduplicated per (key, domain, time) and fired in order
//! of (time, key group, key). They are part of the keyed state: each key's pending
//! timers live in a value-state table (`__timers`) checkpointed per key group like any
//! other state; the in-memory ordered index is rebuilt from it after a restore.
//!
//! This module owns the timer service, the `KeyedProcess` trait and its operator; the
//! watermark arriving at the operator is already the minimum over its inputs
//! (`InputSet`), so nothing here combines inputs.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::hash::Hash;
use std::marker::PhantomData;
use std::rc::Rc;
use std::sync::Arc;

use super::graph::NodeKind;
use super::instantiate::{Driver, KeyedPart, Step};
use super::ops::{BoxEmit, Emit, Out};
use super::{Data, Keyed, KeyedStream, Stream};
use crate::checkpoint::codec::Entry;
use crate::clock::Clock;
use crate::ids::KeyGroup;
use crate::message::Control;
use crate::metrics::MetricsHandle;
use crate::state::{KeyCtx, StateInit, ValueState};

/// Which clock a timer follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TimeDomain {
    /// Fires when the watermark reaches its time (ms of event time).
    EventTime,
    /// Fires when the job clock reaches its time (ms since the job clock's origin).
    ProcessingTime,
}

impl TimeDomain {
    fn code(self) -> u8 {
        match self {
            TimeDomain::EventTime => 0,
            TimeDomain::ProcessingTime => 1,
        }
    }
}

/// The timers of one keyed operator partition: the checkpointed per-key table and an
/// ordered index per domain.
pub struct Timers<K> {
    table: ValueState<K, Vec<(u8, u64)>>,
    event: BTreeSet<(u64, KeyGroup, K)>,
    processing: BTreeSet<(u64, KeyGroup, K)>,
}

impl<K: Hash + Eq + Ord + Clone + 'static> Timers<K> {
    /// Declares the timer table in `init`.
    pub fn declare(init: &mut StateInit<K>) -> Self
    where
        (K, Vec<(u8, u64)>): Entry<K = K, V = Vec<(u8, u64)>> + 'static,
    {
        Self {
            table: init.value("__timers"),
            event: BTreeSet::new(),
            processing: BTreeSet::new(),
        }
    }

    fn index(&mut self, d: TimeDomain) -> &mut BTreeSet<(u64, KeyGroup, K)> {
        match d {
            TimeDomain::EventTime => &mut self.event,
            TimeDomain::ProcessingTime => &mut self.processing,
        }
    }

    /// Rebuilds the index from the table (after a restore) for the key groups owned.
    pub fn rebuild(&mut self, groups: &[KeyGroup]) {
        let mut found = Vec::new();
        self.table.with_table(|t| {
            for kg in groups {
                for (k, ts) in t.entries(*kg) {
                    for (d, at) in ts {
                        found.push((*d, *at, *kg, k.clone()));
                    }
                }
            }
        });
        for (d, at, kg, k) in found {
            let d = if d == 0 {
                TimeDomain::EventTime
            } else {
                TimeDomain::ProcessingTime
            };
            self.index(d).insert((at, kg, k));
        }
    }

    /// Registers a timer; a second registration of the same (key, domain, time) is a
    /// no-op.
    pub fn register(&mut self, key: &K, kg: KeyGroup, d: TimeDomain, at: u64) {
        if self.index(d).insert((at, kg, key.clone())) {
            let ctx = KeyCtx::new(key, kg);
            self.table
                .update(&ctx, Vec::new, |v| v.push((d.code(), at)));
        }
    }

    /// Deletes a timer, if registered.
    pub fn delete(&mut self, key: &K, kg: KeyGroup, d: TimeDomain, at: u64) {
        if self.index(d).remove(&(at, kg, key.clone())) {
            self.unrecord(key, kg, d, at);
        }
    }

    fn unrecord(&mut self, key: &K, kg: KeyGroup, d: TimeDomain, at: u64) {
        let ctx = KeyCtx::new(key, kg);
        let empty = self.table.update(&ctx, Vec::new, |v| {
            v.retain(|x| *x != (d.code(), at));
            v.is_empty()
        });
        if empty {
            self.table.clear(&ctx);
        }
    }

    /// Removes and returns the earliest timer of domain `d` at or before `upto`.
    pub fn pop_due(&mut self, d: TimeDomain, upto: u64) -> Option<(u64, KeyGroup, K)> {
        let first = self.index(d).first()?;
        if first.0 > upto {
            return None;
        }
        let t = self.index(d).pop_first().expect("non-empty");
        self.unrecord(&t.2, t.1, d, t.0);
        Some(t)
    }

    /// The earliest timer of domain `d`.
    pub fn next(&self, d: TimeDomain) -> Option<u64> {
        match d {
            TimeDomain::EventTime => self.event.first().map(|t| t.0),
            TimeDomain::ProcessingTime => self.processing.first().map(|t| t.0),
        }
    }

    /// Number of pending timers.
    pub fn len(&self) -> usize {
        self.event.len() + self.processing.len()
    }

    /// Whether no timer is pending.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a `KeyedProcess` function sees: the current key, its timers, the watermark and
/// the job clock.
pub struct TimerCtx<'a, K> {
    key: &'a KeyCtx<'a, K>,
    timers: &'a mut Timers<K>,
    watermark: Option<u64>,
    now_ms: u64,
    metrics: &'a MetricsHandle,
}

impl<'a, K: Hash + Eq + Ord + Clone + 'static> TimerCtx<'a, K> {
    /// The current key and its state context.
    pub fn key_ctx(&self) -> &KeyCtx<'a, K> {
        self.key
    }

    /// The current key.
    pub fn key(&self) -> &K {
        self.key.key()
    }

    /// The operator's current watermark (ms), if any arrived.
    pub fn watermark(&self) -> Option<u64> {
        self.watermark
    }

    /// The job clock (ms).
    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// Registers an event-time timer for the current key at `at_ms`.
    pub fn register_event_timer(&mut self, at_ms: u64) {
        let (k, kg) = (self.key.key(), self.key.key_group());
        self.timers.register(k, kg, TimeDomain::EventTime, at_ms);
    }

    /// Deletes the current key's event-time timer at `at_ms`.
    pub fn delete_event_timer(&mut self, at_ms: u64) {
        let (k, kg) = (self.key.key(), self.key.key_group());
        self.timers.delete(k, kg, TimeDomain::EventTime, at_ms);
    }

    /// Registers a processing-time timer for the current key at `at_ms` (job clock).
    pub fn register_processing_timer(&mut self, at_ms: u64) {
        let (k, kg) = (self.key.key(), self.key.key_group());
        self.timers
            .register(k, kg, TimeDomain::ProcessingTime, at_ms);
    }

    /// Deletes the current key's processing-time timer at `at_ms`.
    pub fn delete_processing_timer(&mut self, at_ms: u64) {
        let (k, kg) = (self.key.key(), self.key.key_group());
        self.timers.delete(k, kg, TimeDomain::ProcessingTime, at_ms);
    }

    /// Adds `n` to this core's counter `name` (e.g. late records).
    pub fn count(&self, name: &'static str, n: u64) {
        self.metrics.add(name, n);
    }
}

/// A keyed function with timers: `process` for each record, `on_timer` for each due
/// timer of its key. Both get keyed state through the `StateInit` handles the factory
/// declared.
pub trait KeyedProcess<K, V, U> {
    /// One record of the current key.
    fn process(&mut self, ctx: &mut TimerCtx<'_, K>, value: V, out: &mut Out<'_, U>);
    /// A timer of the current key at `at_ms` in `domain` is due.
    fn on_timer(
        &mut self,
        ctx: &mut TimerCtx<'_, K>,
        at_ms: u64,
        domain: TimeDomain,
        out: &mut Out<'_, U>,
    );
}

/// The operator's state, shared by its chain link and its processing-time driver.
pub(crate) struct TimedCore<K, P, U> {
    pub(crate) f: P,
    pub(crate) timers: Timers<K>,
    pub(crate) keyed: KeyedPart<K>,
    pub(crate) down: BoxEmit<U>,
    pub(crate) watermark: Option<u64>,
    pub(crate) ended: bool,
    pub(crate) metrics: MetricsHandle,
}

impl<K: Hash + Eq + Ord + Clone + 'static, P, U> TimedCore<K, P, U> {
    fn now_ms(&self) -> u64 {
        self.keyed.clock.now_ns() / 1_000_000
    }

    fn record<V>(&mut self, rec: Keyed<K, V>)
    where
        P: KeyedProcess<K, V, U>,
    {
        let now_ms = self.now_ms();
        let kc = KeyCtx::new(&rec.key, rec.key_group);
        let mut ctx = TimerCtx {
            key: &kc,
            timers: &mut self.timers,
            watermark: self.watermark,
            now_ms,
            metrics: &self.metrics,
        };
        let mut out = Out::new(&mut *self.down);
        self.f.process(&mut ctx, rec.value, &mut out);
    }

    /// Fires every timer of `d` at or before `upto`, in order; timers registered while
    /// firing that are due fire in the same pass. Returns how many fired.
    fn fire<V>(&mut self, d: TimeDomain, upto: u64) -> usize
    where
        P: KeyedProcess<K, V, U>,
    {
        let mut n = 0;
        while let Some((at, kg, key)) = self.timers.pop_due(d, upto) {
            let now_ms = self.now_ms();
            let kc = KeyCtx::new(&key, kg);
            let mut ctx = TimerCtx {
                key: &kc,
                timers: &mut self.timers,
                watermark: self.watermark,
                now_ms,
                metrics: &self.metrics,
            };
            let mut out = Out::new(&mut *self.down);
            self.f.on_timer(&mut ctx, at, d, &mut out);
            n += 1;
        }
        n
    }

    fn watermark<V>(&mut self, w: crate::message::Watermark) -> bool
    where
        P: KeyedProcess<K, V, U>,
    {
        if w.is_idle() || self.watermark.is_some_and(|old| old >= w.0) {
            return false;
        }
        self.watermark = Some(w.0);
        self.fire::<V>(TimeDomain::EventTime, w.0);
        true
    }
}

/// The chain link of a `KeyedProcess` operator.
pub(crate) struct TimedOp<K, V, P, U> {
    pub(crate) core: Rc<RefCell<TimedCore<K, P, U>>>,
    pub(crate) _v: PhantomData<fn(V)>,
}

impl<K, V, P, U> Emit<Keyed<K, V>> for TimedOp<K, V, P, U>
where
    K: Hash + Eq + Ord + Clone + 'static,
    P: KeyedProcess<K, V, U>,
{
    #[inline]
    fn data(&mut self, rec: Keyed<K, V>) {
        self.core.borrow_mut().record(rec);
    }

    fn control(&mut self, c: Control) {
        let mut core = self.core.borrow_mut();
        match c {
            Control::Barrier(b) => {
                core.keyed.snapshot(b.id);
                core.down.control(Control::Barrier(b));
            }
            Control::Watermark(w) => {
                if w.is_idle() || core.watermark::<V>(w) {
                    core.down.control(c);
                }
            }
        }
    }

    fn end(&mut self) {
        let mut core = self.core.borrow_mut();
        // The input is complete: every event-time timer is due (as in Flink, the end of a
        // bounded input is the maximum watermark). Processing-time timers are dropped.
        core.watermark::<V>(crate::message::Watermark::MAX);
        core.ended = true;
        core.down.end();
    }
}

/// Fires a `KeyedProcess` operator's processing-time timers from the shard loop.
struct TimerDriver<K, V, P, U> {
    core: Rc<RefCell<TimedCore<K, P, U>>>,
    _v: PhantomData<fn(V)>,
}

impl<K, V, P, U> Driver for TimerDriver<K, V, P, U>
where
    K: Hash + Eq + Ord + Clone + 'static,
    P: KeyedProcess<K, V, U>,
{
    fn step(&mut self, now_ns: u64) -> Step {
        let mut core = self.core.borrow_mut();
        if core.ended {
            return Step::Done;
        }
        if core.fire::<V>(TimeDomain::ProcessingTime, now_ns / 1_000_000) > 0 {
            return Step::Progress;
        }
        Step::Idle(
            core.timers
                .next(TimeDomain::ProcessingTime)
                .map(|ms| ms.saturating_mul(1_000_000)),
        )
    }

    fn has_input(&self) -> bool {
        // The input ended since the last step: one more step reports `Done`.
        self.core.borrow().ended
    }
}

impl<K, V> KeyedStream<K, V>
where
    K: Data + Hash + Eq + Ord,
    V: Data,
{
    /// Runs a keyed function with keyed state and timers. `factory` is called once per
    /// partition (on its core) to declare state and return the function.
    pub fn process_with_timers<U, P, G>(&self, name: &str, factory: G) -> Stream<U>
    where
        U: Data,
        G: Fn(&mut StateInit<K>) -> P + Send + Sync + 'static,
        P: KeyedProcess<K, V, U> + 'static,
        (K, Vec<(u8, u64)>): Entry<K = K, V = Vec<(u8, u64)>> + 'static,
    {
        let factory = Arc::new(factory);
        let b = &self.inner.b;
        let node = b.borrow_mut().add_op::<Keyed<K, V>>(
            name,
            self.inner.node,
            NodeKind::Op,
            Arc::new(move |inst, node, _from, p| {
                let mut init =
                    StateInit::with_incremental(inst.max_key_groups(), inst.incremental());
                let mut timers = Timers::declare(&mut init);
                let f = factory(&mut init);
                let keyed = KeyedPart::new(inst, node, p, init);
                timers.rebuild(&keyed.groups);
                let core = Rc::new(RefCell::new(TimedCore {
                    f,
                    timers,
                    keyed,
                    down: inst.downstream::<U>(node, p),
                    watermark: None,
                    ended: false,
                    metrics: inst.metrics(),
                }));
                inst.add_driver(
                    Box::new(TimerDriver::<K, V, P, U> {
                        core: core.clone(),
                        _v: PhantomData,
                    }),
                    node,
                    Some(p),
                );
                Box::new(TimedOp::<K, V, P, U> {
                    core,
                    _v: PhantomData,
                })
            }),
        );
        b.borrow_mut().rekey_before::<K, V>(node);
        Stream::at(b, node)
    }
}

impl<K, V, P: KeyedProcess<K, V, U>, U: 'static> TimedOp<K, V, P, U>
where
    K: Hash + Eq + Clone + 'static,
{
    /// One partition outside a pipeline (tests, benches): it owns all `max_key_groups`
    /// key groups, has no checkpointing, and hands its output to `down`.
    pub(crate) fn standalone(
        name: &str,
        max_key_groups: u16,
        init: StateInit<K>,
        timers: Timers<K>,
        f: P,
        down: BoxEmit<U>,
    ) -> Self {
        let groups = (0..max_key_groups).map(KeyGroup).collect();
        let core = TimedCore {
            f,
            timers,
            keyed: KeyedPart {
                init,
                groups,
                ckpt: None,
                name: name.into(),
                partition: crate::ids::PartitionId(0),
                clock: crate::clock::MonotonicClock::new(std::time::Instant::now()),
                failure: crate::dataflow::ops::FailureSlot::default(),
            },
            down,
            watermark: None,
            ended: false,
            metrics: MetricsHandle::default(),
        };
        TimedOp {
            core: Rc::new(RefCell::new(core)),
            _v: PhantomData,
        }
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! Drives a `KeyedProcess` outside a pipeline: records, watermarks, end, and a
    //! checkpoint/restore round trip of its state tables.
    use super::*;
    use crate::keys::key_group_of;
    use crate::message::Watermark;

    /// One operator partition owning every key group, collecting its output.
    pub(crate) struct Harness<K, V, P, U> {
        pub(crate) op: TimedOp<K, V, P, U>,
        pub(crate) out: Rc<RefCell<Vec<super::super::ops::testing::Seen<U>>>>,
        pub(crate) max_kg: u16,
    }

    impl<K, V, P, U> Harness<K, V, P, U>
    where
        K: Hash + Eq + Ord + Clone + 'static,
        P: KeyedProcess<K, V, U>,
        U: 'static,
        (K, Vec<(u8, u64)>): Entry<K = K, V = Vec<(u8, u64)>> + 'static,
    {
        pub(crate) fn new(max_kg: u16, factory: impl Fn(&mut StateInit<K>) -> P) -> Self {
            let mut init = StateInit::new(max_kg);
            let timers = Timers::declare(&mut init);
            let f = factory(&mut init);
            let out = Rc::new(RefCell::new(Vec::new()));
            let down = Box::new(super::super::ops::testing::Collect(out.clone()));
            Self {
                op: TimedOp::standalone("test", max_kg, init, timers, f, down),
                out,
                max_kg,
            }
        }

        pub(crate) fn record(&mut self, key: K, v: V)
        where
            K: Hash,
        {
            let kg = key_group_of(&key, self.max_kg);
            self.op.data(Keyed {
                key,
                key_group: kg,
                value: v,
            });
        }

        pub(crate) fn watermark(&mut self, w: u64) {
            self.op.control(Control::Watermark(Watermark(w)));
        }

        pub(crate) fn fire_processing(&mut self, now_ms: u64) -> usize {
            self.op
                .core
                .borrow_mut()
                .fire::<V>(TimeDomain::ProcessingTime, now_ms)
        }

        pub(crate) fn end(&mut self) {
            self.op.end();
        }

        pub(crate) fn metrics(&self) -> MetricsHandle {
            self.op.core.borrow().metrics.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::ops::testing::Seen;
    use super::testing::Harness;
    use super::*;

    /// Emits (key, domain, time) for every timer fired; registers the timers a record
    /// asks for: (event time, processing time).
    struct Echo;

    impl KeyedProcess<u32, (u64, Option<u64>), (u32, TimeDomain, u64)> for Echo {
        fn process(
            &mut self,
            ctx: &mut TimerCtx<'_, u32>,
            (et, pt): (u64, Option<u64>),
            _out: &mut Out<'_, (u32, TimeDomain, u64)>,
        ) {
            ctx.register_event_timer(et);
            if let Some(pt) = pt {
                ctx.register_processing_timer(pt);
            }
        }
        fn on_timer(
            &mut self,
            ctx: &mut TimerCtx<'_, u32>,
            at: u64,
            d: TimeDomain,
            out: &mut Out<'_, (u32, TimeDomain, u64)>,
        ) {
            out.emit((*ctx.key(), d, at));
        }
    }

    fn fired<U: Clone>(h: &Rc<RefCell<Vec<Seen<U>>>>) -> Vec<U> {
        h.borrow()
            .iter()
            .filter_map(|s| match s {
                Seen::Data(d) => Some(d.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn event_timers_fire_once_in_time_order_when_the_watermark_passes() {
        let mut h = Harness::new(8, |_| Echo);
        h.record(1, (30, None));
        h.record(2, (10, None));
        h.record(1, (30, None)); // same (key, time): deduplicated
        h.record(3, (20, None));
        h.record(2, (40, None));
        h.watermark(9);
        assert!(fired(&h.out).is_empty());
        h.watermark(30);
        let e = TimeDomain::EventTime;
        assert_eq!(fired(&h.out), vec![(2, e, 10), (3, e, 20), (1, e, 30)]);
        h.watermark(25); // a lower watermark changes nothing
        h.end();
        assert_eq!(
            fired(&h.out),
            vec![(2, e, 10), (3, e, 20), (1, e, 30), (2, e, 40)]
        );
    }

    #[test]
    fn processing_timers_fire_by_the_clock_and_deleted_timers_never_fire() {
        struct DeleteOn5;
        impl KeyedProcess<u32, u64, u64> for DeleteOn5 {
            fn process(&mut self, ctx: &mut TimerCtx<'_, u32>, v: u64, _o: &mut Out<'_, u64>) {
                if v == 5 {
                    ctx.delete_processing_timer(100);
                } else {
                    ctx.register_processing_timer(v);
                }
            }
            fn on_timer(
                &mut self,
                _c: &mut TimerCtx<'_, u32>,
                at: u64,
                d: TimeDomain,
                o: &mut Out<'_, u64>,
            ) {
                assert_eq!(d, TimeDomain::ProcessingTime);
                o.emit(at);
            }
        }
        let mut h = Harness::new(4, |_| DeleteOn5);
        h.record(1, 100);
        h.record(2, 100);
        h.record(1, 50);
        h.record(1, 5);
        assert_eq!(h.fire_processing(49), 0);
        assert_eq!(h.fire_processing(1_000), 2);
        assert_eq!(
            fired(&h.out),
            vec![50, 100],
            "key 1's timer at 100 was deleted"
        );
    }
}
