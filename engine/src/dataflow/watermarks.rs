//! Watermark generation at the sources: the bounded out-of-orderness strategy
//! (watermark = max event time seen − bound − 1 ms), emitted on an interval, with an
//! idle timeout after which the partition sends `Watermark::IDLE` so a quiet partition
//! does not hold the others back. `WatermarkGen` is the pure rule (unit tested here);
//! `Watermarked` wraps any `Source` and applies it to every partition in-band, on the
//! partition's core. Combining watermarks of several inputs is `InputSet`'s job, not this
//! module's.

use std::sync::Arc;
use std::time::Duration;

use super::ops::{Emit, Out};
use super::{AsyncSource, AsyncSourcePartition, IoCx, PartitionContext, SourcePoll};
use crate::error::Result;
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

    #[test]
    fn a_bound_larger_than_the_event_time_saturates_at_zero() {
        let mut g = WatermarkGen::new(WatermarkStrategy::bounded(Duration::from_secs(10)), 0);
        g.on_record(5, 0);
        assert_eq!(g.tick(0), Some(Watermark(0)));
    }
}
