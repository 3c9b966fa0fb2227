//! A job run as several processes (`--process i/N`, docs/multi-process.md) against a
//! real Kafka-protocol broker (Tansu) and, for the global checkpoint, a real S3 store
//! (SeaweedFS), both started by the test on loopback.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

use rill_engine::config::{available_cpus, CoreConfig, JobConfig, JobSpec};
use rill_engine::dataflow::Pipeline;
use rill_engine::ids::Process;
use rill_engine::runtime::Job;
use rill_kafka::{Delivery, KafkaRecord, KafkaSink, KafkaSource};
use rill_testkit::Kafka;

/// Jobs pin executors to the same CPUs; run them one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// A job spec on one CPU (the first available) as process `process`.
fn spec(dir: &Path, job: &str, process: Process) -> JobSpec {
    let mut job: JobConfig = toml::from_str(job).unwrap();
    job.process = Some(process);
    let cpus: Vec<usize> = available_cpus().into_iter().take(1).collect();
    JobSpec::with_cores(dir, job, &cpus, CoreConfig::default())
}

/// The committed values of `topic`'s `partitions`, counted; with `closed`, asserts that no
/// transaction is left open.
fn committed_values(
    k: &Kafka,
    topic: &str,
    partitions: i32,
    closed: bool,
) -> BTreeMap<String, u32> {
    let mut counts = BTreeMap::new();
    for p in 0..partitions {
        let r = common::rebuild(&common::read_raw(&k.addr, topic, p));
        assert!(
            !closed || r.open.is_empty(),
            "records of {topic} in open transactions"
        );
        for v in r.committed {
            *counts.entry(String::from_utf8(v).unwrap()).or_default() += 1;
        }
    }
    counts
}

/// Process i of 3 reads exactly the Kafka partitions p with p % 3 == i (numbered over
/// both topics, in the order given), spread over its two source partitions; together the
/// three read everything once. Fails if a process reads a partition it does not own.
#[test]
fn each_process_reads_the_kafka_partitions_it_owns() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let k = Kafka::start();
    k.create_topic("a", 4);
    k.create_topic("b", 3);
    k.create_topic("out", 1);
    common::produce(&k.addr, "a", (0..400).map(|i| format!("a{i}")));
    common::produce(&k.addr, "b", (0..300).map(|i| format!("b{i}")));
    let mut seen: BTreeMap<String, (u32, String)> = BTreeMap::new();
    for i in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let spec = spec(dir.path(), "", Process { index: i, count: 3 });
        let p = Pipeline::new(spec.job.max_key_groups);
        let out = format!("out-{i}");
        k.create_topic(&out, 1);
        p.source(
            "kafka",
            KafkaSource::new(&k.addr, &["a", "b"]).bounded(true),
        )
        .parallelism(2)
        .map("tag", |r: KafkaRecord| {
            format!(
                "{}:{}:{}",
                r.topic,
                r.partition,
                String::from_utf8(r.value).unwrap()
            )
        })
        .sink(
            "out",
            KafkaSink::new(&k.addr, &out, Delivery::AtLeastOnce, |s: &String| {
                (None, s.clone().into_bytes())
            }),
        );
        let graph = p.build(2).unwrap();
        Job::new(spec, graph).run().unwrap();
        for (v, n) in committed_values(&k, &out, 1, true) {
            assert_eq!(n, 1, "{v} read {n} times by process {i}");
            let mut parts = v.splitn(3, ':');
            let (topic, partition, value) = (
                parts.next().unwrap().to_string(),
                parts.next().unwrap().parse::<usize>().unwrap(),
                parts.next().unwrap().to_string(),
            );
            // Kafka partitions numbered over both topics: a0..a3 are 0..3, b0..b2 4..6.
            let numbered = if topic == "a" {
                partition
            } else {
                4 + partition
            };
            assert_eq!(
                numbered % 3,
                i as usize,
                "process {i} of 3 read {topic} partition {partition} (number {numbered})"
            );
            let before = seen.insert(value, (i, topic));
            assert!(before.is_none(), "read by two processes: {before:?}");
        }
    }
    assert_eq!(seen.len(), 700, "every record read by some process");
}

/// Input of the kill test: record `i` has key `i % KEYS` and goes to Kafka partition
/// `key % IN_PARTITIONS`, so that every record of a key is in one partition (the keyed
/// state follows the Kafka partitioning: see the test's doc).
const KEYS: u64 = 60;
const IN_PARTITIONS: i32 = 6;
const OUT_PARTITIONS: i32 = 2;
/// Records per batch, and batches (one produced before each kill, the rest after).
const BATCH: u64 = 4_000;
const BATCHES: u64 = 14;
const KILLS: usize = 12;
const PROCESSES: u32 = 3;

/// Produces records `from..to` (value `"{i}"`, key `"{i % KEYS}"`) to their partitions.
fn produce_input(brokers: &str, from: u64, to: u64) {
    use rdkafka::config::ClientConfig;
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        .create()
        .expect("creating the test producer");
    for i in from..to {
        let (k, v) = ((i % KEYS).to_string(), i.to_string());
        let mut rec = BaseRecord::to("in")
            .key(k.as_bytes())
            .payload(v.as_bytes())
            .partition(((i % KEYS) % IN_PARTITIONS as u64) as i32);
        while let Err((_, r)) = p.send(rec) {
            rec = r;
            p.poll(std::time::Duration::from_millis(10));
        }
        p.poll(std::time::Duration::ZERO);
    }
    p.flush(std::time::Duration::from_secs(30))
        .expect("flushing the test producer");
}

/// One process of the kill test's job, run in a child process (this test binary again)
/// as process `RILL_PROC_INDEX` of 3, on the job directory, broker and checkpoint
/// location the parent names; ignored when run directly. Kafka `in` -> parse -> key_by
/// (key) -> per-key count in keyed state -> Kafka `out` (`"{i}:{count}"`), exactly-once,
/// checkpoints in S3.
#[test]
#[ignore]
fn multi_process_child() {
    let (Some(dir), Some(addr), Some(index), Some(url)) = (
        std::env::var_os("RILL_PROC_DIR"),
        std::env::var("RILL_PROC_ADDR").ok(),
        std::env::var("RILL_PROC_INDEX")
            .ok()
            .and_then(|s| s.parse::<u32>().ok()),
        std::env::var("RILL_PROC_URL").ok(),
    ) else {
        return;
    };
    let timeout_ms: u64 = std::env::var("RILL_PROC_TIMEOUT_MS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    let job = format!(
        "[checkpoint]\ninterval_ms = 100\ntimeout_ms = {timeout_ms}\n\
         dir = \"{url}\"\n[restart]\nstrategy = \"fixed-delay\"\ndelay_ms = 100\n"
    );
    let mut job: JobConfig = toml::from_str(&job).unwrap();
    job.process = Some(Process {
        index,
        count: PROCESSES,
    });
    let cpus = available_cpus();
    let cpu = cpus[index as usize % cpus.len()];
    let spec = JobSpec::with_cores(Path::new(&dir), job, &[cpu], CoreConfig::default());
    let build = move |spec: &JobSpec| {
        let p = Pipeline::new(spec.job.max_key_groups);
        p.source("kafka", KafkaSource::new(&addr, &["in"]))
            .map("parse", |r: KafkaRecord| {
                let i: u64 = std::str::from_utf8(&r.value).unwrap().parse().unwrap();
                (i % KEYS, i)
            })
            .key_by("by-key", |r: &(u64, u64)| r.0)
            .process("count", |init| {
                let count = init.value::<u64>("count");
                move |ctx, r: (u64, u64), out: &mut rill_engine::dataflow::Out<'_, String>| {
                    let c = count.update(
                        ctx,
                        || 0,
                        |c| {
                            *c += 1;
                            *c
                        },
                    );
                    out.emit(format!("{}:{c}", r.1));
                }
            })
            .sink(
                "out",
                KafkaSink::new(&addr, "out", Delivery::ExactlyOnce, |s: &String| {
                    (None, s.clone().into_bytes())
                }),
            );
        p.build(1)
    };
    rill_engine::runtime::supervise(
        &spec,
        &build,
        rill_engine::checkpoint::restore::StartFrom::Newest,
        &rill_engine::runtime::Control::default(),
        |m| eprintln!("{m}"),
    )
    .unwrap();
}

/// Starts process `i` of the kill tests' job (run `run`, stderr in
/// `root/process-<i>-run-<run>.log`) in a child process, with `env` on top.
fn spawn_child(
    root: &Path,
    i: usize,
    run: usize,
    k: &Kafka,
    s3: &rill_testkit::S3,
    env: &[(&str, &str)],
) -> std::process::Child {
    let dir = root.join(format!("process-{i}"));
    std::fs::create_dir_all(&dir).unwrap();
    let log = root.join(format!("process-{i}-run-{run}.log"));
    std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "multi_process_child",
            "--ignored",
            "--test-threads",
            "1",
            "--nocapture",
        ])
        .envs(s3.env())
        .envs(env.iter().copied())
        .env("RILL_PROC_DIR", &dir)
        .env("RILL_PROC_ADDR", &k.addr)
        .env("RILL_PROC_INDEX", i.to_string())
        .env("RILL_PROC_URL", s3.url("job"))
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap()
}

/// The job's global decisions in `job`: (complete, aborted).
fn global_decisions(job: &rill_storage::Remote) -> (usize, usize) {
    let ids = job.list_globals().unwrap();
    let complete = ids
        .iter()
        .filter(|id| {
            job.load_global(**id)
                .unwrap()
                .is_some_and(|g| g.is_complete())
        })
        .count();
    (complete, ids.len() - complete)
}

/// A process that never starts: process 0 aborts each checkpoint for the job after
/// `checkpoint.timeout_ms` (1 s here), the other processes roll back, and nothing is
/// committed; once the missing process starts (and process 0 is restarted with the
/// usual timeout), checkpoints complete and the output is exactly the no-crash output. Fails if a sink commits before every process's part of
/// a checkpoint is in the store.
#[test]
fn without_every_process_nothing_commits_and_the_late_process_completes_the_job() {
    use std::time::{Duration, Instant};
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let k = Kafka::start();
    k.create_topic("in", IN_PARTITIONS as u32);
    k.create_topic("out", OUT_PARTITIONS as u32);
    let s3 = rill_testkit::S3::start();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    // Process 0 (the one that aborts checkpoints missing a part) with a short timeout.
    let short = [("RILL_PROC_TIMEOUT_MS", "1000")];
    let n = 2 * BATCH;
    produce_input(&k.addr, 0, BATCH);
    let mut children = vec![
        spawn_child(root, 0, 0, &k, &s3, &short),
        spawn_child(root, 1, 0, &k, &s3, &[]),
    ];
    let job = s3.remote("job").unwrap();
    let since = Instant::now();
    while global_decisions(&job).1 < 3 {
        assert!(
            since.elapsed() < rill_testkit::crash::STUCK,
            "process 0 aborted no checkpoints; logs in {}",
            root.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        global_decisions(&job).0,
        0,
        "a checkpoint completed without process 2"
    );
    assert!(
        committed_values(&k, "out", OUT_PARTITIONS, false).is_empty(),
        "records committed without process 2"
    );
    // Then process 0 again with the usual timeout (a timeout shorter than a process
    // takes to restart and deliver its part aborts every checkpoint: on a loaded
    // machine 1 s was, once), and process 2 at last.
    children[0].kill().unwrap();
    children[0].wait().unwrap();
    children[0] = spawn_child(root, 0, 1, &k, &s3, &[]);
    children.push(spawn_child(root, 2, 0, &k, &s3, &[]));
    produce_input(&k.addr, BATCH, n);
    let mut progress = (0usize, Instant::now());
    loop {
        let distinct = committed_values(&k, "out", OUT_PARTITIONS, false).len();
        if distinct as u64 >= n {
            break;
        }
        if distinct != progress.0 {
            progress = (distinct, Instant::now());
        }
        assert!(
            progress.1.elapsed() < rill_testkit::crash::STUCK,
            "stuck at {distinct} of {n} records committed; logs in {}",
            root.display()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (before, since) = (global_decisions(&job).0, Instant::now());
    while global_decisions(&job).0 < before + 2 {
        assert!(
            since.elapsed() < rill_testkit::crash::STUCK,
            "no more checkpoints"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    for c in &mut children {
        c.kill().unwrap();
        c.wait().unwrap();
    }
    let rolled_back = (0..2)
        .filter(|i| {
            std::fs::read_to_string(root.join(format!("process-{i}-run-0.log")))
                .unwrap()
                .contains("did not complete for the whole job")
        })
        .count();
    assert_eq!(rolled_back, 2, "processes 0 and 1 rolled back");
    let got = committed_values(&k, "out", OUT_PARTITIONS, false);
    let want: BTreeMap<String, u32> = (0..n)
        .map(|i| (format!("{i}:{}", i / KEYS + 1), 1))
        .collect();
    assert_eq!(got.len(), want.len(), "distinct committed records");
    assert_eq!(got, want);
}

/// The job as 3 processes (one CPU each, two sharing a CPU on a 2-CPU machine),
/// checkpoints in SeaweedFS, Kafka in and out on Tansu: input is produced in batches
/// while a random process is SIGKILLed 12 times (and restarted, as a supervisor would);
/// once every record is committed, the committed output (rebuilt from the transaction
/// markers) must be exactly the no-crash output: record `i` once, with its key's count
/// `i / KEYS + 1` (a lost or repeated state update shifts every later count of the key).
///
/// The job's keyed state follows the Kafka partitioning (every record of a key is in
/// one Kafka partition, and the `key_by` is inside each process): a `key_by` across
/// processes (through a repartition topic) is not built yet. `RILL_CRASH_SEED` replays
/// a kill schedule; `RILL_PROC_KEEP=1` keeps the directory with every run's stderr.
#[test]
fn three_processes_killed_at_random_commit_exactly_the_no_crash_output() {
    use rand::{Rng, SeedableRng};
    use std::process::Child;
    use std::time::{Duration, Instant};
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let seed = rill_testkit::crash::seed();
    eprintln!("RILL_CRASH_SEED={seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let k = Kafka::start();
    k.create_topic("in", IN_PARTITIONS as u32);
    k.create_topic("out", OUT_PARTITIONS as u32);
    let s3 = rill_testkit::S3::start();
    let tmp = tempfile::tempdir().unwrap();
    let root = if std::env::var_os("RILL_PROC_KEEP").is_some() {
        let kept = tmp.keep();
        eprintln!("keeping {}", kept.display());
        kept
    } else {
        tmp.path().to_path_buf()
    };
    let mut runs = [0usize; PROCESSES as usize];
    let mut spawn = |i: usize| -> Child {
        runs[i] += 1;
        spawn_child(&root, i, runs[i] - 1, &k, &s3, &[])
    };
    let mut children: Vec<Child> = (0..PROCESSES as usize).map(&mut spawn).collect();
    let job = s3.remote("job").unwrap();
    let globals = || -> (usize, usize) {
        let ids = job.list_globals().unwrap();
        let complete = ids
            .iter()
            .filter(|id| {
                job.load_global(**id)
                    .unwrap()
                    .is_some_and(|g| g.is_complete())
            })
            .count();
        (complete, ids.len() - complete)
    };
    let mut produced = 0;
    let mut exits = 0;
    for kill in 0..KILLS {
        if produced < BATCHES {
            produce_input(&k.addr, produced * BATCH, (produced + 1) * BATCH);
            produced += 1;
        }
        // Wait for a global checkpoint or two, and a little more, so that kills land in
        // every phase (mid-checkpoint, waiting for the global manifest, mid-commit).
        let before = globals().0;
        let more = rng.gen_range(1..=2);
        let since = Instant::now();
        while globals().0 < before + more && since.elapsed() < Duration::from_secs(120) {
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(rng.gen_range(0..150)));
        for (i, c) in children.iter_mut().enumerate() {
            if let Some(status) = c.try_wait().unwrap() {
                eprintln!("process {i} exited on its own ({status}); restarting it");
                exits += 1;
                *c = spawn(i);
            }
        }
        let victim = rng.gen_range(0..PROCESSES as usize);
        children[victim].kill().unwrap(); // SIGKILL
        children[victim].wait().unwrap();
        eprintln!("kill {kill}: process {victim}");
        children[victim] = spawn(victim);
    }
    while produced < BATCHES {
        produce_input(&k.addr, produced * BATCH, (produced + 1) * BATCH);
        produced += 1;
    }
    let n = produced * BATCH;
    // Every record committed (progress-based: stuck only when nothing new commits for
    // the harness's STUCK), then two more global checkpoints for anything in flight.
    let mut progress = (0usize, Instant::now());
    loop {
        let distinct = committed_values(&k, "out", OUT_PARTITIONS, false).len();
        if distinct as u64 >= n {
            break;
        }
        if distinct != progress.0 {
            progress = (distinct, Instant::now());
        }
        assert!(
            progress.1.elapsed() < rill_testkit::crash::STUCK,
            "stuck at {distinct} of {n} records committed (seed {seed}); logs in {}",
            root.display()
        );
        for (i, c) in children.iter_mut().enumerate() {
            if let Some(status) = c.try_wait().unwrap() {
                eprintln!("process {i} exited on its own ({status}); restarting it");
                exits += 1;
                *c = spawn(i);
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let (before, since) = (globals().0, Instant::now());
    while globals().0 < before + 2 {
        assert!(
            since.elapsed() < rill_testkit::crash::STUCK,
            "no global checkpoint completes (seed {seed}); logs in {}",
            root.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    for c in &mut children {
        c.kill().unwrap();
        c.wait().unwrap();
    }
    let (complete, aborted) = globals();
    eprintln!(
        "{KILLS} kills, {exits} exits on their own; global checkpoints: {complete} complete, \
         {aborted} aborted; runs per process {runs:?}"
    );
    // The processes killed last leave their open transactions open: only committed
    // records count (what a read_committed consumer sees).
    let got = committed_values(&k, "out", OUT_PARTITIONS, false);
    let want: BTreeMap<String, u32> = (0..n)
        .map(|i| (format!("{i}:{}", i / KEYS + 1), 1))
        .collect();
    let lost: Vec<&String> = want
        .keys()
        .filter(|v| !got.contains_key(*v))
        .take(5)
        .collect();
    let dup: Vec<(&String, &u32)> = got.iter().filter(|(_, c)| **c > 1).take(5).collect();
    let extra: Vec<&String> = got
        .keys()
        .filter(|v| !want.contains_key(*v))
        .take(5)
        .collect();
    assert!(
        lost.is_empty() && dup.is_empty() && extra.is_empty(),
        "seed {seed}: lost (first) {lost:?}, duplicated {dup:?}, unexpected {extra:?}; \
         {} committed of {n}; logs in {}",
        got.values().sum::<u32>(),
        root.display()
    );
}
