//! The Kafka source and sink in whole jobs against a real Kafka-protocol broker (Tansu,
//! started on a free loopback port by `rill_testkit::Kafka`). The exactly-once checks
//! read the output topic raw and rebuild what was committed from the transaction
//! markers (see `common`).

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use rill_engine::checkpoint::restore::StartFrom as Restore;
use rill_engine::config::{available_cpus, CoreConfig, JobConfig, JobSpec};
use rill_engine::dataflow::windows::{Count, WindowResult, WindowSpec};
use rill_engine::dataflow::{PartitionContext, Pipeline, Sink, SinkPartition, WatermarkStrategy};
use rill_engine::metrics::JobReport;
use rill_engine::runtime::{supervise, Control, Job, StopHandle};
use rill_kafka::{Delivery, KafkaRecord, KafkaSink, KafkaSource};
use rill_testkit::Kafka;

/// Jobs pin executors to the same CPUs; run them one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn spec(dir: &Path, job: &str) -> JobSpec {
    let job: JobConfig = toml::from_str(job).unwrap();
    let cpus: Vec<usize> = available_cpus().into_iter().take(2).collect();
    JobSpec::with_cores(dir, job, &cpus, CoreConfig::default())
}

fn value(r: &KafkaRecord) -> u64 {
    std::str::from_utf8(&r.value)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not a number: {:?}", r.value))
}

/// The output topic rebuilt over its partitions: committed values counted.
fn committed_counts(k: &Kafka, topic: &str, partitions: i32) -> (BTreeMap<u64, u32>, usize, usize) {
    let mut counts = BTreeMap::new();
    let (mut commits, mut open) = (0, 0);
    for p in 0..partitions {
        let r = common::rebuild(&common::read_raw(&k.addr, topic, p));
        commits += r.commits;
        open += r.open.len();
        for v in r.committed {
            let n: u64 = String::from_utf8(v).unwrap().parse().unwrap();
            *counts.entry(n).or_default() += 1;
        }
    }
    (counts, commits, open)
}

fn assert_exactly(counts: &BTreeMap<u64, u32>, n: u64) {
    let lost = (0..n).filter(|i| !counts.contains_key(i)).count();
    let dup: u32 = counts.values().map(|c| c - 1).sum();
    let extra = counts.keys().filter(|k| **k >= n).count();
    assert_eq!(
        (lost, dup, extra),
        (0, 0, 0),
        "lost, duplicated, unexpected"
    );
}

#[test]
fn bounded_source_reads_every_partition_and_stops() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let k = Kafka::start();
    k.create_topic("in", 4);
    k.create_topic("out", 2);
    const N: u64 = 2_000;
    common::produce(&k.addr, "in", (0..N).map(|i| i.to_string()));
    let dir = tempfile::tempdir().unwrap();
    let spec = spec(dir.path(), "");
    let p = Pipeline::new(spec.job.max_key_groups);
    p.source("kafka", KafkaSource::new(&k.addr, &["in"]).bounded(true))
        .parallelism(4)
        .map("value", |r: KafkaRecord| (value(&r) * 10).to_string())
        .sink(
            "out",
            KafkaSink::new(&k.addr, "out", Delivery::AtLeastOnce, |s: &String| {
                (None, s.clone().into_bytes())
            }),
        );
    let graph = p.build(spec.default_parallelism()).unwrap();
    Job::new(spec, graph).run().unwrap();
    let (counts, commits, open) = committed_counts(&k, "out", 2);
    assert_eq!(
        (commits, open),
        (0, 0),
        "no transactions without exactly-once"
    );
    let want: BTreeMap<u64, u32> = (0..N).map(|i| (i * 10, 1)).collect();
    assert_eq!(counts, want);
}

/// Commit markers on `topic`/0 so far (transactions committed there).
fn commits_on_partition_0(addr: &str, topic: &str) -> usize {
    common::rebuild(&common::read_raw(addr, topic, 0)).commits
}

/// When the map of `run_exactly_once` fails: once `commits` transactions committed on
/// partition 0 of the output, and `mapped` records went through the map (so that the
/// checkpoint restored can be well into the input, not one taken before the source read
/// anything).
#[derive(Clone, Copy)]
struct FailAt {
    commits: usize,
    mapped: u64,
}

/// Runs Kafka → map → Kafka exactly-once with checkpoints, the source with `parallelism`
/// partitions; with `fail`, the map panics once (see `FailAt`).
fn run_exactly_once(k: &Kafka, out: &str, fail: Option<FailAt>, parallelism: u32) -> (u32, bool) {
    static ARMED: AtomicBool = AtomicBool::new(false);
    static MAPPED: AtomicU64 = AtomicU64::new(0);
    ARMED.store(fail.is_some(), Ordering::SeqCst);
    MAPPED.store(0, Ordering::SeqCst);
    let (addr2, out2) = (k.addr.clone(), out.to_string());
    let dir = tempfile::tempdir().unwrap();
    let spec = spec(
        dir.path(),
        "[checkpoint]\ninterval_ms = 20\n[restart]\nstrategy = \"fixed-delay\"\nattempts = 2\ndelay_ms = 10\n",
    );
    let (addr, out) = (k.addr.clone(), out.to_string());
    let build = move |spec: &JobSpec| {
        let p = Pipeline::new(spec.job.max_key_groups);
        let (addr2, out2) = (addr2.clone(), out2.clone());
        p.source("kafka", KafkaSource::new(&addr, &["in"]).bounded(true))
            .parallelism(parallelism)
            .map("maybe-fail", move |r: KafkaRecord| {
                let v = value(&r);
                if let Some(at) = fail {
                    // Slow enough that the input lasts past the failure.
                    std::thread::sleep(Duration::from_micros(50));
                    let mapped = MAPPED.fetch_add(1, Ordering::SeqCst);
                    if v % 100 == 0
                        && mapped >= at.mapped
                        && ARMED.load(Ordering::SeqCst)
                        && commits_on_partition_0(&addr2, &out2) >= at.commits
                        && ARMED.swap(false, Ordering::SeqCst)
                    {
                        panic!("injected failure at {v}");
                    }
                }
                v.to_string()
            })
            .sink(
                "out",
                KafkaSink::new(&addr, &out, Delivery::ExactlyOnce, |s: &String| {
                    (None, s.clone().into_bytes())
                }),
            );
        p.build(spec.default_parallelism())
    };
    let report = supervise(&spec, &build, Restore::Newest, &Control::default(), |_| {}).unwrap();
    eprintln!(
        "restarts {}, restored from {:?}, checkpoints {}, elapsed {:?}",
        report.restarts,
        report.restored_from,
        report.checkpoints.len(),
        report.elapsed
    );
    (report.restarts, report.restored_from.is_some())
}

#[test]
fn exactly_once_kafka_to_kafka_commits_each_record_once() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let k = Kafka::start();
    k.create_topic("in", 4);
    k.create_topic("out", 2);
    const N: u64 = 5_000;
    common::produce(&k.addr, "in", (0..N).map(|i| i.to_string()));
    let (restarts, _) = run_exactly_once(&k, "out", None, 4);
    assert_eq!(restarts, 0);
    let (counts, commits, open) = committed_counts(&k, "out", 2);
    assert!(
        commits >= 1,
        "the output was committed by transaction markers"
    );
    assert_eq!(open, 0, "no transaction left open");
    assert_exactly(&counts, N);
}

#[test]
fn exactly_once_after_a_failure_and_restore() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let k = Kafka::start();
    k.create_topic("in", 4);
    k.create_topic("out", 2);
    const N: u64 = 20_000;
    common::produce(&k.addr, "in", (0..N).map(|i| i.to_string()));
    let at = FailAt {
        commits: 1,
        mapped: 0,
    };
    let (restarts, restored) = run_exactly_once(&k, "out", Some(at), 4);
    assert_eq!(restarts, 1, "the injected failure restarted the job");
    assert!(restored, "the restart restored a checkpoint");
    let (counts, _, _) = committed_counts(&k, "out", 2);
    assert_exactly(&counts, N);
}

#[test]
fn eight_kafka_partitions_over_two_source_partitions_exactly_once_after_a_restore() {
    // Each source partition reads four Kafka partitions with one consumer and
    // checkpoints an offset for each; the restore seeks every one of them.
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let k = Kafka::start();
    k.create_topic("in", 8);
    k.create_topic("out", 2);
    const N: u64 = 40_000;
    common::produce(&k.addr, "in", (0..N).map(|i| i.to_string()));
    // Restored after 3 commits and 5_000 records: positions well into the input (a
    // restore that did not seek every Kafka partition duplicates thousands).
    let at = FailAt {
        commits: 3,
        mapped: 5_000,
    };
    let (restarts, restored) = run_exactly_once(&k, "out", Some(at), 2);
    assert_eq!(restarts, 1, "the injected failure restarted the job");
    assert!(restored, "the restart restored a checkpoint");
    let (counts, _, open) = committed_counts(&k, "out", 2);
    assert_eq!(open, 0, "no transaction left open");
    assert_exactly(&counts, N);
}

/// Regression (the risk-control Kafka kill test's duplicates): a restarted sink partition
/// must not produce again a transaction that committed. The old sink took a
/// consumer-group offset committed inside each transaction as the witness of its commit,
/// and Tansu holds such offsets back while another producer has an open transaction on
/// the same partitions: here a bystander's, open for the whole test. Every record is in
/// the final checkpoint's transactions (no other checkpoint: a long interval), which
/// commit; a second run restores that checkpoint, and its sink partitions see their
/// files of it. The old sink produced them again (every record twice); the log's commit
/// markers say they committed.
#[test]
fn a_committed_transaction_is_not_produced_again_after_a_restore() {
    use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let k = Kafka::start();
    k.create_topic("in", 2);
    k.create_topic("out", 1);
    const N: u64 = 2_000;
    common::produce(&k.addr, "in", (0..N).map(|i| i.to_string()));
    let bystander: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", &k.addr)
        .set("transactional.id", "bystander")
        .create()
        .unwrap();
    bystander
        .init_transactions(Duration::from_secs(10))
        .unwrap();
    bystander.begin_transaction().unwrap();
    bystander
        .send(BaseRecord::<[u8], [u8]>::to("out").payload(b"bystander".as_slice()))
        .map_err(|(e, _)| e)
        .unwrap();
    bystander.flush(Duration::from_secs(10)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let run = || {
        let spec = spec(dir.path(), "[checkpoint]\ninterval_ms = 3600000\n");
        let addr = k.addr.clone();
        let build = move |spec: &JobSpec| {
            let p = Pipeline::new(spec.job.max_key_groups);
            p.source("kafka", KafkaSource::new(&addr, &["in"]).bounded(true))
                .parallelism(2)
                .map("value", |r: KafkaRecord| value(&r).to_string())
                .sink(
                    "out",
                    KafkaSink::new(&addr, "out", Delivery::ExactlyOnce, |s: &String| {
                        (None, s.clone().into_bytes())
                    }),
                );
            p.build(spec.default_parallelism())
        };
        supervise(&spec, &build, Restore::Newest, &Control::default(), |_| {}).unwrap()
    };
    let first = run();
    assert_eq!(first.restarts, 0);
    let (counts, commits, _) = committed_counts(&k, "out", 1);
    assert!(
        commits >= 1,
        "the final checkpoint's transactions committed"
    );
    assert_exactly(&counts, N);
    let second = run();
    assert!(
        second.restored_from.is_some(),
        "the second run restored the final checkpoint"
    );
    let (counts, _, _) = committed_counts(&k, "out", 1);
    assert_exactly(&counts, N);
    bystander
        .abort_transaction(Duration::from_secs(10))
        .unwrap();
}

/// Produces `(partition, timestamp ms, value)` records to `topic` (key = value) and
/// waits until all are acknowledged. (Kept here, not in `common`, which another branch
/// moves into `rill_testkit::kafka_client`: after both land it belongs there, as a
/// variant of its `produce` with a partition and a timestamp.)
fn produce_records(
    brokers: &str,
    topic: &str,
    records: impl IntoIterator<Item = (i32, i64, String)>,
) {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        .create()
        .expect("creating the test producer");
    for (partition, ts, v) in records {
        let mut rec = BaseRecord::to(topic)
            .key(v.as_bytes())
            .payload(v.as_bytes())
            .partition(partition)
            .timestamp(ts);
        while let Err((_, r)) = p.send(rec) {
            rec = r;
            p.poll(Duration::from_millis(10));
        }
        p.poll(Duration::ZERO);
    }
    p.flush(Duration::from_secs(30))
        .expect("flushing the test producer");
}

/// Event time of the watermark tests: ms since the epoch.
const BASE_MS: i64 = 1_700_000_000_000;

/// What the window tests' sink saw: (key = Kafka partition, window start, count).
static WINDOWS: Mutex<Vec<(u64, i64, u64)>> = Mutex::new(Vec::new());
/// Records the window tests' source emitted.
static SEEN: AtomicU64 = AtomicU64::new(0);

/// Collects window results into `WINDOWS`.
struct Collect;
struct CollectPartition;

impl Sink<WindowResult<u64, u64>> for Collect {
    fn partition(
        &self,
        _ctx: &PartitionContext<'_>,
    ) -> rill_engine::Result<Box<dyn SinkPartition<WindowResult<u64, u64>>>> {
        Ok(Box::new(CollectPartition))
    }
}

impl SinkPartition<WindowResult<u64, u64>> for CollectPartition {
    fn write(&mut self, r: WindowResult<u64, u64>) -> rill_engine::Result<()> {
        WINDOWS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((r.key, r.start, r.value));
        Ok(())
    }
    fn finish(&mut self) -> rill_engine::Result<()> {
        Ok(())
    }
}

/// Topic `ev` with 8 partitions: partitions 0..7 get 300 records each, event times
/// `BASE_MS + 10 * i` (three 1 s windows); partition 7 is never written.
fn window_input(k: &Kafka) -> u64 {
    k.create_topic("ev", 8);
    let recs =
        (0..7).flat_map(|p| (0..300i64).map(move |i| (p, BASE_MS + 10 * i, format!("{p}-{i}"))));
    produce_records(&k.addr, "ev", recs);
    7 * 300
}

/// Starts (unbounded) Kafka `ev` with watermarks, parallelism 2 → tumbling 1 s counts per
/// Kafka partition → `Collect`, on a thread; returns its stop handle and the thread.
fn start_window_job(
    k: &Kafka,
    dir: &Path,
    idle: Option<Duration>,
) -> (
    StopHandle,
    std::thread::JoinHandle<rill_engine::Result<JobReport>>,
) {
    WINDOWS.lock().unwrap_or_else(|e| e.into_inner()).clear();
    SEEN.store(0, Ordering::SeqCst);
    let mut strategy =
        WatermarkStrategy::bounded(Duration::ZERO).with_interval(Duration::from_millis(10));
    if let Some(i) = idle {
        strategy = strategy.with_idle_timeout(i);
    }
    let spec = spec(dir, "");
    let p = Pipeline::new(spec.job.max_key_groups);
    p.source(
        "kafka",
        KafkaSource::new(&k.addr, &["ev"]).watermarks(strategy),
    )
    .parallelism(2)
    .map("seen", |r: KafkaRecord| {
        SEEN.fetch_add(1, Ordering::SeqCst);
        (
            r.partition as u64,
            r.timestamp_ms.expect("a timestamp") as u64,
        )
    })
    .key_by("by-partition", |r: &(u64, u64)| r.0)
    .window(
        "count",
        WindowSpec::tumbling(Duration::from_secs(1)),
        |r: &(u64, u64)| r.1,
        Count,
    )
    .sink("collect", Collect);
    let graph = p.build(spec.default_parallelism()).unwrap();
    let job = Job::new(spec, graph);
    let stop = job.stop_handle();
    (stop, std::thread::spawn(move || job.run()))
}

/// The first two windows of every written partition, 100 records each: what a
/// watermark at the last record's event time (`BASE_MS + 2_990`) fires.
fn first_two_windows() -> Vec<(u64, i64, u64)> {
    let mut v: Vec<_> = (0..7u64)
        .flat_map(|p| [(p, BASE_MS, 100), (p, BASE_MS + 1_000, 100)])
        .collect();
    v.sort();
    v
}

fn windows_fired() -> Vec<(u64, i64, u64)> {
    let mut v = WINDOWS.lock().unwrap_or_else(|e| e.into_inner()).clone();
    v.sort();
    v
}

/// Waits (up to a minute: a failure, not a timing) until `f` holds.
fn wait_for(what: &str, f: impl Fn() -> bool) {
    let give_up = std::time::Instant::now() + Duration::from_secs(60);
    while !f() {
        assert!(
            std::time::Instant::now() < give_up,
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn watermarks_per_kafka_partition_advance_past_an_idle_partition_and_windows_fire() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let k = Kafka::start();
    let n = window_input(&k);
    let dir = tempfile::tempdir().unwrap();
    // Source partition 1 reads Kafka partitions 1, 3, 5 and the silent 7.
    let (stop, job) = start_window_job(&k, dir.path(), Some(Duration::from_millis(200)));
    // The source is unbounded: only the watermarks can fire these windows.
    wait_for("the first two windows of every partition", || {
        windows_fired() == first_two_windows()
    });
    assert_eq!(SEEN.load(Ordering::SeqCst), n);
    stop.stop();
    job.join().unwrap().unwrap();
    assert!(
        windows_fired().iter().all(|w| w.0 < 7),
        "nothing from the idle partition"
    );
}

#[test]
fn without_idleness_a_never_written_partition_holds_the_windows_back() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let k = Kafka::start();
    let n = window_input(&k);
    let dir = tempfile::tempdir().unwrap();
    let (stop, job) = start_window_job(&k, dir.path(), None);
    wait_for("every record read", || SEEN.load(Ordering::SeqCst) == n);
    // Many watermark intervals (10 ms) and five times the other test's idle timeout:
    // nothing fires while Kafka partition 7 has no record (a slow machine only makes
    // this wait shorter in effect, never makes it fail wrongly).
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        windows_fired(),
        [],
        "no window fired while partition 7 holds the watermark back"
    );
    // Partition 7 speaks: source partition 1's watermark is now the minimum over its
    // four Kafka partitions (BASE_MS + 2_989), and the windows fire.
    produce_records(&k.addr, "ev", [(7, BASE_MS + 2_999, "7-last".to_string())]);
    wait_for("the first two windows after partition 7's record", || {
        windows_fired() == first_two_windows()
    });
    stop.stop();
    job.join().unwrap().unwrap();
}

#[test]
fn completed_checkpoints_commit_their_offsets_to_the_group() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    static NEXT: Mutex<BTreeMap<i32, i64>> = Mutex::new(BTreeMap::new());
    NEXT.lock().unwrap_or_else(|e| e.into_inner()).clear();
    let k = Kafka::start();
    k.create_topic("in", 8);
    k.create_topic("out", 2);
    const N: u64 = 5_000;
    common::produce(&k.addr, "in", (0..N).map(|i| i.to_string()));
    let dir = tempfile::tempdir().unwrap();
    let spec = spec(dir.path(), "[checkpoint]\ninterval_ms = 20\n");
    let p = Pipeline::new(spec.job.max_key_groups);
    p.source(
        "kafka",
        KafkaSource::new(&k.addr, &["in"])
            .bounded(true)
            .commit_offsets_to_group("lag"),
    )
    .parallelism(2)
    .map("note", |r: KafkaRecord| {
        let mut m = NEXT.lock().unwrap_or_else(|e| e.into_inner());
        let e = m.entry(r.partition).or_default();
        *e = (*e).max(r.offset + 1);
        value(&r).to_string()
    })
    .sink(
        "out",
        KafkaSink::new(&k.addr, "out", Delivery::ExactlyOnce, |s: &String| {
            (None, s.clone().into_bytes())
        }),
    );
    let graph = p.build(spec.default_parallelism()).unwrap();
    let report = Job::new(spec, graph).run().unwrap();
    assert!(!report.checkpoints.is_empty(), "checkpoints were taken");
    // The final checkpoint is at the end of every partition: the group holds the next
    // offset after each partition's last record.
    let want = NEXT.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert_eq!(want.len(), 8, "every partition had records");
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &k.addr)
        .set("group.id", "lag")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..8 {
        tpl.add_partition("in", p);
    }
    let got: BTreeMap<i32, i64> = c
        .committed_offsets(tpl, Duration::from_secs(10))
        .unwrap()
        .elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(o) => (e.partition(), o),
            other => panic!(
                "partition {} has no committed offset: {other:?}",
                e.partition()
            ),
        })
        .collect();
    assert_eq!(got, want);
}

/// The job of `exactly_once_under_sigkill`, run in a child process (this test binary
/// again) on the job directory and broker the parent names; ignored when run directly.
#[test]
#[ignore]
fn sigkill_child_job() {
    let (Some(dir), Some(addr)) = (
        std::env::var_os("RILL_KAFKA_CHILD_DIR"),
        std::env::var("RILL_KAFKA_CHILD_ADDR").ok(),
    ) else {
        return;
    };
    let spec = spec(Path::new(&dir), "[checkpoint]\ninterval_ms = 20\n");
    let delivery = match std::env::var("RILL_KAFKA_CHILD_DELIVERY").as_deref() {
        Ok("at-least-once") => Delivery::AtLeastOnce,
        _ => Delivery::ExactlyOnce,
    };
    let build = move |spec: &JobSpec| {
        let p = Pipeline::new(spec.job.max_key_groups);
        p.source("kafka", KafkaSource::new(&addr, &["in"]).bounded(true))
            .parallelism(4)
            .map("slow", |r: KafkaRecord| {
                std::thread::sleep(Duration::from_micros(100));
                value(&r).to_string()
            })
            .sink(
                "out",
                KafkaSink::new(&addr, "out", delivery, |s: &String| {
                    (None, s.clone().into_bytes())
                }),
            );
        p.build(spec.default_parallelism())
    };
    supervise(&spec, &build, Restore::Newest, &Control::default(), |_| {}).unwrap();
}

#[test]
fn exactly_once_under_sigkill() {
    let counts = run_under_sigkill("exactly-once");
    assert_exactly(&counts, SIGKILL_N);
}

#[test]
fn at_least_once_under_sigkill_loses_nothing() {
    let counts = run_under_sigkill("at-least-once");
    let lost = (0..SIGKILL_N).filter(|i| !counts.contains_key(i)).count();
    assert_eq!(lost, 0, "lost");
}

const SIGKILL_N: u64 = 100_000;

/// Kills the child job with SIGKILL at seeded random moments (`RILL_KAFKA_KILLS`, 10 by
/// default), lets the last run finish, and returns the committed output counted.
fn run_under_sigkill(delivery: &str) -> BTreeMap<u64, u32> {
    use rand::{Rng, SeedableRng};
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let seed: u64 = std::env::var("RILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("{delivery} under SIGKILL: seed {seed} (RILL_SEED={seed} replays the kill times)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let k = Kafka::start();
    k.create_topic("in", 4);
    k.create_topic("out", 2);
    const N: u64 = SIGKILL_N;
    common::produce(&k.addr, "in", (0..N).map(|i| i.to_string()));
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let child = || {
        std::process::Command::new(&exe)
            .args([
                "--exact",
                "sigkill_child_job",
                "--ignored",
                "--test-threads",
                "1",
            ])
            .env("RILL_KAFKA_CHILD_DIR", dir.path())
            .env("RILL_KAFKA_CHILD_ADDR", &k.addr)
            .env("RILL_KAFKA_CHILD_DELIVERY", delivery)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let kills: u32 = std::env::var("RILL_KAFKA_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let mut killed = 0;
    while killed < kills {
        let mut c = child();
        let at = Duration::from_millis(rng.gen_range(200..1_200));
        std::thread::sleep(at);
        if c.try_wait().unwrap().is_some() {
            break; // finished before this kill: the input is done
        }
        c.kill().unwrap(); // SIGKILL
        c.wait().unwrap();
        killed += 1;
    }
    let status = child().wait().unwrap();
    assert!(
        status.success(),
        "the last run failed: {status} (seed {seed})"
    );
    eprintln!("killed {killed} times (seed {seed})");
    assert_eq!(
        killed, kills,
        "the job finished before every kill (seed {seed})"
    );
    let (counts, _, _) = committed_counts(&k, "out", 2);
    counts
}
