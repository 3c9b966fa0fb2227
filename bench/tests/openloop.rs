//! The load generator under the harness's assumptions: it holds the target rate (every
//! scheduled event is emitted, stamped with exactly the time it was due) and a stalled
//! sink shows up as latency, not as fewer or later-stamped events. Causal checks only:
//! no wall-clock thresholds.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rill_engine::clock::{Clock, MonotonicClock};
use rill_engine::config::{available_cpus, CoreConfig, CoreSpec, JobConfig, JobSpec};
use rill_engine::connectors::{GenTick, Generator};
use rill_engine::dataflow::{PartitionContext, Pipeline, Sink, SinkPartition};
use rill_engine::ids::CoreId;
use rill_engine::metrics::MetricsHandle;
use rill_engine::runtime::Job;

const STALL: Duration = Duration::from_millis(60);

/// Records latency like the latency sink, keeps every event's (seq, due), and sleeps
/// once, on the first measured event it sees.
struct StallingSink {
    seen: Arc<Mutex<Vec<(u64, u64)>>>,
    stalled: Arc<Mutex<bool>>,
}

struct StallingPartition {
    clock: MonotonicClock,
    metrics: MetricsHandle,
    seen: Arc<Mutex<Vec<(u64, u64)>>>,
    local: Vec<(u64, u64)>,
    stalled: Arc<Mutex<bool>>,
}

impl Sink<GenTick> for StallingSink {
    fn partition(
        &self,
        ctx: &PartitionContext<'_>,
    ) -> rill_engine::Result<Box<dyn SinkPartition<GenTick>>> {
        Ok(Box::new(StallingPartition {
            clock: ctx.clock,
            metrics: ctx.metrics.clone(),
            seen: self.seen.clone(),
            local: Vec::new(),
            stalled: self.stalled.clone(),
        }))
    }
}

impl SinkPartition<GenTick> for StallingPartition {
    fn write(&mut self, t: GenTick) -> rill_engine::Result<()> {
        if t.measure {
            let first = {
                let mut s = self.stalled.lock().unwrap();
                !std::mem::replace(&mut *s, true)
            };
            if first {
                std::thread::sleep(STALL);
            }
            let now = self.clock.now_ns();
            self.metrics
                .record_latency(now.saturating_sub(t.due_ns), now);
        }
        self.local.push((t.seq, t.due_ns));
        Ok(())
    }

    fn finish(&mut self) -> rill_engine::Result<()> {
        self.seen.lock().unwrap().append(&mut self.local);
        Ok(())
    }
}

#[test]
fn a_stalled_sink_shows_as_latency_and_the_schedule_holds() {
    let rate = 20_000u64;
    let events = 8_000u64; // 400 ms
    let warmup_ns = 100_000_000;
    let cpus: Vec<usize> = available_cpus().into_iter().take(2).collect();
    let spec = JobSpec {
        dir: PathBuf::from("."),
        job: JobConfig::default(),
        cores: cpus
            .iter()
            .map(|&c| CoreSpec {
                cpu: CoreId(c),
                file: PathBuf::from(format!("cores/{c}.toml")),
                config: CoreConfig::default(),
            })
            .collect(),
    };
    let seen = Arc::new(Mutex::new(Vec::new()));
    let p = Pipeline::new(spec.job.max_key_groups);
    p.source("gen", Generator::new(rate, events, warmup_ns, |t| t))
        .key_by("by-seq", |t: &GenTick| t.seq)
        .as_stream()
        .map("unkey", |k| k.value)
        .sink(
            "stall",
            StallingSink {
                seen: seen.clone(),
                stalled: Arc::default(),
            },
        );
    let graph = p.build(spec.default_parallelism()).unwrap();
    let report = Job::new(spec, graph).run().unwrap();

    // Every scheduled event arrived once, stamped with exactly its due time.
    let mut seen = seen.lock().unwrap().clone();
    seen.sort_unstable();
    assert_eq!(
        seen.len() as u64,
        events,
        "the generator dropped or added events"
    );
    for (i, &(seq, due)) in seen.iter().enumerate() {
        assert_eq!(seq, i as u64);
        let offset = (u128::from(seq) * 1_000_000_000 / u128::from(rate)) as u64;
        assert_eq!(
            due,
            report.start_ns + offset,
            "event {seq} not stamped with its due time"
        );
    }
    // The stall is in the latency: the event the sink slept on waited at least that long.
    let measured = events - (warmup_ns * rate).div_ceil(1_000_000_000);
    assert_eq!(report.latency.len(), measured);
    assert!(
        report.latency.max() >= STALL.as_nanos() as u64,
        "max latency {} ns is below the {STALL:?} stall",
        report.latency.max()
    );
    // The harness's view of the same facts.
    assert_eq!(
        rill_bench::report::expected_samples(rate, events * 1_000 / rate, warmup_ns / 1_000_000),
        measured
    );
}
