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
}

impl<T> LatencySink<T> {
    /// A latency sink reading due times with `due`.
    pub fn new(due: impl Fn(&T) -> (u64, bool) + Send + Sync + 'static) -> Self {
        Self { due: Arc::new(due) }
    }
}

impl<T: 'static> Sink<T> for LatencySink<T> {
    fn partition(&self, ctx: &PartitionContext<'_>) -> Result<Box<dyn SinkPartition<T>>> {
        Ok(Box::new(LatencyPartition {
            due: self.due.clone(),
            clock: ctx.clock,
            metrics: ctx.metrics.clone(),
            records: 0,
        }))
    }
}

struct LatencyPartition<T> {
    due: DueFn<T>,
    clock: MonotonicClock,
    metrics: MetricsHandle,
    records: u64,
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
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        self.metrics
            .add("sink_records", std::mem::take(&mut self.records));
        Ok(())
    }
}
