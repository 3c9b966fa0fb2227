//! The Kafka scenario (`rill-bench kafka`): Kafka -> rill -> Kafka, open loop, with the
//! latency measured where a user sees it, at a consumer of the output topic.
//!
//! Owns: one run of a *mode* on a fresh Tansu broker (started by `rill_testkit::Kafka`
//! on a free loopback port): a producer thread writes to the input topic at a fixed rate,
//! each record stamped with its due time (`start + seq / rate`; a producer that falls
//! behind sends late but keeps the stamp, so a stall shows as latency, not as a lower
//! rate); the system under test moves the records to the output topic; one consumer
//! thread per output partition tails it raw and records due-time-to-visible latency.
//! Modes: the rill job (`source -> key_by -> per-key count in keyed state -> sink`) with
//! the sink exactly-once (Kafka transactions committed per checkpoint) or at-least-once,
//! and the floor: a plain consume-produce loop with the same client (rdkafka), broker,
//! producer and consumer, no rill. Also a probe of the broker's `commit_transaction`.
//!
//! Visibility: a record is visible when a `read_committed` consumer could read it. Tansu
//! does not hide uncommitted transactional records, so the consumer reads raw and holds
//! each producer session's records until its commit marker (`kafka_log::Markers`), as
//! `read_committed` would; non-transactional records are visible when fetched.
//!
//! Must not: change how the engine or the connector run (the job uses only their public
//! API), or read the broker's clock: every time is this process's monotonic clock.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rill_engine::checkpoint::restore::StartFrom as Restore;
use rill_engine::config::{CoreConfig, JobConfig, JobSpec};
use rill_engine::dataflow::{Out, Pipeline};
use rill_engine::runtime::{supervise, Control};
use rill_kafka::{Delivery, KafkaRecord, KafkaSink, KafkaSource, StartFrom};
use rill_testkit::kafka_log::{read_raw, rebuild, Markers, RawReader};
use rill_testkit::Kafka;
use serde::Serialize;

use crate::machine::{process_cpu_s, thread_cpu_s};
use crate::stats::{merge, new_histogram, LatencySummary};

const IN: &str = "bench-in";
const OUT: &str = "bench-out";

/// What moves the records from the input topic to the output topic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// The rill job, sink exactly-once.
    ExactlyOnce,
    /// The rill job, sink at-least-once.
    AtLeastOnce,
    /// A plain rdkafka consume-produce loop (no rill).
    Floor,
}

impl Mode {
    /// Parses `exactly-once`, `at-least-once` or `floor`.
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "exactly-once" => Mode::ExactlyOnce,
            "at-least-once" => Mode::AtLeastOnce,
            "floor" => Mode::Floor,
            _ => bail!("unknown mode `{s}`: exactly-once, at-least-once or floor"),
        })
    }

    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            Mode::ExactlyOnce => "exactly-once",
            Mode::AtLeastOnce => "at-least-once",
            Mode::Floor => "floor",
        }
    }
}

/// One run's parameters.
#[derive(Clone, Debug, Serialize)]
pub struct Load {
    /// Offered rate, records per second.
    pub rate: u64,
    /// Measured seconds (after the warm-up).
    pub duration_s: f64,
    /// Warm-up seconds: records due in it are processed, not measured.
    pub warmup_s: f64,
    /// The job's checkpoint interval (ms).
    pub checkpoint_ms: u64,
    /// The job's CPUs (one executor each).
    pub cpus: Vec<usize>,
    /// Partitions of the input topic (the source's parallelism).
    pub in_partitions: u32,
    /// Partitions of the output topic.
    pub out_partitions: u32,
    /// Bytes per record value.
    pub value_bytes: usize,
    /// Distinct keys (the job counts per key).
    pub keys: u64,
    /// How long the measuring consumer's fetch waits at the broker for data (ms).
    pub fetch_wait_ms: u64,
    /// librdkafka's `fetch.wait.max.ms` for the consumers under test (the rill source
    /// and the floor's), when set; librdkafka's default (500 ms) otherwise.
    pub client_fetch_wait_ms: Option<u64>,
}

/// One run's results.
#[derive(Clone, Debug, Serialize)]
pub struct KafkaRun {
    /// The mode.
    pub mode: Mode,
    /// The load.
    pub load: Load,
    /// Records the producer sent (warm-up included).
    pub sent: u64,
    /// Measured records (due after the warm-up) the schedule had.
    pub expected: u64,
    /// Measured records seen at least once.
    pub seen: u64,
    /// Measured records seen more than once (extra copies).
    pub duplicates: u64,
    /// Measured records seen per second of the measured window.
    pub throughput_eps: f64,
    /// When the last measured record became visible, after the schedule ended (ms).
    pub end_lag_ms: f64,
    /// Whether it kept up (see [`kept_up`]).
    pub kept_up: bool,
    /// Due-time-to-visible latency of the measured records.
    pub latency: LatencySummary,
    /// CPU seconds of the job's executors (rill modes) or of the loop thread (floor).
    pub worker_cpu_s: f64,
    /// CPU seconds of this whole process during the run (producer, consumers, job,
    /// librdkafka threads).
    pub process_cpu_s: f64,
    /// CPU seconds of the broker process during the run.
    pub broker_cpu_s: f64,
    /// Checkpoints completed (rill modes).
    pub checkpoints: usize,
    /// Wall time of the run (s).
    pub wall_s: f64,
}

/// A run kept up when every measured record became visible and the last one within
/// `slack` of the schedule's end: with exactly-once, `slack` is two checkpoint
/// intervals plus a second (a record waits up to an interval for its barrier, then for
/// the checkpoint and the broker's commit); otherwise a second. A system slower than
/// the offered rate falls further behind every second of the run, so its end lag grows
/// with the duration and passes any fixed slack on a long enough run.
pub fn kept_up(expected: u64, seen: u64, end_lag: Duration, slack: Duration) -> bool {
    seen == expected && end_lag <= slack
}

/// The slack of [`kept_up`] for `mode`.
pub fn slack(mode: Mode, checkpoint_ms: u64) -> Duration {
    match mode {
        Mode::ExactlyOnce => Duration::from_millis(2 * checkpoint_ms + 1000),
        Mode::AtLeastOnce | Mode::Floor => Duration::from_secs(1),
    }
}

/// A record's value: `seq,due_ns,` padded with `x` to `bytes`.
pub fn encode(seq: u64, due_ns: u64, bytes: usize) -> Vec<u8> {
    let mut v = format!("{seq},{due_ns},").into_bytes();
    if v.len() < bytes {
        v.resize(bytes, b'x');
    }
    v
}

/// `(seq, due_ns)` of a value [`encode`] made.
pub fn decode(v: &[u8]) -> Option<(u64, u64)> {
    let mut it = v.split(|b| *b == b',');
    let seq = std::str::from_utf8(it.next()?).ok()?.parse().ok()?;
    let due = std::str::from_utf8(it.next()?).ok()?.parse().ok()?;
    Some((seq, due))
}

/// One record through the job: its key and the value to forward.
#[rill_engine::record]
#[derive(Clone, Debug)]
pub struct Event {
    /// The key (from the input record's key).
    pub key: u64,
    /// The input value, forwarded as it is.
    pub value: Vec<u8>,
}

fn job_spec(dir: &std::path::Path, load: &Load) -> Result<JobSpec> {
    let job: JobConfig = toml::from_str(&format!(
        "[checkpoint]\ninterval_ms = {}\n",
        load.checkpoint_ms
    ))?;
    Ok(JobSpec::with_cores(
        dir,
        job,
        &load.cpus,
        CoreConfig::default(),
    ))
}

/// The job: Kafka source (one partition per input partition) -> key_by(key) -> a count
/// per key in keyed state -> Kafka sink with `delivery`.
fn build(
    addr: &str,
    load: &Load,
    delivery: Delivery,
    spec: &JobSpec,
) -> rill_engine::Result<rill_engine::dataflow::JobGraph> {
    let p = Pipeline::new(spec.job.max_key_groups);
    let mut source = KafkaSource::new(addr, &[IN]).start_from(StartFrom::Earliest);
    if let Some(w) = load.client_fetch_wait_ms {
        source = source.set("fetch.wait.max.ms", &w.to_string());
    }
    p.source("kafka-in", source)
        .parallelism(load.in_partitions)
        .map("decode", |r: KafkaRecord| Event {
            key: r
                .key
                .as_deref()
                .and_then(|k| std::str::from_utf8(k).ok())
                .and_then(|k| k.parse().ok())
                .unwrap_or(0),
            value: r.value,
        })
        .key_by("by-key", |e: &Event| e.key)
        .process("count", |init| {
            let count = init.value::<u64>("count");
            move |ctx, e: Event, out: &mut Out<'_, Event>| {
                count.update(
                    ctx,
                    || 0,
                    |c| {
                        *c += 1;
                        *c
                    },
                );
                out.emit(e);
            }
        })
        .sink(
            "kafka-out",
            KafkaSink::new(addr, OUT, delivery, |e: &Event| {
                (Some(e.key.to_string().into_bytes()), e.value.clone())
            })
            .transactional_id_prefix("rill-bench"),
        );
    p.build(spec.default_parallelism())
}

/// The floor: a consumer assigned every input partition and a producer, one thread,
/// consume -> produce, with the connector's client settings (read_committed, linger 1 ms,
/// idempotence).
fn floor_loop(addr: String, load: Load, stop: Arc<AtomicBool>) -> Result<f64> {
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", &addr)
        .set("group.id", "rill-bench-floor")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed");
    if let Some(w) = load.client_fetch_wait_ms {
        cc.set("fetch.wait.max.ms", w.to_string());
    }
    let consumer: BaseConsumer = cc.create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..load.in_partitions as i32 {
        tpl.add_partition_offset(IN, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &addr)
        .set("linger.ms", "1")
        .set("enable.idempotence", "true")
        .create()?;
    while !stop.load(Ordering::Relaxed) {
        match consumer.poll(Duration::from_millis(1)) {
            Some(Ok(m)) => {
                let mut rec = BaseRecord::to(OUT).payload(m.payload().unwrap_or_default());
                if let Some(k) = m.key() {
                    rec = rec.key(k);
                }
                while let Err((e, back)) = producer.send(rec) {
                    if stop.load(Ordering::Relaxed) {
                        bail!("floor: send failed at stop: {e}");
                    }
                    rec = back;
                    producer.poll(Duration::from_millis(1));
                }
            }
            Some(Err(e)) => bail!("floor: consume: {e}"),
            None => {}
        }
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(10))?;
    Ok(crate::machine::this_thread_cpu_s())
}

/// The producer: `rate` records per second for `total` records, each stamped with its
/// due time (ns since `origin`). Returns how many it sent.
fn produce(addr: &str, load: &Load, origin: Instant, start: Instant, total: u64) -> Result<u64> {
    // librdkafka's default linger (5 ms): fewer, larger batches for the broker.
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", addr)
        .set("linger.ms", "5")
        .create()?;
    let period_ns = 1e9 / load.rate as f64;
    let start_ns = (start - origin).as_nanos() as u64;
    let mut seq = 0u64;
    while seq < total {
        let now = origin.elapsed().as_nanos() as u64;
        // Everything due by now goes out now, stamped with when it was due.
        while seq < total {
            let due = start_ns + (seq as f64 * period_ns) as u64;
            if due > now {
                break;
            }
            let key = (seq % load.keys).to_string();
            let value = encode(seq, due, load.value_bytes);
            let mut rec = BaseRecord::to(IN).key(key.as_bytes()).payload(&value);
            while let Err((e, back)) = producer.send(rec) {
                if !matches!(
                    e,
                    rdkafka::error::KafkaError::MessageProduction(
                        rdkafka::types::RDKafkaErrorCode::QueueFull
                    )
                ) {
                    bail!("producer: {e}");
                }
                rec = back;
                producer.poll(Duration::from_millis(1));
            }
            seq += 1;
        }
        producer.poll(Duration::ZERO);
        if seq < total {
            let next = start_ns + (seq as f64 * period_ns) as u64;
            let now = origin.elapsed().as_nanos() as u64;
            if next > now {
                std::thread::sleep(Duration::from_nanos((next - now).min(1_000_000)));
            }
        }
    }
    producer.flush(Duration::from_secs(30))?;
    Ok(seq)
}

/// What one consumer thread saw.
struct Seen {
    hist: Histogram<u64>,
    /// Sequence numbers of the measured records it saw, in order.
    seqs: Vec<u64>,
    /// When (ns since origin) the last measured record became visible.
    last_ns: u64,
}

/// Tails output partition `partition` raw until `stop`; a record is visible at its
/// commit marker (transactional) or when fetched (otherwise).
fn consume(
    addr: String,
    partition: i32,
    origin: Instant,
    measure_from_ns: u64,
    fetch_wait: Duration,
    stop: Arc<AtomicBool>,
    visible: Arc<AtomicU64>,
) -> Seen {
    let mut r = RawReader::connect(&addr, OUT, partition);
    let mut m = Markers::default();
    let mut seen = Seen {
        hist: new_histogram(),
        seqs: Vec::new(),
        last_ns: 0,
    };
    while !stop.load(Ordering::Relaxed) {
        let min_bytes = i32::from(!fetch_wait.is_zero());
        let (_, batches) = r.fetch(fetch_wait, min_bytes);
        let now = origin.elapsed().as_nanos() as u64;
        for b in &batches {
            for v in m.push(b).committed {
                let Some((seq, due)) = decode(&v) else {
                    continue;
                };
                if due < measure_from_ns {
                    continue;
                }
                seen.hist.saturating_record(now.saturating_sub(due).max(1));
                seen.seqs.push(seq);
                seen.last_ns = seen.last_ns.max(now);
                visible.fetch_add(1, Ordering::Relaxed);
            }
        }
        if batches.is_empty() && fetch_wait.is_zero() {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    seen
}

/// CPU seconds of process `pid` so far.
fn pid_cpu_s(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let t = |i: usize| f.get(i).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    #[allow(unsafe_code)]
    let tck = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    (t(11) + t(12)) as f64 / tck
}

/// Runs `mode` once under `load` on a fresh broker.
pub fn run(mode: Mode, load: &Load, quiet: bool) -> Result<KafkaRun> {
    let k = Kafka::start();
    k.create_topic(IN, load.in_partitions);
    k.create_topic(OUT, load.out_partitions);
    let broker_cpu0 = pid_cpu_s(k.pid());
    let cpu0 = process_cpu_s();
    let t0 = Instant::now();
    let origin = Instant::now();
    let dir = tempfile::tempdir()?;

    // The system under test.
    let control = Control::default();
    let stop_floor = Arc::new(AtomicBool::new(false));
    let report = Arc::new(Mutex::new(None));
    let worker: JoinHandle<Result<f64>> = match mode {
        Mode::ExactlyOnce | Mode::AtLeastOnce => {
            let delivery = if mode == Mode::ExactlyOnce {
                Delivery::ExactlyOnce
            } else {
                Delivery::AtLeastOnce
            };
            let spec = job_spec(dir.path(), load)?;
            let (addr, load2, control, report) = (
                k.addr.clone(),
                load.clone(),
                control.clone(),
                report.clone(),
            );
            std::thread::spawn(move || {
                let b = move |spec: &JobSpec| build(&addr, &load2, delivery, spec);
                let r = supervise(&spec, &b, Restore::Fresh, &control, |_| {})?;
                *report.lock().unwrap() = Some(r.checkpoints.len());
                Ok(0.0)
            })
        }
        Mode::Floor => {
            let (addr, load2, stop) = (k.addr.clone(), load.clone(), stop_floor.clone());
            std::thread::spawn(move || floor_loop(addr, load2, stop))
        }
    };

    // The consumers of the output topic.
    let warm = Duration::from_secs_f64(load.warmup_s);
    let measured = Duration::from_secs_f64(load.duration_s);
    // The schedule starts after a second of set-up (the job opens its clients).
    let start = Instant::now() + Duration::from_secs(1);
    let measure_from_ns = (start + warm - origin).as_nanos() as u64;
    let stop_consumers = Arc::new(AtomicBool::new(false));
    let visible = Arc::new(AtomicU64::new(0));
    let consumers: Vec<JoinHandle<Seen>> = (0..load.out_partitions as i32)
        .map(|p| {
            let (addr, stop, vis) = (k.addr.clone(), stop_consumers.clone(), visible.clone());
            let wait = Duration::from_millis(load.fetch_wait_ms);
            std::thread::spawn(move || consume(addr, p, origin, measure_from_ns, wait, stop, vis))
        })
        .collect();

    // The producer, on this thread.
    let total = ((load.warmup_s + load.duration_s) * load.rate as f64).round() as u64;
    let warm_n = (load.warmup_s * load.rate as f64).ceil() as u64;
    let expected = total - warm_n.min(total);
    let sent = produce(&k.addr, load, origin, start, total).context("the producer")?;
    let schedule_end = start + warm + measured;
    // Drain: until every measured record is visible, or the slack and 10 s more passed.
    let give_up = schedule_end + slack(mode, load.checkpoint_ms) + Duration::from_secs(10);
    while visible.load(Ordering::Relaxed) < expected && Instant::now() < give_up {
        if !quiet {
            eprint!(
                "\rrill-bench kafka: {} at {}/s: {} of {} measured records visible   ",
                mode.name(),
                load.rate,
                visible.load(Ordering::Relaxed),
                expected
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if !quiet {
        eprintln!();
    }
    let worker_cpu: f64 = thread_cpu_s("rill-cpu").iter().map(|t| t.2).sum();
    let broker_cpu = pid_cpu_s(k.pid()) - broker_cpu0;
    control.stop();
    stop_floor.store(true, Ordering::Relaxed);
    let w = worker.join().expect("the worker thread");
    let worker_cpu = match (mode, w) {
        (Mode::Floor, Ok(c)) => c,
        (_, Ok(_)) => worker_cpu,
        (_, Err(e)) => return Err(e.context(format!("{} worker", mode.name()))),
    };
    // A last look for copies made at the stop (a final checkpoint's commit).
    std::thread::sleep(Duration::from_millis(200));
    stop_consumers.store(true, Ordering::Relaxed);
    let seen: Vec<Seen> = consumers
        .into_iter()
        .map(|c| c.join().expect("a consumer thread"))
        .collect();
    let hist = merge(seen.iter().map(|s| &s.hist));
    let mut seqs: Vec<u64> = seen.iter().flat_map(|s| s.seqs.iter().copied()).collect();
    seqs.sort_unstable();
    let all = seqs.len() as u64;
    seqs.dedup();
    let distinct = seqs.len() as u64;
    let warm_first = (load.warmup_s * load.rate as f64).ceil() as u64;
    let missing: Vec<u64> = (warm_first..warm_first + expected)
        .filter(|s| seqs.binary_search(s).is_err())
        .take(10)
        .collect();
    if !missing.is_empty() {
        eprintln!(
            "rill-bench kafka: {} at {}/s: {} measured records never became visible, the first: {missing:?} (of {}..{})",
            mode.name(),
            load.rate,
            expected - distinct,
            warm_first,
            warm_first + expected
        );
        // Lost, or missed by the tailing consumers? The whole output topic read again
        // from offset 0, committed values rebuilt from the markers, tells.
        let mut again: Vec<u64> = (0..load.out_partitions as i32)
            .flat_map(|p| rebuild(&read_raw(&k.addr, OUT, p)).committed)
            .filter_map(|v| decode(&v).map(|(seq, _)| seq))
            .collect();
        again.sort_unstable();
        again.dedup();
        let lost = (warm_first..warm_first + expected)
            .filter(|s| again.binary_search(s).is_err())
            .count();
        eprintln!(
            "rill-bench kafka: the output topic read again from the start: {lost} of the {} \
             missing records are not in it{}",
            expected - distinct,
            if lost == 0 {
                " (the tailing consumers missed them; nothing was lost)"
            } else {
                " (LOST)"
            }
        );
    }
    let last_ns = seen.iter().map(|s| s.last_ns).max().unwrap_or(0);
    let end_ns = (schedule_end - origin).as_nanos() as u64;
    let end_lag = Duration::from_nanos(last_ns.saturating_sub(end_ns));
    let window_s = ((last_ns.max(end_ns) - measure_from_ns) as f64 / 1e9).max(1e-9);
    let checkpoints = report.lock().unwrap().unwrap_or(0);
    Ok(KafkaRun {
        mode,
        load: load.clone(),
        sent,
        expected,
        seen: distinct,
        duplicates: all - distinct,
        throughput_eps: distinct as f64 / window_s,
        end_lag_ms: end_lag.as_secs_f64() * 1e3,
        kept_up: kept_up(expected, distinct, end_lag, slack(mode, load.checkpoint_ms)),
        latency: LatencySummary::of(&hist),
        worker_cpu_s: worker_cpu,
        process_cpu_s: process_cpu_s() - cpu0,
        broker_cpu_s: broker_cpu,
        checkpoints,
        wall_s: t0.elapsed().as_secs_f64(),
    })
}

/// The broker's `commit_transaction`, timed: `n` transactions of `records` records each
/// on a fresh broker, by a transactional rdkafka producer. Returns each commit's time.
pub fn commit_probe(n: usize, records: usize) -> Result<Vec<Duration>> {
    let k = Kafka::start();
    k.create_topic(OUT, 1);
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &k.addr)
        .set("linger.ms", "1")
        .set("transactional.id", "rill-bench-probe")
        .create()?;
    let t = Duration::from_secs(30);
    p.init_transactions(t)?;
    let mut times = Vec::with_capacity(n);
    for i in 0..n {
        p.begin_transaction()?;
        for j in 0..records {
            let v = format!("{i},{j}");
            let mut rec = BaseRecord::<[u8], [u8]>::to(OUT).payload(v.as_bytes());
            while let Err((_, back)) = p.send(rec) {
                rec = back;
                p.poll(Duration::from_millis(1));
            }
        }
        p.flush(t)?;
        let at = Instant::now();
        p.commit_transaction(t)?;
        times.push(at.elapsed());
    }
    Ok(times)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_carry_seq_and_due_and_the_verdict_needs_every_record_in_time() {
        let v = encode(42, 1_234_567, 64);
        assert_eq!(v.len(), 64);
        assert_eq!(decode(&v), Some((42, 1_234_567)));
        assert_eq!(decode(&encode(7, 9, 0)), Some((7, 9)));
        assert_eq!(decode(b"nope"), None);
        let s = slack(Mode::ExactlyOnce, 1000);
        assert_eq!(s, Duration::from_secs(3));
        assert!(kept_up(10, 10, Duration::from_secs(2), s));
        assert!(!kept_up(10, 9, Duration::ZERO, s));
        assert!(!kept_up(
            10,
            10,
            Duration::from_secs(2),
            slack(Mode::Floor, 1000)
        ));
    }
}
