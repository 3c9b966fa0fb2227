//! Whole pipelines on (up to) 2 pinned cores, checked against naive references.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rill_engine::config::{available_cpus, CoreConfig, JobConfig, JobSpec};
use rill_engine::connectors::{FileSink, Generator};
use rill_engine::dataflow::{Out, PartitionContext, Pipeline, Sink, SinkPartition};
use rill_engine::runtime::Job;
use rill_engine::{pipelines, EngineError};

/// Jobs pin executors to the same CPUs; run them one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn cpus() -> Vec<usize> {
    available_cpus().into_iter().take(2).collect()
}

fn spec(dir: &Path, job: JobConfig, core: CoreConfig) -> JobSpec {
    JobSpec::with_cores(dir, job, &cpus(), core)
}

/// The built-in latency job with `generator` as its `[generator]` table.
fn latency_job(dir: &Path, generator: &str) -> Job {
    let job: JobConfig = toml::from_str(&format!(
        "pipeline = \"latency\"\n[generator]\n{generator}\n"
    ))
    .unwrap();
    let spec = spec(dir, job, CoreConfig::default());
    let graph = pipelines::build(&spec).unwrap();
    Job::new(spec, graph)
}

#[test]
fn latency_job_delivers_every_generated_event() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let report = latency_job(
        dir.path(),
        "rate_eps = 50000\nduration_ms = 400\nwarmup_ms = 100\nkeys = 1000",
    )
    .run()
    .unwrap();
    assert_eq!(report.counter("source_records"), 20_000);
    assert_eq!(report.counter("sink_records"), 20_000);
    // Events due after the warm-up are measured; the rest only counted.
    assert_eq!(report.latency.len(), 15_000);
}

/// A sink that is slow on purpose and checks nothing was lost or duplicated.
struct SlowSink;
struct SlowPartition(Vec<u64>, PathBuf);
impl Sink<u64> for SlowSink {
    fn partition(
        &self,
        ctx: &PartitionContext<'_>,
    ) -> rill_engine::Result<Box<dyn SinkPartition<u64>>> {
        Ok(Box::new(SlowPartition(
            Vec::new(),
            ctx.resolve(Path::new(&format!("slow-{}.txt", ctx.partition.0))),
        )))
    }
}
impl SinkPartition<u64> for SlowPartition {
    fn write(&mut self, rec: u64) -> rill_engine::Result<()> {
        if rec % 64 == 0 {
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
        self.0.push(rec);
        Ok(())
    }
    fn finish(&mut self) -> rill_engine::Result<()> {
        let text: Vec<String> = self.0.iter().map(u64::to_string).collect();
        std::fs::write(&self.1, text.join("\n")).unwrap();
        Ok(())
    }
}

#[test]
fn a_slow_sink_backpressures_without_loss_through_union_rebalance_and_parallelism_changes() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let n = 40_000u64;
    let p = Pipeline::new(128);
    // Two generators flat out (rate far above what the sink takes).
    let a = p
        .source("a", Generator::new(100_000_000, n, 0, |t| t.seq * 2))
        .parallelism(2);
    let b = p
        .source("b", Generator::new(100_000_000, n, 0, |t| t.seq * 2 + 1))
        .parallelism(2);
    a.union("both", &b)
        .filter("all", |_| true)
        .parallelism(1) // breaks the chain: a rebalance is inserted
        .map("id", |x: u64| x)
        .rebalance("spread")
        .parallelism(2)
        .sink("slow", SlowSink);
    let graph = p.build(2).unwrap();
    let ops = graph.operators();
    assert!(
        ops.iter()
            .any(|(name, par)| name == "all.rebalance" && *par == 1),
        "{ops:?}"
    );
    let core = CoreConfig {
        ring_capacity: 2,
        batch_max: 4,
        ..CoreConfig::default()
    };
    let spec = spec(dir.path(), JobConfig::default(), core);
    let report = Job::new(spec, graph).run().unwrap();
    assert!(
        report.counter("backpressure_steps") > 0,
        "the sink was slow enough to block"
    );
    let mut all: Vec<u64> = Vec::new();
    for p in 0..2 {
        let text = std::fs::read_to_string(dir.path().join(format!("slow-{p}.txt"))).unwrap();
        all.extend(text.lines().map(|l| l.parse::<u64>().unwrap()));
    }
    all.sort_unstable();
    assert_eq!(all, (0..2 * n).collect::<Vec<_>>());
}

#[test]
fn stop_drains_what_was_emitted() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let job = latency_job(
        dir.path(),
        "rate_eps = 20000\nduration_ms = 600000\nwarmup_ms = 0",
    );
    let handle = job.stop_handle();
    let stopper = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(300));
        handle.stop();
    });
    let report = job.run().unwrap();
    stopper.join().unwrap();
    assert!(report.stopped);
    let emitted = report.counter("source_records");
    assert!(emitted > 0 && emitted < 12_000_000);
    assert_eq!(
        report.counter("sink_records"),
        emitted,
        "nothing emitted is lost"
    );
}

/// A sink that fails on its 100th record.
struct FailingSink;
struct FailingPartition(u32);
impl Sink<u64> for FailingSink {
    fn partition(
        &self,
        _ctx: &PartitionContext<'_>,
    ) -> rill_engine::Result<Box<dyn SinkPartition<u64>>> {
        Ok(Box::new(FailingPartition(0)))
    }
}
impl SinkPartition<u64> for FailingPartition {
    fn write(&mut self, _rec: u64) -> rill_engine::Result<()> {
        self.0 += 1;
        if self.0 == 100 {
            return Err(EngineError::Operator {
                operator: "fail".into(),
                partition: 0,
                reason: "disk on fire".into(),
            });
        }
        Ok(())
    }
    fn finish(&mut self) -> rill_engine::Result<()> {
        Ok(())
    }
}

#[test]
fn an_operator_failure_stops_every_core_and_is_reported() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let p = Pipeline::new(128);
    p.source(
        "gen",
        Generator::new(1_000_000, 1_000_000_000, 0, |t| t.seq),
    )
    .key_by("k", |x: &u64| *x)
    .process("id", |_init| {
        |_ctx, x: u64, out: &mut Out<'_, u64>| out.emit(x)
    })
    .sink("fail", FailingSink);
    let graph = p.build(2).unwrap();
    let spec = spec(dir.path(), JobConfig::default(), CoreConfig::default());
    let err = Job::new(spec, graph).run().unwrap_err().to_string();
    assert!(err.contains("disk on fire"), "{err}");
}

/// Review finding: a panic in user code on one core used to leave the others waiting
/// for its end-of-stream forever.
#[test]
fn a_panic_in_an_operator_fails_the_job_instead_of_hanging() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let p = Pipeline::new(128);
    p.source(
        "gen",
        Generator::new(1_000_000, 1_000_000_000, 0, |t| t.seq),
    )
    .map("boom", |x: u64| {
        assert!(x != 1001, "user code panicked on record 1001");
        x
    })
    .key_by("k", |x: &u64| *x)
    .process("id", |_init| {
        |_ctx, x: u64, out: &mut Out<'_, u64>| out.emit(x)
    })
    .sink("discard", SlowSink);
    let graph = p.build(2).unwrap();
    let spec = spec(dir.path(), JobConfig::default(), CoreConfig::default());
    assert!(Job::new(spec, graph).run().is_err());
}

/// Review finding: a keyed `process` with another parallelism than its `key_by` used to
/// get a round-robin rebalance, splitting one key's state over several partitions.
#[test]
fn a_keyed_process_with_its_own_parallelism_keeps_each_key_in_one_partition() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let p = Pipeline::new(128);
    p.source("gen", Generator::new(100_000_000, 4_000, 0, |t| t.seq))
        .key_by("k", |x: &u64| *x % 10)
        .process("count", |init| {
            let count = init.value::<u64>("count");
            move |ctx, _x: u64, out: &mut Out<'_, String>| {
                let n = count.update(
                    ctx,
                    || 0,
                    |c| {
                        *c += 1;
                        *c
                    },
                );
                out.emit(format!("{},{n}", ctx.key()));
            }
        })
        .parallelism(3)
        .sink("out", FileSink::lines("out"));
    let graph = p.build(2).unwrap();
    assert!(graph.operators().iter().any(|(n, _)| n == "count.rekey"));
    let spec = spec(dir.path(), JobConfig::default(), CoreConfig::default());
    Job::new(spec, graph).run().unwrap();
    let mut counts: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for text in rill_testkit::read_csv_parts(&dir.path().join("out")).values() {
        for line in text.lines() {
            let (k, n) = line.split_once(',').unwrap();
            counts
                .entry(k.parse().unwrap())
                .or_default()
                .push(n.parse().unwrap());
        }
    }
    assert_eq!(counts.len(), 10);
    for (k, mut seq) in counts {
        seq.sort_unstable();
        assert_eq!(seq, (1..=400).collect::<Vec<_>>(), "key {k}");
    }
}

/// When the map of `failing_job` fails.
#[derive(Clone)]
enum FailWhen {
    /// At every record.
    Always,
    /// Once, at the first record (a multiple of 500) after a checkpoint of the job in
    /// this checkpoint directory completed: the restart then has one to restore from,
    /// however slowly a loaded machine runs the job.
    AfterACheckpoint(PathBuf),
}

/// A generator (200k events) → map (which panics as `when` says, while `armed`) →
/// key_by → per-key count → file sink job with checkpoints every 20 ms.
fn failing_job(
    armed: &'static std::sync::atomic::AtomicBool,
    when: FailWhen,
) -> impl Fn(&JobSpec) -> rill_engine::Result<rill_engine::dataflow::JobGraph> {
    move |spec: &JobSpec| {
        let p = Pipeline::new(spec.job.max_key_groups);
        let when = when.clone();
        p.source("gen", Generator::new(200_000, 200_000, 0, |t| t.seq))
            .map("maybe-fail", move |seq: u64| {
                let due = match &when {
                    FailWhen::Always => true,
                    FailWhen::AfterACheckpoint(dir) => {
                        seq % 500 == 0
                            && armed.load(std::sync::atomic::Ordering::SeqCst)
                            && rill_engine::checkpoint::history::read(dir)
                                .unwrap_or_default()
                                .iter()
                                .any(|e| {
                                    e.state == rill_engine::checkpoint::history::State::Complete
                                })
                    }
                };
                if due {
                    let keep = matches!(when, FailWhen::Always);
                    if armed.swap(keep, std::sync::atomic::Ordering::SeqCst) {
                        panic!("injected failure at seq {seq}");
                    }
                }
                seq
            })
            .key_by("by-key", |s: &u64| s % 100)
            .process("count", |init| {
                let count = init.value::<u64>("count");
                move |ctx, _s: u64, out: &mut Out<'_, String>| {
                    let n = count.update(
                        ctx,
                        || 0,
                        |c| {
                            *c += 1;
                            *c
                        },
                    );
                    out.emit(format!("{},{n}", ctx.key()));
                }
            })
            .sink("out", FileSink::lines("out"));
        p.build(spec.default_parallelism())
    }
}

fn restart_job(dir: &Path, restart: &str) -> JobSpec {
    let job: JobConfig = toml::from_str(&format!(
        "[checkpoint]\ninterval_ms = 20\n[restart]\n{restart}\n"
    ))
    .unwrap();
    spec(dir, job, CoreConfig::default())
}

#[test]
fn an_operator_failure_restarts_the_job_from_its_last_checkpoint_exactly_once() {
    use rill_engine::checkpoint::restore::StartFrom;
    use rill_engine::runtime::{supervise, Control};
    static ARMED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let spec = restart_job(
        dir.path(),
        "strategy = \"fixed-delay\"\nattempts = 2\ndelay_ms = 10",
    );
    let mut notes = Vec::new();
    let build = failing_job(
        &ARMED,
        FailWhen::AfterACheckpoint(dir.path().join("checkpoints")),
    );
    let report = supervise(&spec, &build, StartFrom::Newest, &Control::default(), |m| {
        notes.push(m.to_string())
    })
    .unwrap();
    assert_eq!(report.restarts, 1, "{notes:?}");
    assert!(notes[0].contains("restart 1 in 10 ms"), "{notes:?}");
    assert!(
        report.restored_from.is_some(),
        "restarted from a checkpoint"
    );
    let mut counts: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for f in rill_engine::connectors::committed_files(&dir.path().join("out")).unwrap() {
        for line in std::fs::read_to_string(f).unwrap().lines() {
            let (k, n) = line.split_once(',').unwrap();
            counts
                .entry(k.parse().unwrap())
                .or_default()
                .push(n.parse().unwrap());
        }
    }
    assert_eq!(counts.len(), 100);
    for (k, mut c) in counts {
        c.sort_unstable();
        assert_eq!(
            c,
            (1..=2000).collect::<Vec<u64>>(),
            "key {k}: every count once"
        );
    }
}

#[test]
fn the_restart_strategy_gives_up_after_its_attempts() {
    use rill_engine::checkpoint::restore::StartFrom;
    use rill_engine::runtime::{supervise, Control};
    static ARMED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let spec = restart_job(
        dir.path(),
        "strategy = \"fixed-delay\"\nattempts = 2\ndelay_ms = 1",
    );
    let mut notes = Vec::new();
    let build = failing_job(&ARMED, FailWhen::Always);
    let err = supervise(&spec, &build, StartFrom::Newest, &Control::default(), |m| {
        notes.push(m.to_string())
    })
    .unwrap_err();
    assert!(err.is_restartable(), "{err}");
    assert_eq!(notes.len(), 3, "two restarts, then giving up: {notes:?}");
    assert!(notes[2].contains("not restarting"), "{notes:?}");
}
