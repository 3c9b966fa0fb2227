//! The latency sink: records `now − due` of every measured record into its core's
//! HdrHistogram (merged after the run, off the hot path).

use std::sync::Arc;

use crate::clock::{Clock, MonotonicClock};
use crate::dataflow::{PartitionContext, Sink, SinkPartition};
use crate::error::Result;
use crate::metrics::MetricsHandle;

type DueFn<T> = Arc<dyn Fn(&T) -> (u64, bool) + Send + Sync>;

/// A sink that measures end-to-end latency; `due` returns a record's due time (ns on the
/// job clock) and whether it is measured (false during warm-up).
pub struct LatencySink<T> {
    due: DueFn<T>,
    cost_ns: u64,
}

impl<T> LatencySink<T> {
    /// A latency sink reading due times with `due`.
    pub fn new(due: impl Fn(&T) -> (u64, bool) + Send + Sync + 'static) -> Self {
        Self {
            due: Arc::new(due),
            cost_ns: 0,
        }
    }

    /// Makes the sink deliberately slow: it busy-waits `cost_ns` per record (to build
    /// backpressure in experiments).
    pub fn with_cost_ns(mut self, cost_ns: u64) -> Self {
        self.cost_ns = cost_ns;
        self
    }
}

impl<T: 'static> Sink<T> for LatencySink<T> {
    fn partition(&self, ctx: &PartitionContext<'_>) -> Result<Box<dyn SinkPartition<T>>> {
        Ok(Box::new(LatencyPartition {
            due: self.due.clone(),
            clock: ctx.clock,
            metrics: ctx.metrics.clone(),
            records: 0,
            cost_ns: self.cost_ns,
        }))
    }
}

struct LatencyPartition<T> {
    due: DueFn<T>,
    clock: MonotonicClock,
    metrics: MetricsHandle,
    records: u64,
    cost_ns: u64,
}

impl<T> SinkPartition<T> for LatencyPartition<T> {
    #[inline]
    fn write(&mut self, rec: T) -> Result<()> {
        let now = self.clock.now_ns();
        let (due, measure) = (self.due)(&rec);
        if measure {
            self.metrics.record_latency(now.saturating_sub(due), now);
        } else {
            self.metrics.note_arrival(now);
        }
        self.records += 1;
        if self.cost_ns > 0 {
            let until = now + self.cost_ns;
            while self.clock.now_ns() < until {
                std::hint::spin_loop();
            }
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        self.metrics
            .add("sink_records", std::mem::take(&mut self.records));
        Ok(())
    }
}
