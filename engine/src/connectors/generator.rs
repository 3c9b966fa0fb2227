//! The open-loop generator: events are scheduled at a target rate from the job's start
//! and each is stamped with the time it was *due*, so a stalled engine shows up as
//! latency, never as a lower send rate (no coordinated omission). Partition `p` of `P`
//! emits the global sequence numbers `p, p+P, p+2P, …`, so the schedule over all
//! partitions is exactly the target rate.

use std::sync::Arc;

use crate::dataflow::{Data, Out, PartitionContext, Source, SourcePartition, SourcePoll};
use crate::error::Result;

/// What the generator knows about one event when it creates it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct GenTick {
    /// Global sequence number, `0..events`.
    pub seq: u64,
    /// When the event was due (ns on the job clock).
    pub due_ns: u64,
    /// False for events due during the warm-up.
    pub measure: bool,
}

/// A rate-limited generator of `events` records made by `make`.
pub struct Generator<T> {
    rate_eps: u64,
    events: u64,
    warmup_ns: u64,
    make: Arc<dyn Fn(GenTick) -> T + Send + Sync>,
}

impl<T> Generator<T> {
    /// `events` events at `rate_eps` per second over all partitions; events due in the
    /// first `warmup_ns` are marked not to be measured.
    pub fn new(
        rate_eps: u64,
        events: u64,
        warmup_ns: u64,
        make: impl Fn(GenTick) -> T + Send + Sync + 'static,
    ) -> Self {
        assert!(rate_eps > 0, "a generator needs a positive rate");
        Self {
            rate_eps,
            events,
            warmup_ns,
            make: Arc::new(make),
        }
    }
}

impl<T: Data> Source<T> for Generator<T> {
    fn partition(&self, ctx: &PartitionContext<'_>) -> Result<Box<dyn SourcePartition<T>>> {
        Ok(Box::new(GeneratorPartition {
            rate_eps: self.rate_eps,
            events: self.events,
            warmup_ns: self.warmup_ns,
            stride: u64::from(ctx.parallelism),
            next: u64::from(ctx.partition.0),
            base: 0,
            start_ns: None,
            make: self.make.clone(),
        }))
    }
}

struct GeneratorPartition<T> {
    rate_eps: u64,
    events: u64,
    warmup_ns: u64,
    stride: u64,
    next: u64,
    /// The global sequence number the schedule starts at (0, or where a restore sought).
    base: u64,
    start_ns: Option<u64>,
    make: Arc<dyn Fn(GenTick) -> T + Send + Sync>,
}

impl<T> GeneratorPartition<T> {
    /// Offset of event `seq` from the start, ns (exact in u128).
    fn offset_ns(&self, seq: u64) -> u64 {
        (u128::from(seq) * 1_000_000_000 / u128::from(self.rate_eps)) as u64
    }
}

impl<T> SourcePartition<T> for GeneratorPartition<T> {
    fn start(&mut self, start_ns: u64) {
        self.start_ns = Some(start_ns);
    }

    fn poll(&mut self, now_ns: u64, max: usize, out: &mut Out<'_, T>) -> Result<SourcePoll> {
        let Some(start) = self.start_ns else {
            return Ok(SourcePoll::Idle { next_due_ns: None });
        };
        let mut n = 0;
        while n < max && self.next < self.events {
            // After a restore the schedule resumes at the start: the first event after
            // the seek is due at once, the rest at the rate from there.
            let offset = self.offset_ns(self.next) - self.offset_ns(self.base);
            let due_ns = start + offset;
            if due_ns > now_ns {
                break;
            }
            out.emit((self.make)(GenTick {
                seq: self.next,
                due_ns,
                measure: offset >= self.warmup_ns,
            }));
            self.next += self.stride;
            n += 1;
        }
        Ok(if n > 0 {
            SourcePoll::Emitted(n)
        } else if self.next >= self.events {
            SourcePoll::Done
        } else {
            SourcePoll::Idle {
                next_due_ns: Some(start + self.offset_ns(self.next) - self.offset_ns(self.base)),
            }
        })
    }

    fn offset(&self) -> u64 {
        self.next
    }

    fn seek(&mut self, offset: u64) -> Result<()> {
        assert_eq!(
            offset % self.stride,
            self.next % self.stride,
            "a generator offset belongs to one partition"
        );
        self.next = offset;
        // Every partition's seek lands on the same base: the schedule of all partitions
        // stays interleaved as before.
        self.base = offset - offset % self.stride;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::rc::Rc;

    use super::*;
    use crate::clock::MonotonicClock;
    use crate::dataflow::ops::testing::{Collect, Seen};
    use crate::ids::{CoreId, PartitionId};
    use crate::metrics::MetricsHandle;

    fn part(g: &Generator<GenTick>, p: u32, of: u32) -> Box<dyn SourcePartition<GenTick>> {
        let ctx = PartitionContext {
            operator: "gen",
            partition: PartitionId(p),
            parallelism: of,
            core: CoreId(0),
            job_dir: std::path::Path::new("."),
            clock: MonotonicClock::new(std::time::Instant::now()),
            metrics: MetricsHandle::default(),
            transactional: false,
            process: crate::ids::Process::SINGLE,
        };
        g.partition(&ctx).unwrap()
    }

    fn drain(p: &mut dyn SourcePartition<GenTick>, now: u64) -> (Vec<GenTick>, SourcePoll) {
        let seen = Rc::new(RefCell::new(Vec::new()));
        let mut c = Collect(seen.clone());
        let r = p.poll(now, 1_000, &mut Out::new(&mut c)).unwrap();
        let v = seen
            .borrow()
            .iter()
            .map(|s| match s {
                Seen::Data(t) => *t,
                _ => unreachable!(),
            })
            .collect();
        (v, r)
    }

    #[test]
    fn after_a_seek_the_schedule_resumes_at_the_start() {
        // 1000 events/s, two partitions: partition 1 restored at its event 7.
        let g = Generator::new(1_000, 20, 0, |t| t);
        let mut p1 = part(&g, 1, 2);
        p1.seek(7).unwrap();
        p1.start(100);
        let (v, _) = drain(&mut *p1, 100 + 1_000_000);
        assert_eq!(v.iter().map(|t| t.seq).collect::<Vec<_>>(), vec![7]);
        assert_eq!(
            v[0].due_ns,
            100 + 1_000_000,
            "seq 7 is 1 ms after the base, 6"
        );
        assert_eq!(p1.offset(), 9);
    }

    #[test]
    fn emits_what_is_due_stamped_with_its_due_time() {
        // 1000 events/s: one every 1 ms; two partitions interleave.
        let g = Generator::new(1_000, 10, 2_000_000, |t| t);
        let mut p1 = part(&g, 1, 2);
        p1.start(100);
        let (v, r) = drain(&mut *p1, 100 + 3_500_000);
        assert_eq!(v.iter().map(|t| t.seq).collect::<Vec<_>>(), vec![1, 3]);
        assert_eq!(v[1].due_ns, 100 + 3_000_000);
        assert!(!v[0].measure && v[1].measure, "warm-up is the first 2 ms");
        assert_eq!(r, SourcePoll::Emitted(2));
        let (v, r) = drain(&mut *p1, 100 + 4_000_000);
        assert!(v.is_empty());
        assert_eq!(
            r,
            SourcePoll::Idle {
                next_due_ns: Some(100 + 5_000_000)
            }
        );
        // Late polling does not lower the rate: everything due comes out, stamped due.
        let (v, r) = drain(&mut *p1, 100 + 60_000_000);
        assert_eq!(v.iter().map(|t| t.seq).collect::<Vec<_>>(), vec![5, 7, 9]);
        assert_eq!(v[2].due_ns, 100 + 9_000_000);
        assert_eq!(r, SourcePoll::Emitted(3));
        assert_eq!(drain(&mut *p1, u64::MAX / 2).1, SourcePoll::Done);
    }

    #[test]
    fn seek_resumes_at_an_offset() {
        let g = Generator::new(1_000_000, 100, 0, |t| t);
        let mut p = part(&g, 0, 1);
        p.start(0);
        p.seek(90).unwrap();
        let (v, _) = drain(&mut *p, u64::MAX / 2);
        assert_eq!(v.first().map(|t| t.seq), Some(90));
        assert_eq!(v.len(), 10);
        assert_eq!(p.offset(), 100);
    }
}
