//! Joins of two keyed streams with the same key: an interval join (event time, Flink's
//! `l.ts + lower <= r.ts <= l.ts + upper`), a tumbling-window join (pairs of the same
//! window, emitted when the window closes) and a regular join (every pair, emitted as
//! soon as both sides are there) with an optional processing-time TTL on buffered
//! records. Each is a `KeyedProcess` over the union of both sides, so buffers and timers
//! are keyed state, checkpointed per key group. Records at or behind the watermark are
//! late for the event-time joins: counted (`late_records`) and dropped, as in Flink.

use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use super::timers::{KeyedProcess, TimeDomain, TimerCtx};
use super::{Data, Keyed, KeyedStream, Out, Stream};
use crate::checkpoint::codec::Entry;
use crate::state::{StateInit, ValueState};

/// A record of either side of a join.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum Side<L, R> {
    /// From the stream `join` was called on.
    Left(L),
    /// From the other stream.
    Right(R),
}

/// Which join.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum JoinKind {
    /// `l.ts + lower <= r.ts <= l.ts + upper` (ms, may be negative).
    Interval { lower: i64, upper: i64 },
    /// Same tumbling window of `size` ms.
    Window { size: u64 },
    /// Every pair; buffered records expire `ttl` ms (processing time) after arrival.
    Regular { ttl: Option<u64> },
}

type Buf<T> = Vec<(u64, T)>;

/// The join function over one key's buffers.
pub(crate) struct JoinProcess<K, L, R, FL, FR, J> {
    pub(crate) kind: JoinKind,
    pub(crate) lts: Arc<FL>,
    pub(crate) rts: Arc<FR>,
    pub(crate) f: Arc<J>,
    pub(crate) left: ValueState<K, Buf<L>>,
    pub(crate) right: ValueState<K, Buf<R>>,
}

impl<K, L, R, FL, FR, J> JoinProcess<K, L, R, FL, FR, J>
where
    K: Hash + Eq + Ord + Clone + 'static,
    L: Clone + 'static,
    R: Clone + 'static,
    (K, Buf<L>): Entry<K = K, V = Buf<L>> + 'static,
    (K, Buf<R>): Entry<K = K, V = Buf<R>> + 'static,
{
    pub(crate) fn declare(
        init: &mut StateInit<K>,
        kind: JoinKind,
        lts: Arc<FL>,
        rts: Arc<FR>,
        f: Arc<J>,
    ) -> Self {
        Self {
            kind,
            lts,
            rts,
            f,
            left: init.value("left"),
            right: init.value("right"),
        }
    }
}

fn matches(kind: JoinKind, lt: u64, rt: u64) -> bool {
    match kind {
        JoinKind::Interval { lower, upper } => {
            let (l, r) = (lt as i64, rt as i64);
            l + lower <= r && r <= l + upper
        }
        JoinKind::Window { size } => lt / size == rt / size,
        JoinKind::Regular { .. } => true,
    }
}

impl<K, L, R, O, FL, FR, J> KeyedProcess<K, Side<L, R>, O> for JoinProcess<K, L, R, FL, FR, J>
where
    K: Hash + Eq + Ord + Clone + 'static,
    L: Clone + 'static,
    R: Clone + 'static,
    FL: Fn(&L) -> u64,
    FR: Fn(&R) -> u64,
    J: Fn(&K, &L, &R) -> O,
{
    fn process(&mut self, ctx: &mut TimerCtx<'_, K>, v: Side<L, R>, out: &mut Out<'_, O>) {
        let (ts, is_left) = match &v {
            Side::Left(l) => ((self.lts)(l), true),
            Side::Right(r) => ((self.rts)(r), false),
        };
        let kind = self.kind;
        let late_at = match kind {
            JoinKind::Interval { .. } => Some(ts),
            JoinKind::Window { size } => Some(ts - ts % size + size - 1),
            JoinKind::Regular { .. } => None,
        };
        if late_at.is_some_and(|t| ctx.watermark().is_some_and(|w| t <= w)) {
            ctx.count("late_records", 1);
            return;
        }
        let key = ctx.key().clone();
        let kc = ctx.key_ctx();
        // Pair with the other side's buffer, then buffer this record.
        match &v {
            Side::Left(l) => self.right.update(kc, Vec::new, |buf| {
                for (rt, r) in buf.iter() {
                    if matches(kind, ts, *rt) && !matches!(kind, JoinKind::Window { .. }) {
                        out.emit((self.f)(&key, l, r));
                    }
                }
            }),
            Side::Right(r) => self.left.update(kc, Vec::new, |buf| {
                for (lt, l) in buf.iter() {
                    if matches(kind, *lt, ts) && !matches!(kind, JoinKind::Window { .. }) {
                        out.emit((self.f)(&key, l, r));
                    }
                }
            }),
        }
        let kc = ctx.key_ctx();
        let stamp = match kind {
            JoinKind::Regular { .. } => ctx.now_ms(),
            _ => ts,
        };
        match v {
            Side::Left(l) => self.left.update(kc, Vec::new, |b| b.push((stamp, l))),
            Side::Right(r) => self.right.update(kc, Vec::new, |b| b.push((stamp, r))),
        }
        // Clean up (and for windows, fire) when no future record can pair with it.
        match kind {
            JoinKind::Interval { lower, upper } => {
                let until = if is_left {
                    ts as i64 + upper
                } else {
                    ts as i64 - lower
                };
                ctx.register_event_timer(until.max(0) as u64);
            }
            JoinKind::Window { size } => ctx.register_event_timer(ts - ts % size + size - 1),
            JoinKind::Regular { ttl: Some(ttl) } => {
                ctx.register_processing_timer(stamp + ttl);
            }
            JoinKind::Regular { ttl: None } => {}
        }
    }

    fn on_timer(
        &mut self,
        ctx: &mut TimerCtx<'_, K>,
        at: u64,
        _d: TimeDomain,
        out: &mut Out<'_, O>,
    ) {
        let key = ctx.key().clone();
        let kc = ctx.key_ctx();
        let mut left = self.left.get(kc).unwrap_or_default();
        let mut right = self.right.get(kc).unwrap_or_default();
        match self.kind {
            JoinKind::Interval { lower, upper } => {
                left.retain(|(t, _)| *t as i64 + upper > at as i64);
                right.retain(|(t, _)| *t as i64 - lower > at as i64);
            }
            JoinKind::Window { size } => {
                let start = at + 1 - size;
                let in_window = |t: u64| t >= start && t <= at;
                for (_, l) in left.iter().filter(|(t, _)| in_window(*t)) {
                    for (_, r) in right.iter().filter(|(t, _)| in_window(*t)) {
                        out.emit((self.f)(&key, l, r));
                    }
                }
                left.retain(|(t, _)| *t > at);
                right.retain(|(t, _)| *t > at);
            }
            JoinKind::Regular { ttl } => {
                let ttl = ttl.unwrap_or(u64::MAX);
                left.retain(|(t, _)| t.saturating_add(ttl) > at);
                right.retain(|(t, _)| t.saturating_add(ttl) > at);
            }
        }
        if left.is_empty() {
            self.left.clear(kc);
        } else {
            self.left.set(kc, left);
        }
        if right.is_empty() {
            self.right.clear(kc);
        } else {
            self.right.set(kc, right);
        }
    }
}

impl<K, L> KeyedStream<K, L>
where
    K: Data + Hash + Eq + Ord,
    L: Data,
{
    #[allow(clippy::too_many_arguments)]
    fn join_with<R, O, FL, FR, J>(
        &self,
        name: &str,
        other: &KeyedStream<K, R>,
        kind: JoinKind,
        lts: FL,
        rts: FR,
        f: J,
    ) -> Stream<O>
    where
        R: Data,
        O: Data,
        FL: Fn(&L) -> u64 + Send + Sync + 'static,
        FR: Fn(&R) -> u64 + Send + Sync + 'static,
        J: Fn(&K, &L, &R) -> O + Send + Sync + 'static,
        (K, Vec<(u8, u64)>): Entry<K = K, V = Vec<(u8, u64)>> + 'static,
        (K, Buf<L>): Entry<K = K, V = Buf<L>> + 'static,
        (K, Buf<R>): Entry<K = K, V = Buf<R>> + 'static,
    {
        let left = self
            .inner
            .map(&format!("{name}.left"), |k: Keyed<K, L>| Keyed {
                key: k.key,
                key_group: k.key_group,
                value: Side::<L, R>::Left(k.value),
            });
        let right = other
            .inner
            .map(&format!("{name}.right"), |k: Keyed<K, R>| Keyed {
                key: k.key,
                key_group: k.key_group,
                value: Side::<L, R>::Right(k.value),
            });
        let both = KeyedStream {
            inner: left.union(&format!("{name}.union"), &right),
        };
        let (lts, rts, f) = (Arc::new(lts), Arc::new(rts), Arc::new(f));
        both.process_with_timers(name, move |init| {
            JoinProcess::declare(init, kind, lts.clone(), rts.clone(), f.clone())
        })
    }

    /// Interval join: pairs with `l.ts + lower <= r.ts <= l.ts + upper` (event time, ms;
    /// bounds may be negative), emitted as soon as both are there.
    #[allow(clippy::too_many_arguments)]
    pub fn interval_join<R, O>(
        &self,
        name: &str,
        other: &KeyedStream<K, R>,
        lower_ms: i64,
        upper_ms: i64,
        lts: impl Fn(&L) -> u64 + Send + Sync + 'static,
        rts: impl Fn(&R) -> u64 + Send + Sync + 'static,
        f: impl Fn(&K, &L, &R) -> O + Send + Sync + 'static,
    ) -> Stream<O>
    where
        R: Data,
        O: Data,
        (K, Vec<(u8, u64)>): Entry<K = K, V = Vec<(u8, u64)>> + 'static,
        (K, Buf<L>): Entry<K = K, V = Buf<L>> + 'static,
        (K, Buf<R>): Entry<K = K, V = Buf<R>> + 'static,
    {
        assert!(
            lower_ms <= upper_ms,
            "interval join: lower bound above upper"
        );
        let kind = JoinKind::Interval {
            lower: lower_ms,
            upper: upper_ms,
        };
        self.join_with(name, other, kind, lts, rts, f)
    }

    /// Tumbling-window join: pairs in the same window of `size`, emitted when the
    /// watermark passes the window's end.
    pub fn window_join<R, O>(
        &self,
        name: &str,
        other: &KeyedStream<K, R>,
        size: Duration,
        lts: impl Fn(&L) -> u64 + Send + Sync + 'static,
        rts: impl Fn(&R) -> u64 + Send + Sync + 'static,
        f: impl Fn(&K, &L, &R) -> O + Send + Sync + 'static,
    ) -> Stream<O>
    where
        R: Data,
        O: Data,
        (K, Vec<(u8, u64)>): Entry<K = K, V = Vec<(u8, u64)>> + 'static,
        (K, Buf<L>): Entry<K = K, V = Buf<L>> + 'static,
        (K, Buf<R>): Entry<K = K, V = Buf<R>> + 'static,
    {
        let size = (size.as_millis() as u64).max(1);
        self.join_with(name, other, JoinKind::Window { size }, lts, rts, f)
    }

    /// Regular (unbounded) join: every pair, emitted when its second record arrives;
    /// with `ttl`, a buffered record is forgotten that long (processing time) after it
    /// arrived.
    pub fn join<R, O>(
        &self,
        name: &str,
        other: &KeyedStream<K, R>,
        ttl: Option<Duration>,
        f: impl Fn(&K, &L, &R) -> O + Send + Sync + 'static,
    ) -> Stream<O>
    where
        R: Data,
        O: Data,
        (K, Vec<(u8, u64)>): Entry<K = K, V = Vec<(u8, u64)>> + 'static,
        (K, Buf<L>): Entry<K = K, V = Buf<L>> + 'static,
        (K, Buf<R>): Entry<K = K, V = Buf<R>> + 'static,
    {
        let kind = JoinKind::Regular {
            ttl: ttl.map(|d| d.as_millis() as u64),
        };
        self.join_with(name, other, kind, |_: &L| 0, |_: &R| 0, f)
    }
}

#[cfg(test)]
#[path = "joins_tests.rs"]
mod tests;
