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
//! core with the checkpoint), with the partition and offset the broker gave one of them
//! (its *anchor*, from the delivery reports). On restore, a partition whose file holds
//! checkpoint `w <= restored` reads the anchor's partition raw from the anchor on
//! (`txnlog`): the batch there names the producer session that wrote the transaction,
//! and that session's next transaction marker says how it ended. Committed: nothing to
//! do. Aborted or no marker (the new session's `init_transactions` fenced it): the file
//! is produced again in a new transaction, whose own anchor replaces the old one in the
//! file (renamed into place, synced) before it commits, so a crash during the resume is
//! resumed the same way. Committed exactly once either way.
//!
//! Not a consumer-group offset committed inside the transaction
//! (`send_offsets_to_transaction`) as the witness, which this sink used before: Tansu
//! holds such offsets back while another transactional producer (the sink's other
//! partitions) has an open transaction on the same topic partitions, and drops them
//! when that producer's next transaction aborts; the resume then took a committed
//! transaction for an uncommitted one and committed its records a second time (the
//! risk-control Kafka kill test's duplicates).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;
use rill_engine::dataflow::{AsyncSink, AsyncSinkPartition, IoCx, PartitionContext};
use rill_engine::ids::CheckpointId;

use crate::blocking::Blocking;
use crate::txnlog::{self, Outcome};
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
    /// Exactly-once: where the broker put the first record of the open transaction that
    /// was acknowledged (partition, offset); cleared when a transaction opens.
    anchor: Mutex<Option<(i32, i64)>>,
}

/// The producer's context: delivery reports go to the partition's [`Reports`].
struct Ctx(Arc<Reports>);

impl ClientContext for Ctx {}

impl ProducerContext for Ctx {
    type DeliveryOpaque = ();
    fn delivery(&self, r: &DeliveryResult<'_>, _: ()) {
        let reports = &self.0;
        match r {
            Ok(m) => {
                let mut a = reports.anchor.lock().unwrap_or_else(|p| p.into_inner());
                if a.is_none() {
                    *a = Some((m.partition(), m.offset()));
                }
            }
            Err((e, _)) => {
                reports.failed.fetch_add(1, Ordering::Relaxed);
                *reports.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
            }
        }
        // After the anchor: whoever sees the count sees the anchor.
        reports.acked.fetch_add(1, Ordering::Release);
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
            if txn && k == "security.protocol" && !v.eq_ignore_ascii_case("plaintext") {
                // The resume reads the log over a plain socket (see `txnlog`).
                return Err(KafkaError::Config(format!(
                    "exactly-once needs a PLAINTEXT listener (security.protocol = {v}): \
                     its recovery reads the output topic raw over plain TCP"
                ))
                .into_engine(ctx.operator, ctx.partition.0));
            }
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
        let mut wal = ctx.job_dir.join(".rill-kafka");
        if !ctx.process.is_single() {
            wal.push(ctx.process.prefix());
        }
        let wal = wal.join(format!("{}-{}.wal", ctx.operator, ctx.partition.0));
        let state = if txn {
            let restored = *self.restored.lock().unwrap_or_else(|p| p.into_inner());
            let (p, timeout, wal) = (producer.clone(), self.timeout, wal.clone());
            let topic = self.topic.clone();
            Txn::Initialising(Blocking::spawn("rill-kafka-txn", move || {
                p.init_transactions(timeout)
                    .map_err(KafkaError::client("init transactions"))?;
                resume(&p, &topic, &wal, restored, timeout)?;
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
        // Every record of the transactions before was acknowledged (pre-commit waited).
        *self
            .reports
            .anchor
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = None;
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
        if self.delivery == Delivery::ExactlyOnce && self.transactional {
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
            let anchor = *self
                .reports
                .anchor
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            // Written here (page cache) and synced by the core with the checkpoint.
            return Poll::Ready(
                write_wal(&self.wal, id, anchor, &records)
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
                self.state = Txn::Committing(
                    s,
                    Blocking::spawn("rill-kafka-txn", move || {
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

/// On (re)start, after `init_transactions`: when the file's checkpoint completed
/// (`<= restored`) and its transaction did not commit (the log says so: see the module
/// doc), produces the file again in a transaction of this session and commits it.
fn resume(
    p: &Prod,
    topic: &str,
    wal: &Path,
    restored: Option<CheckpointId>,
    timeout: Duration,
) -> Result<(), KafkaError> {
    let Some(restored) = restored else {
        return Ok(());
    };
    let log_err = |e: std::io::Error| KafkaError::Config(format!("{}: {e}", wal.display()));
    let (w, anchor, records) = match read_wal(wal).map_err(log_err)? {
        Wal::Complete {
            id,
            anchor,
            records,
        } => (id, anchor, records),
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
    if w > restored || records.is_empty() {
        return Ok(());
    }
    let Some((partition, offset)) = anchor else {
        return Err(KafkaError::Config(format!(
            "{}: {} records and no anchor (every record is acknowledged before the file \
             is written)",
            wal.display(),
            records.len()
        )));
    };
    let outcome = txnlog::outcome(p.client(), topic, partition, offset, timeout)?;
    if outcome == Outcome::Committed {
        tracing::info!(
            "kafka sink: the transaction of checkpoint {} committed ({topic}/{partition} \
             offset {offset} and its session's commit marker)",
            w.0
        );
        return Ok(());
    }
    tracing::info!(
        "kafka sink: checkpoint {} completed but its transaction did not commit ({outcome:?} \
         after {topic}/{partition} offset {offset}); producing its {} records again",
        w.0,
        records.len()
    );
    p.begin_transaction()
        .map_err(KafkaError::client("begin transaction"))?;
    let reports = &p.context().0;
    *reports.anchor.lock().unwrap_or_else(|p| p.into_inner()) = None;
    for (k, v) in &records {
        let mut r: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic).payload(v.as_slice());
        if let Some(k) = k {
            r = r.key(k.as_slice());
        }
        let mut r = r;
        // Counted before it can be acknowledged (see `Reports::resent`).
        reports.resent.fetch_add(1, Ordering::Release);
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
    p.flush(timeout).map_err(KafkaError::client("flush"))?;
    let failed = reports.failed.load(Ordering::Acquire);
    if failed > 0 {
        let last = reports
            .last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unwrap_or_default();
        return Err(KafkaError::Delivery { failed, last });
    }
    // The new anchor in place before the commit: a crash from here on resumes this
    // session's transaction (committed or not), never the old one's again.
    let anchor = *reports.anchor.lock().unwrap_or_else(|p| p.into_inner());
    replace_wal(wal, w, anchor, &records).map_err(log_err)?;
    p.commit_transaction(timeout)
        .map_err(KafkaError::client("commit transaction"))
}

/// The first bytes of a sink log (format 2: with the anchor).
const WAL_MAGIC: &[u8; 8] = b"RILLKW02";
/// The last bytes of a complete sink log.
const WAL_END: &[u8; 8] = b"RILLKEND";

/// Checkpoint `id`'s records and their anchor as bytes: [`WAL_MAGIC`], `id` (u64 LE),
/// the anchor (a flag byte, then partition i32 LE and offset i64 LE when set), then per
/// record a key flag, lengths (u32 LE) and bytes, then the record count (u64 LE) and
/// [`WAL_END`]. A process killed while writing leaves a file without that trailer:
/// [`read_wal`] reports it as torn.
fn encode_wal(id: CheckpointId, anchor: Option<(i32, i64)>, records: &[Serialized]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(
        45 + records
            .iter()
            .map(|(k, v)| 9 + v.len() + k.as_ref().map_or(0, Vec::len))
            .sum::<usize>(),
    );
    buf.extend_from_slice(WAL_MAGIC);
    buf.extend_from_slice(&id.0.to_le_bytes());
    match anchor {
        Some((p, o)) => {
            buf.push(1);
            buf.extend_from_slice(&p.to_le_bytes());
            buf.extend_from_slice(&o.to_le_bytes());
        }
        None => buf.push(0),
    }
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
    buf
}

/// Writes the sink log at pre-commit (the page cache; the core syncs the file with the
/// checkpoint).
fn write_wal(
    path: &Path,
    id: CheckpointId,
    anchor: Option<(i32, i64)>,
    records: &[Serialized],
) -> std::io::Result<std::fs::File> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d)?;
    }
    let mut f = std::fs::File::create(path)?;
    f.write_all(&encode_wal(id, anchor, records))?;
    Ok(f)
}

/// Replaces the sink log durably and atomically (a temporary file synced, renamed over
/// it, the directory synced): a crash leaves the old log or the new one.
fn replace_wal(
    path: &Path,
    id: CheckpointId,
    anchor: Option<(i32, i64)>,
    records: &[Serialized],
) -> std::io::Result<()> {
    let tmp = path.with_extension("wal.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&encode_wal(id, anchor, records))?;
    f.sync_data()?;
    std::fs::rename(&tmp, path)?;
    if let Some(d) = path.parent() {
        std::fs::File::open(d)?.sync_all()?;
    }
    Ok(())
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
    /// Checkpoint `id`'s records and where the broker put the first acknowledged one.
    Complete {
        id: CheckpointId,
        anchor: Option<(i32, i64)>,
        records: Vec<Serialized>,
    },
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
    let Some(body) = b.strip_suffix(WAL_END).filter(|body| body.len() >= 25) else {
        return Ok(Wal::Torn);
    };
    let bad = |what: &str| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("corrupt kafka sink log: {what}"),
        )
    };
    let Some(body) = body.strip_prefix(WAL_MAGIC) else {
        return Err(bad(
            "not format 2 (written by an older rill: check the output topic for the \
             transaction of its checkpoint, then delete the file)",
        ));
    };
    let (body, count) = body.split_at(body.len() - 8);
    let count = u64::from_le_bytes(count.try_into().expect("8 bytes"));
    let mut at = 0usize;
    let mut take = |n: usize| -> std::io::Result<&[u8]> {
        let s = body.get(at..at + n).ok_or_else(|| bad("truncated"))?;
        at += n;
        Ok(s)
    };
    let id = CheckpointId(u64::from_le_bytes(take(8)?.try_into().expect("8 bytes")));
    let anchor = match take(1)?[0] {
        0 => None,
        1 => Some((
            i32::from_le_bytes(take(4)?.try_into().expect("4 bytes")),
            i64::from_le_bytes(take(8)?.try_into().expect("8 bytes")),
        )),
        _ => return Err(bad("anchor flag")),
    };
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
        return Err(bad("record count"));
    }
    Ok(Wal::Complete {
        id,
        anchor,
        records,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sink_log_round_trips() {
        let dir = std::env::temp_dir().join(format!("rill-kafka-wal-{}", std::process::id()));
        let path = dir.join("x.wal");
        let recs = vec![(Some(b"k".to_vec()), b"v1".to_vec()), (None, Vec::new())];
        write_wal(&path, CheckpointId(7), Some((1, 42)), &recs).unwrap();
        let want = Wal::Complete {
            id: CheckpointId(7),
            anchor: Some((1, 42)),
            records: recs.clone(),
        };
        assert_eq!(read_wal(&path).unwrap(), want);
        // Killed while writing: every prefix, even one ending on a record boundary (or
        // empty: killed between create and write), is torn, never a shorter log.
        let full = std::fs::read(&path).unwrap();
        for n in 0..full.len() {
            std::fs::write(&path, &full[..n]).unwrap();
            assert_eq!(read_wal(&path).unwrap(), Wal::Torn, "prefix of {n} bytes");
        }
        // Replaced atomically: the new anchor (or none, for no records).
        replace_wal(&path, CheckpointId(7), Some((0, 9)), &recs).unwrap();
        assert!(matches!(
            read_wal(&path).unwrap(),
            Wal::Complete {
                anchor: Some((0, 9)),
                ..
            }
        ));
        replace_wal(&path, CheckpointId(8), None, &[]).unwrap();
        assert_eq!(
            read_wal(&path).unwrap(),
            Wal::Complete {
                id: CheckpointId(8),
                anchor: None,
                records: Vec::new()
            }
        );
        // A log of the format before the anchor is refused, not misread.
        let mut old = full[WAL_MAGIC.len()..].to_vec();
        old.splice(8..9 + 12, []);
        std::fs::write(&path, &old).unwrap();
        assert!(read_wal(&path).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(read_wal(&path).unwrap(), Wal::Missing);
    }

    /// The committed values of `topic` (partitions `0..partitions`), sorted, rebuilt from
    /// the raw log's markers.
    fn committed(addr: &str, topic: &str, partitions: i32) -> Vec<Vec<u8>> {
        let mut out: Vec<Vec<u8>> = (0..partitions)
            .flat_map(|p| {
                rill_testkit::kafka_log::rebuild(&rill_testkit::kafka_log::read_raw(addr, topic, p))
                    .committed
            })
            .collect();
        out.sort();
        out
    }

    /// The resume against a real broker, both ways: a session that pre-committed
    /// checkpoint 3 (records acknowledged, file written) dies before its commit; the
    /// restarted partition fences it (its transaction aborts) and produces the file again,
    /// once; a second restart finds that transaction committed in the log and produces
    /// nothing. A restore of an older checkpoint leaves the file alone.
    #[test]
    fn resume_produces_an_uncommitted_transaction_again_once_and_a_committed_one_never() {
        let k = rill_testkit::Kafka::start();
        k.create_topic("out", 2);
        let dir = tempfile::tempdir().unwrap();
        let wal = dir.path().join("s.wal");
        let t = Duration::from_secs(10);
        let producer = || -> Prod {
            ClientConfig::new()
                .set("bootstrap.servers", &k.addr)
                .set("transactional.id", "t")
                .create_with_context(Ctx(Arc::default()))
                .unwrap()
        };
        let recs: Vec<Serialized> = (0..50)
            .map(|i| {
                (
                    Some(format!("{i}").into_bytes()),
                    format!("r{i}").into_bytes(),
                )
            })
            .collect();
        let mut want: Vec<Vec<u8>> = recs.iter().map(|(_, v)| v.clone()).collect();
        want.sort();
        let zombie = producer();
        zombie.init_transactions(t).unwrap();
        zombie.begin_transaction().unwrap();
        for (key, v) in &recs {
            let r = BaseRecord::<[u8], [u8]>::to("out")
                .key(key.as_deref().unwrap())
                .payload(v.as_slice());
            zombie.send(r).map_err(|(e, _)| e).unwrap();
        }
        zombie.flush(t).unwrap();
        let anchor = *zombie.context().0.anchor.lock().unwrap();
        assert!(anchor.is_some(), "the delivery reports gave an anchor");
        write_wal(&wal, CheckpointId(3), anchor, &recs).unwrap();
        assert!(committed(&k.addr, "out", 2).is_empty());

        let p = producer();
        p.init_transactions(t).unwrap();
        resume(&p, "out", &wal, Some(CheckpointId(2)), t).unwrap();
        assert!(
            committed(&k.addr, "out", 2).is_empty(),
            "checkpoint 3 not restored"
        );
        resume(&p, "out", &wal, Some(CheckpointId(3)), t).unwrap();
        assert_eq!(p.context().0.resent.load(Ordering::Acquire), 50);
        assert_eq!(committed(&k.addr, "out", 2), want, "produced again, once");
        let Wal::Complete { anchor: now, .. } = read_wal(&wal).unwrap() else {
            panic!("the file is complete");
        };
        assert!(
            now.is_some() && now != anchor,
            "the file names the new transaction"
        );

        let p2 = producer();
        p2.init_transactions(t).unwrap();
        resume(&p2, "out", &wal, Some(CheckpointId(3)), t).unwrap();
        assert_eq!(p2.context().0.resent.load(Ordering::Acquire), 0);
        assert_eq!(committed(&k.addr, "out", 2), want, "committed: not again");
        drop(zombie);
    }
}
