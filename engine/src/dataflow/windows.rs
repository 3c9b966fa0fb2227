//! Event-time windows on keyed streams: tumbling, sliding and session windows with
//! incremental aggregation, allowed lateness (default 0) and late records counted
//! (`late_records`) and optionally sent to a side output.
//!
//! Windows are a `KeyedProcess` on top of the timer service, so their state (panes or
//! sessions, and the timers) is ordinary keyed state, checkpointed and restored per key
//! group. Tumbling and sliding windows keep one accumulator per *pane* (the gcd of size
//! and slide): a record updates one pane, and a firing window merges its `size / pane`
//! panes; nothing is recomputed from the records. Window starts are the multiples of
//! the slide (as Flink's and Beam's assigners): a sliding window may start before time
//! 0 (size 10 s, slide 2 s: a record at 1 s is in the windows starting at −8, −6, −4,
//! −2 and 0 s), so `WindowResult::start` is signed. A session window is
//! `[first, last + gap)`; windows that touch or overlap merge (as Flink's `TimeWindow`).
//!
//! Firing rule (Flink's event-time trigger): a window `[start, end)` fires once when the
//! watermark reaches `end − 1`; a record for it that arrives later, while the watermark
//! is below `end − 1 + lateness`, updates it and fires it again at once; after that its
//! state is purged and its records are late. A record is late when every window it
//! belongs to is past `end − 1 + lateness`.

use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use super::timers::{KeyedProcess, TimeDomain, TimerCtx};
use super::{Data, KeyedStream, Out, Stream};
use crate::checkpoint::codec::Entry;
use crate::state::{MapState, StateInit, ValueState};

/// Which windows records are assigned to (times in ms of event time).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WindowKind {
    /// Fixed, non-overlapping windows of `size`.
    Tumbling {
        /// Window length (ms).
        size: u64,
    },
    /// Windows of `size` starting every `slide`.
    Sliding {
        /// Window length (ms).
        size: u64,
        /// Distance between window starts (ms).
        slide: u64,
    },
    /// Per-key activity sessions closed after `gap` without records.
    Session {
        /// Inactivity gap (ms).
        gap: u64,
    },
}

/// A window assignment and its allowed lateness.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowSpec {
    /// The windows.
    pub kind: WindowKind,
    /// How long after a window fired late records still update it (ms, default 0).
    pub allowed_lateness: u64,
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

impl WindowSpec {
    /// Tumbling windows of `size`.
    pub fn tumbling(size: Duration) -> Self {
        assert!(ms(size) > 0, "a window has a positive size");
        Self {
            kind: WindowKind::Tumbling { size: ms(size) },
            allowed_lateness: 0,
        }
    }

    /// Sliding windows of `size` every `slide`.
    pub fn sliding(size: Duration, slide: Duration) -> Self {
        assert!(ms(size) > 0 && ms(slide) > 0, "positive size and slide");
        Self {
            kind: WindowKind::Sliding {
                size: ms(size),
                slide: ms(slide),
            },
            allowed_lateness: 0,
        }
    }

    /// Session windows with inactivity `gap`.
    pub fn session(gap: Duration) -> Self {
        assert!(ms(gap) > 0, "a session has a positive gap");
        Self {
            kind: WindowKind::Session { gap: ms(gap) },
            allowed_lateness: 0,
        }
    }

    /// With allowed lateness.
    pub fn with_allowed_lateness(mut self, lateness: Duration) -> Self {
        self.allowed_lateness = ms(lateness);
        self
    }
}

/// An incremental aggregation: records are added to an accumulator as they arrive;
/// accumulators of panes or merged sessions are merged.
pub trait Aggregate<V>: Send + Sync + 'static {
    /// The running state (checkpointed: must be archivable).
    type Acc: Clone + 'static;
    /// What a window emits.
    type Out: Data;
    /// An empty accumulator.
    fn create(&self) -> Self::Acc;
    /// Adds one record.
    fn add(&self, acc: &mut Self::Acc, v: &V);
    /// Merges `other` into `into`.
    fn merge(&self, into: &mut Self::Acc, other: &Self::Acc);
    /// The window's result.
    fn result(&self, acc: &Self::Acc) -> Self::Out;
}

/// Counts records.
#[derive(Clone, Copy, Debug, Default)]
pub struct Count;

impl<V> Aggregate<V> for Count {
    type Acc = u64;
    type Out = u64;
    fn create(&self) -> u64 {
        0
    }
    fn add(&self, acc: &mut u64, _v: &V) {
        *acc += 1;
    }
    fn merge(&self, into: &mut u64, other: &u64) {
        *into += other;
    }
    fn result(&self, acc: &u64) -> u64 {
        *acc
    }
}

/// Sums `f(record)`.
pub struct SumBy<F>(pub F);

impl<V, F: Fn(&V) -> i64 + Send + Sync + 'static> Aggregate<V> for SumBy<F> {
    type Acc = i64;
    type Out = i64;
    fn create(&self) -> i64 {
        0
    }
    fn add(&self, acc: &mut i64, v: &V) {
        *acc += (self.0)(v);
    }
    fn merge(&self, into: &mut i64, other: &i64) {
        *into += other;
    }
    fn result(&self, acc: &i64) -> i64 {
        *acc
    }
}

/// The maximum of `f(record)` (`None` for no record).
pub struct MaxBy<F>(pub F);

impl<V, F: Fn(&V) -> u64 + Send + Sync + 'static> Aggregate<V> for MaxBy<F> {
    type Acc = Option<u64>;
    type Out = u64;
    fn create(&self) -> Option<u64> {
        None
    }
    fn add(&self, acc: &mut Option<u64>, v: &V) {
        let x = (self.0)(v);
        *acc = Some(acc.map_or(x, |a| a.max(x)));
    }
    fn merge(&self, into: &mut Option<u64>, other: &Option<u64>) {
        if let Some(o) = other {
            *into = Some(into.map_or(*o, |a| a.max(*o)));
        }
    }
    fn result(&self, acc: &Option<u64>) -> u64 {
        acc.unwrap_or(0)
    }
}

/// One window's result for one key. A record type like any other: it can cross a
/// `key_by` or a rebalance, and be channel state of an unaligned checkpoint.
#[derive(
    Clone,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
pub struct WindowResult<K, R> {
    /// The key.
    pub key: K,
    /// Window start (ms, inclusive; negative for a sliding window that overlaps time 0).
    pub start: i64,
    /// Window end (ms, exclusive).
    pub end: u64,
    /// The aggregate.
    pub value: R,
}

/// What a window operator emits: results and, on the side, late records.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum WindowOutput<K, R, V> {
    /// A window fired.
    Result(WindowResult<K, R>),
    /// A record arrived after every window it belongs to was purged.
    Late(V),
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// The window operator's function.
pub(crate) struct WindowProcess<K, V, A: Aggregate<V>, F> {
    pub(crate) spec: WindowSpec,
    pub(crate) agg: Arc<A>,
    pub(crate) ts: Arc<F>,
    pub(crate) late_side: bool,
    pub(crate) panes: MapState<K, u64, A::Acc>,
    pub(crate) sessions: ValueState<K, Vec<(u64, u64, A::Acc)>>,
}

type WOut<K, V, A> = WindowOutput<K, <A as Aggregate<V>>::Out, V>;

impl<K, V, A, F> WindowProcess<K, V, A, F>
where
    K: Hash + Eq + Ord + Clone + 'static,
    A: Aggregate<V>,
    F: Fn(&V) -> u64,
{
    fn size_slide(&self) -> (u64, u64) {
        match self.spec.kind {
            WindowKind::Tumbling { size } => (size, size),
            WindowKind::Sliding { size, slide } => (size, slide),
            WindowKind::Session { .. } => unreachable!("sessions have no panes"),
        }
    }

    fn late(&self, out: &mut Out<'_, WOut<K, V, A>>, ctx: &TimerCtx<'_, K>, v: V) {
        ctx.count("late_records", 1);
        if self.late_side {
            out.emit(WindowOutput::Late(v));
        }
    }

    fn emit_pane_window(
        &self,
        ctx: &TimerCtx<'_, K>,
        start: i64,
        out: &mut Out<'_, WOut<K, V, A>>,
    ) {
        let (size, _) = self.size_slide();
        // A window ends after time 0 (it holds a record at or after 0).
        let end = (start + size as i64) as u64;
        let mut acc: Option<A::Acc> = None;
        for (p, a) in self.panes.entries(ctx.key_ctx()) {
            if p as i64 >= start && p < end {
                match &mut acc {
                    None => acc = Some(a),
                    Some(x) => self.agg.merge(x, &a),
                }
            }
        }
        if let Some(acc) = acc {
            out.emit(WindowOutput::Result(WindowResult {
                key: ctx.key().clone(),
                start,
                end,
                value: self.agg.result(&acc),
            }));
        }
    }

    fn pane_record(&mut self, ctx: &mut TimerCtx<'_, K>, v: V, out: &mut Out<'_, WOut<K, V, A>>) {
        let (size, slide) = self.size_slide();
        let lateness = self.spec.allowed_lateness;
        let pane = gcd(size, slide);
        let wm = ctx.watermark();
        let ts = (self.ts)(&v);
        let last_start = ts - ts % slide;
        let last_end = last_start + size;
        if wm.is_some_and(|w| last_end - 1 + lateness <= w) {
            return self.late(out, ctx, v);
        }
        let p = ts - ts % pane;
        let kc = ctx.key_ctx();
        let mut acc = self.panes.get(kc, &p).unwrap_or_else(|| self.agg.create());
        self.agg.add(&mut acc, &v);
        self.panes.put(kc, p, acc);
        // Every window holding `ts`, latest first, down to those that start before 0.
        let mut s = last_start as i64;
        loop {
            let end = s + size as i64;
            if end <= ts as i64 {
                break;
            }
            let end = end as u64;
            let on_time = !wm.is_some_and(|w| end - 1 + lateness <= w);
            if on_time {
                if wm.is_some_and(|w| end - 1 <= w) {
                    // Fired already, within the allowed lateness: fire the update now.
                    self.emit_pane_window(ctx, s, out);
                } else {
                    ctx.register_event_timer(end - 1);
                }
            }
            s -= slide as i64;
        }
        if lateness > 0 {
            ctx.register_event_timer(last_end - 1 + lateness);
        }
    }

    fn pane_timer(&mut self, ctx: &mut TimerCtx<'_, K>, at: u64, out: &mut Out<'_, WOut<K, V, A>>) {
        let (size, slide) = self.size_slide();
        let start = (at + 1) as i64 - size as i64;
        if start.rem_euclid(slide as i64) == 0 {
            self.emit_pane_window(ctx, start, out);
        }
        let lateness = self.spec.allowed_lateness;
        let kc = ctx.key_ctx();
        for (p, _) in self.panes.entries(kc) {
            if p - p % slide + size - 1 + lateness <= at {
                self.panes.remove(kc, &p);
            }
        }
    }

    fn session_record(
        &mut self,
        ctx: &mut TimerCtx<'_, K>,
        v: V,
        out: &mut Out<'_, WOut<K, V, A>>,
        gap: u64,
    ) {
        let lateness = self.spec.allowed_lateness;
        let wm = ctx.watermark();
        let ts = (self.ts)(&v);
        let (mut start, mut end) = (ts, ts + gap);
        let all = self.sessions.get(ctx.key_ctx()).unwrap_or_default();
        let (hit, mut keep): (Vec<_>, Vec<_>) = all
            .into_iter()
            .partition(|(s, e, _)| *s <= end && *e >= start);
        if hit.is_empty() && wm.is_some_and(|w| end - 1 + lateness <= w) {
            return self.late(out, ctx, v);
        }
        let mut acc = self.agg.create();
        self.agg.add(&mut acc, &v);
        for (s, e, a) in &hit {
            start = start.min(*s);
            end = end.max(*e);
            self.agg.merge(&mut acc, a);
            ctx.delete_event_timer(e - 1);
            if lateness > 0 {
                ctx.delete_event_timer(e - 1 + lateness);
            }
        }
        if wm.is_some_and(|w| end - 1 <= w) {
            out.emit(WindowOutput::Result(WindowResult {
                key: ctx.key().clone(),
                start: start as i64,
                end,
                value: self.agg.result(&acc),
            }));
        } else {
            ctx.register_event_timer(end - 1);
        }
        if lateness > 0 {
            ctx.register_event_timer(end - 1 + lateness);
        }
        keep.push((start, end, acc));
        keep.sort_by_key(|(s, _, _)| *s);
        self.sessions.set(ctx.key_ctx(), keep);
    }

    fn session_timer(
        &mut self,
        ctx: &mut TimerCtx<'_, K>,
        at: u64,
        out: &mut Out<'_, WOut<K, V, A>>,
    ) {
        let lateness = self.spec.allowed_lateness;
        let kc = ctx.key_ctx();
        let mut all = self.sessions.get(kc).unwrap_or_default();
        for (s, e, a) in &all {
            if e - 1 == at {
                out.emit(WindowOutput::Result(WindowResult {
                    key: ctx.key().clone(),
                    start: *s as i64,
                    end: *e,
                    value: self.agg.result(a),
                }));
            }
        }
        all.retain(|(_, e, _)| e - 1 + lateness > at);
        if all.is_empty() {
            self.sessions.clear(kc);
        } else {
            self.sessions.set(kc, all);
        }
    }
}

impl<K, V, A, F> KeyedProcess<K, V, WOut<K, V, A>> for WindowProcess<K, V, A, F>
where
    K: Hash + Eq + Ord + Clone + 'static,
    A: Aggregate<V>,
    F: Fn(&V) -> u64,
{
    fn process(&mut self, ctx: &mut TimerCtx<'_, K>, v: V, out: &mut Out<'_, WOut<K, V, A>>) {
        match self.spec.kind {
            WindowKind::Session { gap } => self.session_record(ctx, v, out, gap),
            _ => self.pane_record(ctx, v, out),
        }
    }

    fn on_timer(
        &mut self,
        ctx: &mut TimerCtx<'_, K>,
        at: u64,
        _d: TimeDomain,
        out: &mut Out<'_, WOut<K, V, A>>,
    ) {
        match self.spec.kind {
            WindowKind::Session { .. } => self.session_timer(ctx, at, out),
            _ => self.pane_timer(ctx, at, out),
        }
    }
}

impl<K, V, A, F> WindowProcess<K, V, A, F>
where
    K: Hash + Eq + Ord + Clone + 'static,
    A: Aggregate<V>,
    (K, Vec<(u64, A::Acc)>): Entry<K = K, V = Vec<(u64, A::Acc)>> + 'static,
    (K, Vec<(u64, u64, A::Acc)>): Entry<K = K, V = Vec<(u64, u64, A::Acc)>> + 'static,
{
    /// Declares the window state in `init`.
    pub(crate) fn declare(
        init: &mut StateInit<K>,
        spec: WindowSpec,
        agg: Arc<A>,
        ts: Arc<F>,
        late_side: bool,
    ) -> Self {
        Self {
            spec,
            agg,
            ts,
            late_side,
            panes: init.map("panes"),
            sessions: init.value("sessions"),
        }
    }
}

impl<K, V> KeyedStream<K, V>
where
    K: Data + Hash + Eq + Ord,
    V: Data,
{
    /// Windows of `spec` over event time `ts` (ms), aggregated by `agg`, with late
    /// records sent to the second stream (and counted).
    #[allow(clippy::type_complexity)]
    pub fn window_with_late<A, F>(
        &self,
        name: &str,
        spec: WindowSpec,
        ts: F,
        agg: A,
    ) -> (Stream<WindowResult<K, A::Out>>, Stream<V>)
    where
        A: Aggregate<V>,
        F: Fn(&V) -> u64 + Send + Sync + 'static,
        (K, Vec<(u8, u64)>): Entry<K = K, V = Vec<(u8, u64)>> + 'static,
        (K, Vec<(u64, A::Acc)>): Entry<K = K, V = Vec<(u64, A::Acc)>> + 'static,
        (K, Vec<(u64, u64, A::Acc)>): Entry<K = K, V = Vec<(u64, u64, A::Acc)>> + 'static,
    {
        let all = self.windowed(name, spec, ts, agg, true);
        let results = all.flat_map(&format!("{name}.results"), |o, out| {
            if let WindowOutput::Result(r) = o {
                out.emit(r);
            }
        });
        let late = all.flat_map(&format!("{name}.late"), |o, out| {
            if let WindowOutput::Late(v) = o {
                out.emit(v);
            }
        });
        (results, late)
    }

    /// Windows of `spec` over event time `ts` (ms), aggregated by `agg`; late records
    /// are counted (`late_records`) and dropped.
    pub fn window<A, F>(
        &self,
        name: &str,
        spec: WindowSpec,
        ts: F,
        agg: A,
    ) -> Stream<WindowResult<K, A::Out>>
    where
        A: Aggregate<V>,
        F: Fn(&V) -> u64 + Send + Sync + 'static,
        (K, Vec<(u8, u64)>): Entry<K = K, V = Vec<(u8, u64)>> + 'static,
        (K, Vec<(u64, A::Acc)>): Entry<K = K, V = Vec<(u64, A::Acc)>> + 'static,
        (K, Vec<(u64, u64, A::Acc)>): Entry<K = K, V = Vec<(u64, u64, A::Acc)>> + 'static,
    {
        self.windowed(name, spec, ts, agg, false)
            .flat_map(&format!("{name}.results"), |o, out| {
                if let WindowOutput::Result(r) = o {
                    out.emit(r);
                }
            })
    }

    fn windowed<A, F>(
        &self,
        name: &str,
        spec: WindowSpec,
        ts: F,
        agg: A,
        late_side: bool,
    ) -> Stream<WindowOutput<K, A::Out, V>>
    where
        A: Aggregate<V>,
        F: Fn(&V) -> u64 + Send + Sync + 'static,
        (K, Vec<(u8, u64)>): Entry<K = K, V = Vec<(u8, u64)>> + 'static,
        (K, Vec<(u64, A::Acc)>): Entry<K = K, V = Vec<(u64, A::Acc)>> + 'static,
        (K, Vec<(u64, u64, A::Acc)>): Entry<K = K, V = Vec<(u64, u64, A::Acc)>> + 'static,
    {
        let agg = Arc::new(agg);
        let ts = Arc::new(ts);
        self.process_with_timers(name, move |init| {
            WindowProcess::declare(init, spec, agg.clone(), ts.clone(), late_side)
        })
    }
}

#[cfg(test)]
#[path = "windows_tests.rs"]
mod tests;
