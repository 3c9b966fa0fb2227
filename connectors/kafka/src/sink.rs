//! The Kafka sink: one transactional (or plain) producer per sink partition.
//!
//! Owns: producing records with a user serialiser, the delivery modes, and the
//! transaction of each sink partition tied to the job's checkpoints.
//!
//! Exactly-once (`Delivery::ExactlyOnce`, with checkpoints): partition `p` of sink
//! operator `op` produces with `transactional.id = {prefix}-{op}-{p}` (with
//! `-process-{i}-of-{N}` appended in a job of several processes), stable across
//! restarts, so that a restarted partition's `init_transactions` fences the zombie of the
//! previous run and aborts the transaction it left open. Records between two barriers
//! go into one transaction; at barrier `n` the partition waits until every one was
//! acknowledged (pre-commit); when checkpoint `n` completes it commits the transaction
//! and begins the next. Records after barrier `n` wait (backpressure, `poll_ready` is
//! `Pending`) until that commit: librdkafka has one open transaction per producer.
//!
//! Must not: block the core. Sends only enqueue (librdkafka's threads deliver); a
//! delivery report wakes the partition; `init_transactions` and `commit_transaction`
//! (which block by design) run on a helper thread.
//!
//! Resume after a crash: librdkafka cannot resume another session's transaction
//! (Flink does it by reflection on the Java client), and a restarted partition's
//! `init_transactions` aborts what the dead one left open, including a transaction whose
//! checkpoint completed but whose commit had not returned. So at pre-commit the partition
//! also writes the transaction's records to a file in the job directory (synced by the
//! core with the checkpoint), and each transaction carries a marker that commits
//! atomically with it: the offset of partition 0 of the output topic, in the consumer
//! group named like the `transactional.id`, set to the checkpoint id
//! (`send_offsets_to_transaction`). On restore, a partition whose file holds checkpoint
//! `w <= restored` while the group's marker is below `w` produces the file again in a
//! new transaction with the marker `w`: committed exactly once either way.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerGroupMetadata};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::ClientContext;
use rill_engine::dataflow::{AsyncSink, AsyncSinkPartition, IoCx, PartitionContext};
use rill_engine::ids::CheckpointId;

use crate::blocking::Blocking;
use crate::KafkaError;

/// The delivery guarantee of a [`KafkaSink`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Kafka transactions committed when a checkpoint completes (needs checkpoints; a
    /// job without them commits once, at the end of its input).
    ExactlyOnce,
    /// Every record before a barrier is acknowledged before the checkpoint counts; a
    /// restore may produce some again.
    AtLeastOnce,
    /// Fire and forget: failures are counted and logged, never waited for.
    None,
}

/// A record's key and value bytes.
pub type Serialized = (Option<Vec<u8>>, Vec<u8>);

type SerFn<T> = dyn Fn(&T) -> Serialized + Send + Sync;

/// Writes records to one Kafka topic (the broker's partitioner picks the partition from
/// the key).
pub struct KafkaSink<T> {
    brokers: String,
    topic: String,
    delivery: Delivery,
    ser: Arc<SerFn<T>>,
    txn_prefix: String,
    max_in_flight: usize,
    timeout: Duration,
    config: Vec<(String, String)>,
    /// The checkpoint the job restores (set by `recover_output`).
    restored: Arc<Mutex<Option<CheckpointId>>>,
}

/// A value serialised as JSON, without a key.
pub fn json_value<T: serde::Serialize>(rec: &T) -> Serialized {
    let value = serde_json::to_vec(rec).expect("serialising a record as JSON");
    (None, value)
}

impl<T> KafkaSink<T> {
    /// Writes to `topic` on `brokers`, serialised by `ser`, with `delivery`.
    pub fn new(
        brokers: &str,
        topic: &str,
        delivery: Delivery,
        ser: impl Fn(&T) -> Serialized + Send + Sync + 'static,
    ) -> Self {
        Self {
            brokers: brokers.to_string(),
            topic: topic.to_string(),
            delivery,
            ser: Arc::new(ser),
            txn_prefix: "rill".to_string(),
            max_in_flight: 50_000,
            timeout: Duration::from_secs(30),
            config: Vec::new(),
            restored: Arc::new(Mutex::new(None)),
        }
    }

    /// The prefix of the `transactional.id`s (`{prefix}-{operator}-{partition}`); two
    /// jobs writing with the same ids would fence each other.
    pub fn transactional_id_prefix(mut self, prefix: &str) -> Self {
        self.txn_prefix = prefix.to_string();
        self
    }

    /// Records sent and not yet acknowledged before `poll_ready` pushes back (below
    /// librdkafka's `queue.buffering.max.messages`).
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = n.max(1);
        self
    }

    /// Bound on a transaction's init and commit.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// A librdkafka producer property (after the sink's own; it may override them).
    pub fn set(mut self, key: &str, value: &str) -> Self {
        self.config.push((key.to_string(), value.to_string()));
        self
    }
}

/// Delivery reports, counted, and the waker of the partition waiting for them.
#[derive(Default)]
struct Reports {
    /// Delivery reports received (counted before the waker is woken: librdkafka's own
    /// in-flight count drops only after the callback returns, too late for the wake).
    acked: AtomicU64,
    /// Records a restarted partition produced again on its helper thread (`resume`),
    /// before the core sends any: their reports are counted in `acked` too.
    resent: AtomicU64,
    failed: AtomicU64,
    last_error: Mutex<Option<String>>,
    waker: Mutex<Option<Waker>>,
}

/// The producer's context: delivery reports go to the partition's [`Reports`].
struct Ctx(Arc<Reports>);

impl ClientContext for Ctx {}

impl ProducerContext for Ctx {
    type DeliveryOpaque = ();
    fn delivery(&self, r: &DeliveryResult<'_>, _: ()) {
        let reports = &self.0;
        reports.acked.fetch_add(1, Ordering::Release);
        if let Err((e, _)) = r {
            reports.failed.fetch_add(1, Ordering::Relaxed);
            *reports.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
        }
        let w = reports
            .waker
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(w) = w {
            w.wake();
        }
    }
}

type Prod = ThreadedProducer<Ctx>;

/// Where a partition's transaction is.
enum Txn {
    /// `init_transactions` (then `begin_transaction`) on the helper thread.
    Initialising(Blocking<Result<(), KafkaError>>),
    /// Records go into the open transaction.
    Open,
    /// Sealed at barrier `n`, waiting for checkpoint `n` to complete.
    Sealed(CheckpointId),
    /// `commit_transaction` (then `begin_transaction`) on the helper thread.
    Committing(CheckpointId, Blocking<Result<(), KafkaError>>),
    /// Not transactional.
    Plain,
}

/// The `transactional.id` of a sink partition: `{prefix}-{op}-{p}`, and for a job run as
/// several processes `{prefix}-{op}-{p}-process-{i}-of-{N}` (partition `p` of every
/// process writes, and each must fence only its own zombies).
fn txn_id(prefix: &str, ctx: &PartitionContext<'_>) -> String {
    let id = format!("{prefix}-{}-{}", ctx.operator, ctx.partition.0);
    if ctx.process.is_single() {
        id
    } else {
        format!("{id}-{}", ctx.process.prefix())
    }
}

impl<T: Send + Sync + 'static> AsyncSink<T> for KafkaSink<T> {
    fn recover_output(
        &self,
        ctx: &rill_engine::dataflow::RecoverContext<'_>,
    ) -> rill_engine::Result<()> {
        *self.restored.lock().unwrap_or_else(|p| p.into_inner()) = ctx.restored;
        Ok(())
    }

    fn open_partition(
        &self,
        ctx: &PartitionContext<'_>,
    ) -> rill_engine::Result<Box<dyn AsyncSinkPartition<T>>> {
        let mut cc = ClientConfig::new();
        cc.set("bootstrap.servers", &self.brokers)
            .set("linger.ms", "1");
        let txn = self.delivery == Delivery::ExactlyOnce;
        if txn {
            cc.set("transactional.id", txn_id(&self.txn_prefix, ctx))
                .set("transaction.timeout.ms", "60000");
        } else if self.delivery == Delivery::AtLeastOnce {
            cc.set("enable.idempotence", "true");
        }
        for (k, v) in &self.config {
            cc.set(k, v);
        }
        let reports = Arc::new(Reports::default());
        let producer: Prod = cc
            .create_with_context(Ctx(reports.clone()))
            .map_err(|e| KafkaError::Client {
                op: "create producer",
                source: e,
            })
            .map_err(|e| e.into_engine(ctx.operator, ctx.partition.0))?;
        let producer = Arc::new(producer);
        let txn_id = txn_id(&self.txn_prefix, ctx);
        let mut wal = ctx.job_dir.join(".rill-kafka");
        if !ctx.process.is_single() {
            wal.push(ctx.process.prefix());
        }
        let wal = wal.join(format!("{}-{}.wal", ctx.operator, ctx.partition.0));
        let mut marker = None;
        let state = if txn {
            let group: BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", &self.brokers)
                .set("group.id", &txn_id)
                .set("enable.auto.commit", "false")
                .create()
                .map_err(|e| KafkaError::Client {
                    op: "create marker consumer",
                    source: e,
                })
                .map_err(|e| e.into_engine(ctx.operator, ctx.partition.0))?;
            let m = Arc::new(Marker {
                cgm: group.group_metadata().ok_or_else(|| {
                    KafkaError::Config("no consumer group metadata".into())
                        .into_engine(ctx.operator, ctx.partition.0)
                })?,
                group,
                topic: self.topic.clone(),
            });
            marker = Some(m.clone());
            let restored = *self.restored.lock().unwrap_or_else(|p| p.into_inner());
            let (p, timeout, wal) = (producer.clone(), self.timeout, wal.clone());
            Txn::Initialising(Blocking::spawn("rill-kafka-txn", move || {
                p.init_transactions(timeout)
                    .map_err(KafkaError::client("init transactions"))?;
                resume(&p, &m, &wal, restored, timeout)?;
                p.begin_transaction()
                    .map_err(KafkaError::client("begin transaction"))
            }))
        } else {
            Txn::Plain
        };
        Ok(Box::new(KafkaSinkPartition {
            producer,
            reports,
            topic: self.topic.clone(),
            ser: self.ser.clone(),
            delivery: self.delivery,
            transactional: ctx.transactional,
            state,
            in_txn: 0,
            sent: 0,
            records: Vec::new(),
            wal,
            marker,
            max_in_flight: self.max_in_flight,
            timeout: self.timeout,
            operator: ctx.operator.to_string(),
            partition: ctx.partition.0,
        }))
    }
}

struct KafkaSinkPartition<T> {
    producer: Arc<Prod>,
    reports: Arc<Reports>,
    topic: String,
    ser: Arc<SerFn<T>>,
    delivery: Delivery,
    /// Whether the job checkpoints.
    transactional: bool,
    state: Txn,
    /// Records in the open transaction.
    in_txn: u64,
    /// Records sent (compared with `Reports::acked`).
    sent: u64,
    /// Exactly-once: the open transaction's records, for the file written at pre-commit.
    records: Vec<Serialized>,
    /// That file.
    wal: PathBuf,
    /// Exactly-once: the consumer group whose offset marks committed checkpoints.
    marker: Option<Arc<Marker>>,
    max_in_flight: usize,
    timeout: Duration,
    operator: String,
    partition: u32,
}

impl<T> KafkaSinkPartition<T> {
    fn err(&self, e: KafkaError) -> rill_engine::EngineError {
        e.into_engine(&self.operator, self.partition)
    }

    /// Failed deliveries, unless the mode ignores them.
    fn check_failures(&self) -> Result<(), KafkaError> {
        let failed = self.reports.failed.load(Ordering::Relaxed);
        if failed == 0 {
            return Ok(());
        }
        let last = self
            .reports
            .last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unwrap_or_default();
        if self.delivery == Delivery::None {
            tracing::warn!(
                "kafka sink {}: {failed} deliveries failed: {last}",
                self.operator
            );
            return Ok(());
        }
        Err(KafkaError::Delivery { failed, last })
    }

    /// `Ready` once fewer than `limit` records are unacknowledged; else leaves the waker
    /// with the delivery reports.
    fn poll_in_flight_below(&self, limit: usize, waker: &Waker) -> Poll<()> {
        let in_flight = || {
            // `resent` first: it only grows before the core sends anything, and each of
            // its increments precedes that record's report.
            let resent = self.reports.resent.load(Ordering::Acquire);
            (self.sent + resent) - self.reports.acked.load(Ordering::Acquire)
        };
        if in_flight() < limit as u64 {
            return Poll::Ready(());
        }
        *self.reports.waker.lock().unwrap_or_else(|p| p.into_inner()) = Some(waker.clone());
        // A report between the check and storing the waker: check again.
        if in_flight() < limit as u64 {
            return Poll::Ready(());
        }
        Poll::Pending
    }

    /// Drives a transaction step on the helper thread; `Ready(Ok)` when it is `Open`.
    fn poll_open(&mut self, waker: &Waker) -> Poll<Result<(), KafkaError>> {
        let r = match &self.state {
            Txn::Initialising(b) | Txn::Committing(_, b) => std::task::ready!(b.poll(waker)),
            _ => return Poll::Ready(Ok(())),
        };
        r?;
        self.state = Txn::Open;
        self.in_txn = 0;
        self.records.clear();
        Poll::Ready(Ok(()))
    }
}

impl<T> AsyncSinkPartition<T> for KafkaSinkPartition<T> {
    fn poll_ready(&mut self, cx: &mut IoCx<'_>) -> Poll<rill_engine::Result<()>> {
        if let Txn::Sealed(_) = self.state {
            // Waits for the commit of the sealed transaction (see the module doc).
            return Poll::Pending;
        }
        if let Err(e) = std::task::ready!(self.poll_open(cx.waker())) {
            return Poll::Ready(Err(self.err(e)));
        }
        if let Err(e) = self.check_failures() {
            return Poll::Ready(Err(self.err(e)));
        }
        std::task::ready!(self.poll_in_flight_below(self.max_in_flight, cx.waker()));
        Poll::Ready(Ok(()))
    }

    fn write(&mut self, rec: T) -> rill_engine::Result<()> {
        let (key, value) = (self.ser)(&rec);
        let mut r: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(&self.topic).payload(&value);
        if let Some(k) = &key {
            r = r.key(k.as_slice());
        }
        if let Err((e, _)) = self.producer.send(r) {
            return Err(self.err(KafkaError::Client {
                op: "send",
                source: e,
            }));
        }
        self.in_txn += 1;
        self.sent += 1;
        if self.marker.is_some() && self.transactional {
            self.records.push((key, value));
        }
        Ok(())
    }

    fn poll_pre_commit(
        &mut self,
        id: CheckpointId,
        cx: &mut IoCx<'_>,
    ) -> Poll<rill_engine::Result<Vec<std::fs::File>>> {
        match self.delivery {
            Delivery::None => return Poll::Ready(Ok(Vec::new())),
            Delivery::AtLeastOnce => {}
            Delivery::ExactlyOnce => {
                if let Txn::Sealed(s) = self.state {
                    // A later barrier before the commit of `s` (commits trail barriers):
                    // nothing was written since, so `s`'s transaction covers it too.
                    assert!(s <= id, "barriers arrive in order");
                    self.state = Txn::Sealed(id);
                    return Poll::Ready(Ok(Vec::new()));
                }
                if let Err(e) = std::task::ready!(self.poll_open(cx.waker())) {
                    return Poll::Ready(Err(self.err(e)));
                }
            }
        }
        // Pre-commit: every record before the barrier acknowledged.
        std::task::ready!(self.poll_in_flight_below(1, cx.waker()));
        if let Err(e) = self.check_failures() {
            return Poll::Ready(Err(self.err(e)));
        }
        if self.delivery == Delivery::ExactlyOnce {
            self.state = Txn::Sealed(id);
            let records = std::mem::take(&mut self.records);
            // Written here (page cache) and synced by the core with the checkpoint.
            return Poll::Ready(
                write_wal(&self.wal, id, &records)
                    .map(|f| vec![f])
                    .map_err(|e| rill_engine::EngineError::io("write", &self.wal, e)),
            );
        }
        Poll::Ready(Ok(Vec::new()))
    }

    fn poll_commit(
        &mut self,
        id: CheckpointId,
        cx: &mut IoCx<'_>,
    ) -> Poll<rill_engine::Result<()>> {
        if let Txn::Sealed(s) = self.state {
            if s <= id {
                let (p, timeout) = (self.producer.clone(), self.timeout);
                let m = self.marker.clone().expect("exactly-once has a marker");
                self.state = Txn::Committing(
                    s,
                    Blocking::spawn("rill-kafka-txn", move || {
                        m.mark(&p, s, timeout)?;
                        p.commit_transaction(timeout)
                            .map_err(KafkaError::client("commit transaction"))?;
                        p.begin_transaction()
                            .map_err(KafkaError::client("begin transaction"))
                    }),
                );
            }
        }
        match &self.state {
            Txn::Committing(s, _) if *s <= id => {}
            _ => return Poll::Ready(Ok(())),
        }
        match std::task::ready!(self.poll_open(cx.waker())) {
            Ok(()) => {
                // Records held back while sealed (poll_ready was Pending) may go now.
                cx.waker().wake_by_ref();
                Poll::Ready(Ok(()))
            }
            Err(e) => Poll::Ready(Err(self.err(e))),
        }
    }

    fn poll_finish(&mut self, cx: &mut IoCx<'_>) -> Poll<rill_engine::Result<()>> {
        if self.delivery == Delivery::ExactlyOnce {
            if self.transactional {
                // Everything was sealed at the final barrier and the checkpoint's commit
                // makes it visible; records after it would be lost: say so.
                if matches!(self.state, Txn::Open) && self.in_txn > 0 {
                    return Poll::Ready(Err(self.err(KafkaError::Config(format!(
                        "{} records arrived after the final checkpoint's barrier and no \
                         checkpoint commits them",
                        self.in_txn
                    )))));
                }
                return Poll::Ready(Ok(()));
            }
            // No checkpoints: the one transaction commits at the end of the input.
            if let Txn::Open = self.state {
                let (p, timeout) = (self.producer.clone(), self.timeout);
                self.state = Txn::Committing(
                    CheckpointId(0),
                    Blocking::spawn("rill-kafka-txn", move || {
                        p.commit_transaction(timeout)
                            .map_err(KafkaError::client("commit transaction"))
                    }),
                );
            }
            return match std::task::ready!(self.poll_open(cx.waker())) {
                Ok(()) => {
                    self.state = Txn::Plain;
                    Poll::Ready(Ok(()))
                }
                Err(e) => Poll::Ready(Err(self.err(e))),
            };
        }
        std::task::ready!(self.poll_in_flight_below(1, cx.waker()));
        match self.check_failures() {
            Ok(()) => Poll::Ready(Ok(())),
            Err(e) => Poll::Ready(Err(self.err(e))),
        }
    }
}

/// The consumer group whose committed offset (on partition 0 of the output topic) is the
/// last checkpoint whose transaction committed.
struct Marker {
    group: BaseConsumer,
    cgm: ConsumerGroupMetadata,
    topic: String,
}

impl Marker {
    /// Adds "checkpoint `id` committed" to the open transaction (blocks: helper thread).
    fn mark(&self, p: &Prod, id: CheckpointId, timeout: Duration) -> Result<(), KafkaError> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.topic, 0, Offset::Offset(id.0 as i64))
            .map_err(KafkaError::client("marker offsets"))?;
        p.send_offsets_to_transaction(&tpl, &self.cgm, timeout)
            .map_err(KafkaError::client("send offsets to transaction"))
    }

    /// The last checkpoint marked committed, if any (blocks: helper thread).
    fn committed(&self, timeout: Duration) -> Result<Option<u64>, KafkaError> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&self.topic, 0);
        let got = self
            .group
            .committed_offsets(tpl, timeout)
            .map_err(KafkaError::client("committed offsets"))?;
        Ok(match got.elements().first().map(|e| e.offset()) {
            Some(Offset::Offset(o)) if o >= 0 => Some(o as u64),
            _ => None,
        })
    }
}

/// On (re)start, after `init_transactions`: produces the file's transaction again when
/// its checkpoint completed (`<= restored`) and the marker says it did not commit.
fn resume(
    p: &Prod,
    m: &Marker,
    wal: &Path,
    restored: Option<CheckpointId>,
    timeout: Duration,
) -> Result<(), KafkaError> {
    let Some(restored) = restored else {
        return Ok(());
    };
    let (w, records) =
        match read_wal(wal).map_err(|e| KafkaError::Config(format!("{}: {e}", wal.display())))? {
            Wal::Complete(w, records) => (w, records),
            Wal::Missing => return Ok(()),
            Wal::Torn => {
                tracing::info!(
                    "kafka sink: {} was being written when the process died: its checkpoint \
                     did not complete, nothing to resume",
                    wal.display()
                );
                return Ok(());
            }
        };
    if w > restored || m.committed(timeout)?.is_some_and(|c| c >= w.0) {
        return Ok(());
    }
    tracing::info!(
        "kafka sink: checkpoint {} completed but its transaction did not commit;          producing its {} records again",
        w.0,
        records.len()
    );
    p.begin_transaction()
        .map_err(KafkaError::client("begin transaction"))?;
    for (k, v) in &records {
        let mut r: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(&m.topic).payload(v.as_slice());
        if let Some(k) = k {
            r = r.key(k.as_slice());
        }
        let mut r = r;
        // Counted before it can be acknowledged (see `Reports::resent`).
        p.context().0.resent.fetch_add(1, Ordering::Release);
        loop {
            match p.send(r) {
                Ok(()) => break,
                Err((e, back)) => {
                    if !matches!(
                        e,
                        rdkafka::error::KafkaError::MessageProduction(
                            rdkafka::types::RDKafkaErrorCode::QueueFull
                        )
                    ) {
                        return Err(KafkaError::Client {
                            op: "send",
                            source: e,
                        });
                    }
                    r = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }
    m.mark(p, w, timeout)?;
    p.commit_transaction(timeout)
        .map_err(KafkaError::client("commit transaction"))
}

/// The last bytes of a complete sink log.
const WAL_END: &[u8; 8] = b"RILLKEND";

/// Writes checkpoint `id`'s records: `id` (u64 LE), then per record a key flag, lengths
/// (u32 LE) and bytes, then the record count (u64 LE) and [`WAL_END`]. A process killed
/// while writing leaves a file without that trailer: [`read_wal`] reports it as torn.
fn write_wal(
    path: &Path,
    id: CheckpointId,
    records: &[Serialized],
) -> std::io::Result<std::fs::File> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d)?;
    }
    let mut buf = Vec::with_capacity(
        24 + records
            .iter()
            .map(|(k, v)| 9 + v.len() + k.as_ref().map_or(0, Vec::len))
            .sum::<usize>(),
    );
    buf.extend_from_slice(&id.0.to_le_bytes());
    for (k, v) in records {
        match k {
            Some(k) => {
                buf.push(1);
                buf.extend_from_slice(&(k.len() as u32).to_le_bytes());
                buf.extend_from_slice(k);
            }
            None => buf.push(0),
        }
        buf.extend_from_slice(&(v.len() as u32).to_le_bytes());
        buf.extend_from_slice(v);
    }
    buf.extend_from_slice(&(records.len() as u64).to_le_bytes());
    buf.extend_from_slice(WAL_END);
    let mut f = std::fs::File::create(path)?;
    f.write_all(&buf)?;
    Ok(f)
}

/// What a sink log holds.
#[derive(Debug, PartialEq, Eq)]
enum Wal {
    /// No file: nothing was pre-committed yet.
    Missing,
    /// The process died while writing it (no trailer). Its checkpoint cannot have
    /// completed: the core syncs the file, after it was written, before the checkpoint
    /// counts; so there is nothing to resume.
    Torn,
    /// Checkpoint `id`'s records.
    Complete(CheckpointId, Vec<Serialized>),
}

/// What `write_wal` wrote, if the file exists and is complete.
fn read_wal(path: &Path) -> std::io::Result<Wal> {
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Wal::Missing),
        Err(e) => return Err(e),
    };
    let mut b = Vec::new();
    f.read_to_end(&mut b)?;
    let Some(body) = b.strip_suffix(WAL_END).filter(|body| body.len() >= 16) else {
        return Ok(Wal::Torn);
    };
    let (body, count) = body.split_at(body.len() - 8);
    let count = u64::from_le_bytes(count.try_into().expect("8 bytes"));
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "corrupt kafka sink log");
    let mut at = 0usize;
    let mut take = |n: usize| -> std::io::Result<&[u8]> {
        let s = body.get(at..at + n).ok_or_else(bad)?;
        at += n;
        Ok(s)
    };
    let id = CheckpointId(u64::from_le_bytes(take(8)?.try_into().expect("8 bytes")));
    let mut records = Vec::new();
    while let Ok(flag) = take(1) {
        let flag = flag[0];
        let key = if flag == 1 {
            let n = u32::from_le_bytes(take(4)?.try_into().expect("4 bytes")) as usize;
            Some(take(n)?.to_vec())
        } else {
            None
        };
        let n = u32::from_le_bytes(take(4)?.try_into().expect("4 bytes")) as usize;
        records.push((key, take(n)?.to_vec()));
    }
    if records.len() as u64 != count {
        return Err(bad());
    }
    Ok(Wal::Complete(id, records))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sink_log_round_trips() {
        let dir = std::env::temp_dir().join(format!("rill-kafka-wal-{}", std::process::id()));
        let path = dir.join("x.wal");
        let recs = vec![(Some(b"k".to_vec()), b"v1".to_vec()), (None, Vec::new())];
        write_wal(&path, CheckpointId(7), &recs).unwrap();
        assert_eq!(
            read_wal(&path).unwrap(),
            Wal::Complete(CheckpointId(7), recs.clone())
        );
        // Killed while writing: every prefix, even one ending on a record boundary (or
        // empty: killed between create and write), is torn, never a shorter log.
        let full = std::fs::read(&path).unwrap();
        for n in 0..full.len() {
            std::fs::write(&path, &full[..n]).unwrap();
            assert_eq!(read_wal(&path).unwrap(), Wal::Torn, "prefix of {n} bytes");
        }
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(read_wal(&path).unwrap(), Wal::Missing);
    }
}
