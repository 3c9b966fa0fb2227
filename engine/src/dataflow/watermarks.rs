//! Watermark generation at the sources: the bounded out-of-orderness strategy
//! (watermark = max event time seen − bound − 1 ms), emitted on an interval, with an
//! idle timeout after which the partition sends `Watermark::IDLE` so a quiet partition
//! does not hold the others back. `WatermarkGen` is the pure rule (unit tested here);
//! `Watermarked` wraps any `Source` and applies it to every partition in-band, on the
//! partition's core. `SplitWatermarks` runs one `WatermarkGen` per split for a source
//! partition that reads several (Kafka partitions), combined as the minimum over the
//! splits not idle; such a source emits the result itself (`Out::watermark`). Combining
//! watermarks of several inputs of an operator is `InputSet`'s job, not this module's.

use std::sync::Arc;
use std::time::Duration;

use super::ops::{Emit, Out};
use super::{AsyncSource, AsyncSourcePartition, IoCx, PartitionContext, SourcePoll};
use crate::error::Result;
use crate::ids::CheckpointId;
use crate::message::{Control, Watermark};

/// How a source derives watermarks from its records' event times (milliseconds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WatermarkStrategy {
    /// How far out of order records may arrive.
    pub bound: Duration,
    /// After this long without records a partition declares itself idle (`None`: never).
    pub idle_timeout: Option<Duration>,
    /// How often a partition emits its watermark (the per-core watermark interval).
    pub interval: Duration,
}

impl WatermarkStrategy {
    /// Bounded out-of-orderness by `bound`, emitted every 200 ms, never idle.
    pub fn bounded(bound: Duration) -> Self {
        Self {
            bound,
            idle_timeout: None,
            interval: Duration::from_millis(200),
        }
    }

    /// With an idle timeout.
    pub fn with_idle_timeout(mut self, idle: Duration) -> Self {
        self.idle_timeout = Some(idle);
        self
    }

    /// With an emission interval.
    pub fn with_interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }
}

/// The watermark rule of one source partition, as a pure state machine over (record
/// event times, clock readings).
#[derive(Clone, Debug)]
pub struct WatermarkGen {
    bound_ms: u64,
    idle_ns: Option<u64>,
    interval_ns: u64,
    max_ts: Option<u64>,
    emitted: Option<Watermark>,
    last_record_ns: u64,
    next_emit_ns: u64,
    idle: bool,
}

impl WatermarkGen {
    /// A generator for `s`, started at `now_ns`.
    pub fn new(s: WatermarkStrategy, now_ns: u64) -> Self {
        Self {
            bound_ms: s.bound.as_millis() as u64,
            idle_ns: s.idle_timeout.map(|d| d.as_nanos() as u64),
            interval_ns: (s.interval.as_nanos() as u64).max(1),
            max_ts: None,
            emitted: None,
            last_record_ns: now_ns,
            next_emit_ns: now_ns,
            idle: false,
        }
    }

    /// The watermark the records seen so far allow.
    pub fn current(&self) -> Option<Watermark> {
        let m = self.max_ts?;
        Some(Watermark(
            m.saturating_sub(self.bound_ms)
                .saturating_sub(1)
                .min(Watermark::MAX.0),
        ))
    }

    /// A record with event time `ts_ms` arrives at `now_ns`. Returns a watermark to send
    /// before it when the partition was idle (it becomes active again).
    pub fn on_record(&mut self, ts_ms: u64, now_ns: u64) -> Option<Watermark> {
        self.last_record_ns = now_ns;
        let wake = std::mem::replace(&mut self.idle, false);
        let before = if wake { self.emitted } else { None };
        if self.max_ts.map_or(true, |m| m < ts_ms) {
            self.max_ts = Some(ts_ms);
        }
        before
    }

    /// The source knows that records of this partition are waiting to be read (it is
    /// behind, not silent) at `now_ns`: its idle clock restarts, and an idle partition
    /// counts again, as if a record had come, without advancing its event time. A
    /// source that can tell "behind" from "silent" (Kafka: the broker's end offset above
    /// the next one to read) calls this so that a slow fetch on a loaded machine does
    /// not make a partition idle while its records are on their way (they would be late
    /// behind the others' watermark).
    pub fn pending(&mut self, now_ns: u64) {
        self.last_record_ns = now_ns;
        self.idle = false;
    }

    /// The clock reads `now_ns`: the control item to send, if the interval is due.
    pub fn tick(&mut self, now_ns: u64) -> Option<Watermark> {
        if now_ns < self.next_emit_ns {
            return None;
        }
        self.next_emit_ns = now_ns.saturating_add(self.interval_ns);
        if self.idle {
            return None;
        }
        if let Some(idle) = self.idle_ns {
            if now_ns.saturating_sub(self.last_record_ns) >= idle {
                self.idle = true;
                return Some(Watermark::IDLE);
            }
        }
        let w = self.current()?;
        if self.emitted.is_some_and(|e| e >= w) {
            return None;
        }
        self.emitted = Some(w);
        Some(w)
    }

    /// When `tick` should next be called (ns).
    pub fn next_deadline(&self) -> u64 {
        self.next_emit_ns
    }

    /// Whether the partition is currently idle.
    pub fn is_idle(&self) -> bool {
        self.idle
    }
}

/// The watermark rule of a source partition that reads several splits (Kafka
/// partitions, shards, files): one [`WatermarkGen`] per split, combined as the minimum
/// over the splits that are not idle (Flink's per-split watermarks with
/// `withIdleness`). A split without records yet, and not idle, holds the watermark back
/// (its records may still come with any event time); with an idle timeout, a split that
/// stays silent that long (a never-written Kafka partition, too) stops counting until
/// its next record. When every split is idle the partition sends `Watermark::IDLE`
/// once. The combined watermark never regresses: a split that wakes with an older event
/// time does not pull it back (its records may be late). A source owns one, feeds it
/// with [`on_record`](Self::on_record), calls [`tick`](Self::tick) on every poll and
/// sends what either returns with [`Out::watermark`].
#[derive(Clone, Debug)]
pub struct SplitWatermarks {
    strategy: WatermarkStrategy,
    splits: Vec<WatermarkGen>,
    interval_ns: u64,
    next_emit_ns: u64,
    emitted: Option<Watermark>,
    idle: bool,
}

impl SplitWatermarks {
    /// `splits` splits under strategy `s`, started at `now_ns`.
    pub fn new(s: WatermarkStrategy, splits: usize, now_ns: u64) -> Self {
        Self {
            strategy: s,
            splits: (0..splits).map(|_| WatermarkGen::new(s, now_ns)).collect(),
            interval_ns: (s.interval.as_nanos() as u64).max(1),
            next_emit_ns: now_ns,
            emitted: None,
            idle: false,
        }
    }

    /// Restarts every split's clock at `now_ns` (the job's start: time before it does
    /// not count towards idleness). Keeps what was seen and emitted.
    pub fn start(&mut self, now_ns: u64) {
        let fresh = WatermarkGen::new(self.strategy, now_ns);
        for g in &mut self.splits {
            *g = WatermarkGen {
                max_ts: g.max_ts,
                emitted: g.emitted,
                idle: g.idle,
                ..fresh.clone()
            };
        }
        self.next_emit_ns = now_ns;
    }

    /// How many splits.
    pub fn splits(&self) -> usize {
        self.splits.len()
    }

    /// A record of split `split` with event time `ts_ms` arrives at `now_ns`. Returns
    /// the watermark to send before it when the whole partition was idle (it becomes
    /// active again).
    pub fn on_record(&mut self, split: usize, ts_ms: u64, now_ns: u64) -> Option<Watermark> {
        self.splits[split].on_record(ts_ms, now_ns);
        if std::mem::replace(&mut self.idle, false) {
            self.emitted
        } else {
            None
        }
    }

    /// Split `split` has records waiting to be read at `now_ns` (see
    /// [`WatermarkGen::pending`]): it is not idle, and stays so for another idle timeout.
    /// The partition's own idle flag is left to the next record (which sends the
    /// watermark that makes the partition active again downstream).
    pub fn pending(&mut self, split: usize, now_ns: u64) {
        self.splits[split].pending(now_ns);
    }

    /// The combined watermark of the splits now: `None` while a split that is not idle
    /// has no record yet, `Some(IDLE)` when every split is idle.
    pub fn combined(&self) -> Option<Watermark> {
        let mut min: Option<Watermark> = None;
        for g in self.splits.iter().filter(|g| !g.is_idle()) {
            let w = g.current()?;
            min = Some(min.map_or(w, |m| m.min(w)));
        }
        Some(min.unwrap_or(Watermark::IDLE))
    }

    /// The clock reads `now_ns`: the watermark to send, if the interval is due and the
    /// combined watermark advanced (or the partition just became idle).
    pub fn tick(&mut self, now_ns: u64) -> Option<Watermark> {
        if now_ns < self.next_emit_ns {
            return None;
        }
        self.next_emit_ns = now_ns.saturating_add(self.interval_ns);
        for g in &mut self.splits {
            // Each split's own interval runs with this one: this updates its idleness.
            g.next_emit_ns = now_ns;
            g.tick(now_ns);
        }
        match self.combined()? {
            Watermark::IDLE if self.idle => None,
            Watermark::IDLE => {
                self.idle = true;
                Some(Watermark::IDLE)
            }
            w if self.emitted.is_some_and(|e| e >= w) => None,
            w => {
                self.emitted = Some(w);
                Some(w)
            }
        }
    }

    /// When `tick` should next be called (ns).
    pub fn next_deadline(&self) -> u64 {
        self.next_emit_ns
    }

    /// Whether every split is idle (and `Watermark::IDLE` was sent).
    pub fn is_idle(&self) -> bool {
        self.idle
    }
}

/// A source whose partitions emit watermarks by `strategy` from event times `ts`.
pub struct Watermarked<S, F> {
    inner: S,
    ts: Arc<F>,
    strategy: WatermarkStrategy,
}

impl<S, F> Watermarked<S, F> {
    /// Wraps `inner`; `ts` gives a record's event time in ms.
    pub fn new(inner: S, ts: F, strategy: WatermarkStrategy) -> Self {
        Self {
            inner,
            ts: Arc::new(ts),
            strategy,
        }
    }
}

impl<T: 'static, S: AsyncSource<T>, F: Fn(&T) -> u64 + Send + Sync + 'static> AsyncSource<T>
    for Watermarked<S, F>
{
    fn open_partition(
        &self,
        ctx: &PartitionContext<'_>,
    ) -> Result<Box<dyn AsyncSourcePartition<T>>> {
        let inner = self.inner.open_partition(ctx)?;
        Ok(Box::new(WatermarkedPartition {
            inner,
            ts: self.ts.clone(),
            gen: WatermarkGen::new(self.strategy, 0),
        }))
    }
}

struct WatermarkedPartition<T, F> {
    inner: Box<dyn AsyncSourcePartition<T>>,
    ts: Arc<F>,
    gen: WatermarkGen,
}

/// Watches the records a poll emits.
struct Observe<'a, T, F> {
    down: &'a mut dyn Emit<T>,
    ts: &'a F,
    gen: &'a mut WatermarkGen,
    now_ns: u64,
}

impl<T, F: Fn(&T) -> u64> Emit<T> for Observe<'_, T, F> {
    #[inline]
    fn data(&mut self, rec: T) {
        if let Some(w) = self.gen.on_record((self.ts)(&rec), self.now_ns) {
            self.down.control(Control::Watermark(w));
        }
        self.down.data(rec);
    }
    fn control(&mut self, c: Control) {
        self.down.control(c);
    }
    fn end(&mut self) {
        self.down.end();
    }
}

impl<T, F: Fn(&T) -> u64> AsyncSourcePartition<T> for WatermarkedPartition<T, F> {
    fn start(&mut self, start_ns: u64) {
        self.gen = WatermarkGen {
            last_record_ns: start_ns,
            next_emit_ns: start_ns,
            ..self.gen.clone()
        };
        self.inner.start(start_ns);
    }

    fn poll_next(
        &mut self,
        cx: &mut IoCx<'_>,
        max: usize,
        out: &mut Out<'_, T>,
    ) -> Result<SourcePoll> {
        let now_ns = cx.now_ns();
        let r = {
            let mut obs = Observe {
                down: out.link(),
                ts: &*self.ts,
                gen: &mut self.gen,
                now_ns,
            };
            let mut o = Out::new(&mut obs);
            self.inner.poll_next(cx, max, &mut o)?
        };
        if let Some(w) = self.gen.tick(now_ns) {
            out.control(Control::Watermark(w));
        }
        Ok(match r {
            SourcePoll::Idle { next_due_ns } => {
                let d = self.gen.next_deadline();
                SourcePoll::Idle {
                    next_due_ns: Some(next_due_ns.map_or(d, |n| n.min(d))),
                }
            }
            // The watermark interval and the idleness timeout must tick while the inner
            // partition waits: poll again by the next one (or when woken).
            SourcePoll::Pending => SourcePoll::Idle {
                next_due_ns: Some(self.gen.next_deadline()),
            },
            other => other,
        })
    }

    fn offset(&self) -> u64 {
        self.inner.offset()
    }

    fn seek(&mut self, offset: u64) -> Result<()> {
        self.inner.seek(offset)
    }

    fn position(&self) -> Option<Vec<u8>> {
        self.inner.position()
    }

    fn seek_position(&mut self, position: &[u8]) -> Result<()> {
        self.inner.seek_position(position)
    }

    fn checkpoint_complete(&mut self, id: CheckpointId, offset: u64, position: Option<&[u8]>) {
        self.inner.checkpoint_complete(id, offset, position);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn watermark_is_max_event_time_minus_bound_minus_one_and_never_regresses() {
        let s = WatermarkStrategy::bounded(Duration::from_millis(100))
            .with_interval(Duration::from_millis(10));
        let mut g = WatermarkGen::new(s, 0);
        assert_eq!(g.tick(0), None, "no record yet");
        g.on_record(1_000, MS);
        g.on_record(900, MS);
        assert_eq!(g.tick(5 * MS), None, "interval not due yet");
        assert_eq!(g.tick(10 * MS), Some(Watermark(899)));
        g.on_record(950, 11 * MS); // out of order, within the bound: no change
        assert_eq!(g.tick(20 * MS), None);
        g.on_record(1_500, 21 * MS);
        assert_eq!(g.tick(30 * MS), Some(Watermark(1_399)));
        assert_eq!(g.next_deadline(), 40 * MS);
    }

    #[test]
    fn a_quiet_partition_goes_idle_once_and_wakes_with_its_last_watermark() {
        let s = WatermarkStrategy::bounded(Duration::from_millis(0))
            .with_interval(Duration::from_millis(10))
            .with_idle_timeout(Duration::from_millis(50));
        let mut g = WatermarkGen::new(s, 0);
        g.on_record(100, 0);
        assert_eq!(g.tick(0), Some(Watermark(99)));
        assert_eq!(g.tick(40 * MS), None);
        assert_eq!(g.tick(50 * MS), Some(Watermark::IDLE));
        assert!(g.is_idle());
        assert_eq!(g.tick(60 * MS), None, "idle is sent once");
        assert_eq!(g.on_record(120, 61 * MS), Some(Watermark(99)));
        assert_eq!(g.tick(70 * MS), Some(Watermark(119)));
    }

    fn splits(idle_ms: Option<u64>) -> SplitWatermarks {
        let mut s =
            WatermarkStrategy::bounded(Duration::ZERO).with_interval(Duration::from_millis(10));
        if let Some(i) = idle_ms {
            s = s.with_idle_timeout(Duration::from_millis(i));
        }
        SplitWatermarks::new(s, 3, 0)
    }

    #[test]
    fn splits_combine_as_the_minimum_and_a_silent_split_holds_back_without_idleness() {
        let mut w = splits(None);
        w.on_record(0, 1_000, MS);
        w.on_record(1, 500, MS);
        assert_eq!(w.tick(10 * MS), None, "split 2 has no record yet");
        // However long split 2 stays silent: no idleness, no watermark.
        assert_eq!(w.tick(10_000 * MS), None);
        w.on_record(2, 700, 10_001 * MS);
        assert_eq!(w.tick(10_010 * MS), Some(Watermark(499)), "the minimum");
        w.on_record(1, 2_000, 10_011 * MS);
        assert_eq!(w.tick(10_020 * MS), Some(Watermark(699)));
        w.on_record(1, 100, 10_021 * MS); // older: no regression
        assert_eq!(w.tick(10_030 * MS), None);
    }

    #[test]
    fn an_idle_split_stops_counting_until_its_next_record_and_never_pulls_back() {
        let mut w = splits(Some(50));
        w.on_record(0, 1_000, 0);
        w.on_record(1, 500, 0);
        assert_eq!(w.tick(0), None, "split 2 not idle yet");
        // Splits 0 and 1 keep getting records; split 2 never does.
        w.on_record(0, 1_100, 45 * MS);
        w.on_record(1, 600, 45 * MS);
        assert_eq!(w.tick(50 * MS), Some(Watermark(599)), "split 2 went idle");
        w.on_record(1, 900, 55 * MS);
        assert_eq!(w.tick(60 * MS), Some(Watermark(899)));
        // Split 2 wakes with an older event time: it counts again, but no regression.
        w.on_record(2, 300, 61 * MS);
        assert_eq!(w.combined(), Some(Watermark(299)));
        assert_eq!(w.tick(70 * MS), None);
        w.on_record(2, 1_050, 71 * MS);
        w.on_record(0, 1_200, 71 * MS);
        w.on_record(1, 1_300, 71 * MS);
        assert_eq!(w.tick(80 * MS), Some(Watermark(1_049)));
    }

    #[test]
    fn a_split_with_records_pending_is_not_idle_and_holds_the_watermark_back() {
        let mut w = splits(Some(50));
        w.on_record(0, 1_000, 0);
        w.on_record(1, 500, 0);
        // Split 2 has no record yet, but its records are known to be on their way (a
        // slow fetch): it must not go idle, or they would be late behind 499.
        w.pending(2, 40 * MS);
        w.on_record(0, 1_100, 45 * MS);
        w.on_record(1, 600, 45 * MS);
        assert_eq!(w.tick(50 * MS), None, "split 2 is behind, not silent");
        w.pending(2, 80 * MS);
        assert_eq!(w.tick(100 * MS), None);
        // Its records come: it counts with its own event time.
        w.on_record(2, 300, 101 * MS);
        assert_eq!(w.tick(110 * MS), Some(Watermark(299)));
        // Once caught up and silent for the timeout it goes idle as before.
        w.on_record(0, 1_200, 150 * MS);
        w.on_record(1, 1_300, 150 * MS);
        assert_eq!(w.tick(160 * MS), Some(Watermark(1_199)), "split 2 idle");
        // A split that went idle and then has records pending counts again at once.
        w.pending(2, 161 * MS);
        assert_eq!(w.combined(), Some(Watermark(299)));
    }

    #[test]
    fn all_splits_idle_sends_idle_once_and_a_record_reactivates() {
        let mut w = splits(Some(50));
        w.on_record(0, 1_000, 0);
        assert_eq!(w.tick(50 * MS), Some(Watermark::IDLE));
        assert!(w.is_idle());
        assert_eq!(w.tick(60 * MS), None, "idle is sent once");
        assert_eq!(
            w.on_record(1, 2_000, 61 * MS),
            None,
            "nothing emitted before"
        );
        // Split 1 alone is active now (0 and 2 stay idle).
        assert_eq!(w.tick(70 * MS), Some(Watermark(1_999)));
        assert_eq!(w.tick(130 * MS), Some(Watermark::IDLE));
        assert_eq!(w.on_record(0, 3_000, 131 * MS), Some(Watermark(1_999)));
    }

    #[test]
    fn no_splits_is_idle_at_once() {
        let mut w = SplitWatermarks::new(WatermarkStrategy::bounded(Duration::ZERO), 0, 0);
        assert_eq!(w.tick(0), Some(Watermark::IDLE));
    }

    #[test]
    fn a_bound_larger_than_the_event_time_saturates_at_zero() {
        let mut g = WatermarkGen::new(WatermarkStrategy::bounded(Duration::from_secs(10)), 0);
        g.on_record(5, 0);
        assert_eq!(g.tick(0), Some(Watermark(0)));
    }
}
