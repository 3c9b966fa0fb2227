//! The Kafka source: reads topics; Kafka partition `i` (numbered over all topics in the
//! order given) belongs to process `i % N` of a job run as `N` processes (`--process
//! i/N`; one process owns them all), and this process's partitions, in that order, go
//! to source partition `j % parallelism` for the `j`-th of them (no consumer-group
//! rebalancing). A source partition reads all its Kafka partitions with one consumer.
//!
//! Owns: resolving the start position to concrete offsets at open (earliest, latest, a
//! timestamp, or the checkpoint's offsets after `seek_position`), assigning them to a
//! consumer and splitting each Kafka partition into its own queue, polling those without
//! waiting; the position a checkpoint records (the next offset of every Kafka partition
//! the source partition reads); the bounded mode's end offsets; per-Kafka-partition
//! watermarks (`SplitWatermarks`); committing completed checkpoints' offsets to a
//! consumer group (optional, asynchronous).
//!
//! Must not: wait on the core. The consumer's fetches run on librdkafka's threads; a poll
//! that finds nothing returns `Idle` with a re-poll time `repoll` ahead, so an idle
//! partition lets its core park until then. Offset commits are `CommitMode::Async`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::base_consumer::PartitionQueue;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::KafkaError as RdError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rill_engine::dataflow::{
    AsyncSource, AsyncSourcePartition, IoCx, Out, PartitionContext, SourcePoll, SplitWatermarks,
    WatermarkStrategy,
};
use rill_engine::ids::CheckpointId;

use crate::KafkaError;

/// Where a source partition starts when no checkpoint is restored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartFrom {
    /// The first offset still on the broker.
    Earliest,
    /// After the last record on the broker when the job starts.
    Latest,
    /// The first record whose timestamp is at or after this (ms since the epoch).
    TimestampMs(i64),
}

/// One Kafka record as the source emits it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KafkaRecord {
    /// The topic.
    pub topic: Arc<str>,
    /// The Kafka partition.
    pub partition: i32,
    /// The record's offset in it.
    pub offset: i64,
    /// The record's timestamp (ms since the epoch), when it has one.
    pub timestamp_ms: Option<i64>,
    /// The key.
    pub key: Option<Vec<u8>>,
    /// The value (empty for a tombstone).
    pub value: Vec<u8>,
}

/// A record's event time (ms) for watermarks; `None`: the record does not advance them.
type EventTimeFn = dyn Fn(&KafkaRecord) -> Option<u64> + Send + Sync;

/// Where the source's event time comes from.
#[derive(Clone)]
struct EventTime(Arc<EventTimeFn>);

impl std::fmt::Debug for EventTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EventTime(fn)")
    }
}

impl Default for EventTime {
    /// The record's timestamp (records without one, or before the epoch, do not count).
    fn default() -> Self {
        Self(Arc::new(|r: &KafkaRecord| {
            r.timestamp_ms.and_then(|t| u64::try_from(t).ok())
        }))
    }
}

/// Reads Kafka topics (see the module doc for the assignment).
#[derive(Clone, Debug)]
pub struct KafkaSource {
    brokers: String,
    topics: Vec<String>,
    start: StartFrom,
    bounded: bool,
    repoll: Duration,
    timeout: Duration,
    config: Vec<(String, String)>,
    watermarks: Option<WatermarkStrategy>,
    event_time: EventTime,
    commit_group: Option<String>,
}

impl KafkaSource {
    /// Reads `topics` from `brokers` (`bootstrap.servers`), unbounded, from the earliest
    /// offset.
    pub fn new(brokers: &str, topics: &[&str]) -> Self {
        Self {
            brokers: brokers.to_string(),
            topics: topics.iter().map(|t| t.to_string()).collect(),
            start: StartFrom::Earliest,
            bounded: false,
            repoll: Duration::from_millis(1),
            timeout: Duration::from_secs(10),
            config: Vec::new(),
            watermarks: None,
            event_time: EventTime::default(),
            commit_group: None,
        }
    }

    /// Where to start without a checkpoint.
    pub fn start_from(mut self, start: StartFrom) -> Self {
        self.start = start;
        self
    }

    /// Stop at the end offsets seen when the partition opens (tests, batch re-runs):
    /// precisely, each Kafka partition at the first time it is caught up (end of
    /// partition) at or after that offset. Brokers whose `ListOffsets` under-reports the
    /// end (Tansu 0.6 reports the last batch's base offset + 1) still end at the real
    /// end; a topic still being written may give a few records after the start's end.
    pub fn bounded(mut self, bounded: bool) -> Self {
        self.bounded = bounded;
        self
    }

    /// How long an idle partition waits before polling its consumer again (default
    /// 1 ms: the added latency when a record arrives on an idle partition).
    pub fn repoll(mut self, every: Duration) -> Self {
        self.repoll = every;
        self
    }

    /// Bound on the start-up look-ups (metadata, offsets) in `open_partition`.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// A librdkafka consumer property (after the source's own; it may override them).
    pub fn set(mut self, key: &str, value: &str) -> Self {
        self.config.push((key.to_string(), value.to_string()));
        self
    }

    /// Emits watermarks by `strategy`: one generator per Kafka partition, combined per
    /// source partition as the minimum over its Kafka partitions that are not idle
    /// (Flink's per-split watermarks). With `strategy.idle_timeout`, a Kafka partition
    /// silent for that long (caught up with the broker's end offset and no new record;
    /// one never written, too) stops holding the watermark back until its next record
    /// (a partition that is only behind, its records still being fetched, never counts
    /// as idle); without it, one silent Kafka partition
    /// holds back the whole source partition. Event time is the record's timestamp
    /// unless [`event_time`](Self::event_time) says otherwise. Do not also wrap the
    /// source in `Watermarked` / `source_with_watermarks` (both would emit).
    pub fn watermarks(mut self, strategy: WatermarkStrategy) -> Self {
        self.watermarks = Some(strategy);
        self
    }

    /// The event time (ms) of a record, for [`watermarks`](Self::watermarks) (default:
    /// the record's timestamp).
    pub fn event_time(mut self, f: impl Fn(&KafkaRecord) -> u64 + Send + Sync + 'static) -> Self {
        self.event_time = EventTime(Arc::new(move |r: &KafkaRecord| Some(f(r))));
        self
    }

    /// After each completed checkpoint, commits the offsets it recorded to consumer
    /// group `group` (asynchronously: the core never waits), so that the usual lag
    /// monitoring (`kafka-consumer-groups`, Burrow, ...) sees the job's progress. For
    /// monitoring only: rill never reads them back (a restore seeks to the checkpoint's
    /// offsets; without a checkpoint the source starts by `start_from`).
    pub fn commit_offsets_to_group(mut self, group: &str) -> Self {
        self.commit_group = Some(group.to_string());
        self
    }

    fn open(&self, ctx: &PartitionContext<'_>) -> Result<KafkaPartition, KafkaError> {
        if self.commit_group.as_deref() == Some("") {
            return Err(KafkaError::Config(
                "commit_offsets_to_group: the group name is empty".into(),
            ));
        }
        let mut cc = ClientConfig::new();
        let group = match &self.commit_group {
            Some(g) => g.clone(),
            // Assigned partitions only: this group is never joined and never committed to.
            None => format!("rill-{}", ctx.operator),
        };
        cc.set("bootstrap.servers", &self.brokers)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "true")
            .set("isolation.level", "read_committed");
        for (k, v) in &self.config {
            cc.set(k, v);
        }
        let consumer: BaseConsumer<SourceContext> = cc
            .create_with_context(SourceContext::default())
            .map_err(KafkaError::client("create consumer"))?;
        // Kafka partitions over all topics, numbered in order; this process's are those
        // with i % processes == index, and of those, ours are the j-th with
        // j % parallelism == partition.
        let mut all = Vec::new();
        for t in &self.topics {
            let md = consumer
                .fetch_metadata(Some(t), self.timeout)
                .map_err(KafkaError::client("fetch metadata"))?;
            let n = md
                .topics()
                .iter()
                .find(|mt| mt.name() == t)
                .map_or(0, |mt| mt.partitions().len());
            if n == 0 {
                return Err(KafkaError::NoSuchTopic {
                    topic: t.clone(),
                    brokers: self.brokers.clone(),
                });
            }
            all.extend((0..n as i32).map(|p| (t.clone(), p)));
        }
        let par = ctx.parallelism.max(1) as usize;
        let me = ctx.partition.0 as usize;
        let mut splits = Vec::new();
        let mine = all
            .into_iter()
            .enumerate()
            .filter(|(i, _)| ctx.process.owns(*i))
            .map(|(_, tp)| tp);
        for (j, (topic, partition)) in mine.enumerate() {
            if j % par != me {
                continue;
            }
            let (low, high) = consumer
                .fetch_watermarks(&topic, partition, self.timeout)
                .map_err(KafkaError::client("fetch watermarks"))?;
            let next = match self.start {
                StartFrom::Earliest => low,
                StartFrom::Latest => high,
                StartFrom::TimestampMs(ts) => {
                    let mut tpl = TopicPartitionList::new();
                    tpl.add_partition_offset(&topic, partition, Offset::Offset(ts))
                        .map_err(KafkaError::client("offsets for times"))?;
                    let got = consumer
                        .offsets_for_times(tpl, self.timeout)
                        .map_err(KafkaError::client("offsets for times"))?;
                    match got.elements().first().map(|e| e.offset()) {
                        Some(Offset::Offset(o)) => o,
                        // No record at or after the timestamp: start at the end.
                        _ => high,
                    }
                }
            };
            splits.push(Split {
                topic: Arc::from(topic.as_str()),
                partition,
                next: next.max(0) as u64,
                end: self.bounded.then_some(high.max(0) as u64),
                finished: false,
                skip_before_ms: match self.start {
                    StartFrom::TimestampMs(ts) => Some(ts),
                    _ => None,
                },
                caught_up: false,
                queue: None,
            });
        }
        let watermarks = self
            .watermarks
            .map(|s| SplitWatermarks::new(s, splits.len(), 0));
        Ok(KafkaPartition {
            consumer: Arc::new(consumer),
            splits,
            assigned_yet: false,
            repoll: self.repoll,
            rr: 0,
            idleness: self.watermarks.is_some_and(|s| s.idle_timeout.is_some()),
            watermarks,
            event_time: self.event_time.clone(),
            commit: self.commit_group.is_some(),
            timeout: self.timeout,
        })
    }
}

impl AsyncSource<KafkaRecord> for KafkaSource {
    fn open_partition(
        &self,
        ctx: &PartitionContext<'_>,
    ) -> rill_engine::Result<Box<dyn AsyncSourcePartition<KafkaRecord>>> {
        if self.topics.is_empty() {
            return Err(KafkaError::Config("the source names no topic".into())
                .into_engine(ctx.operator, ctx.partition.0));
        }
        match self.open(ctx) {
            Ok(p) => Ok(Box::new(Named {
                inner: p,
                operator: ctx.operator.to_string(),
                partition: ctx.partition.0,
            })),
            Err(e) => Err(e.into_engine(ctx.operator, ctx.partition.0)),
        }
    }
}

/// One Kafka partition a source partition reads.
struct Split {
    topic: Arc<str>,
    partition: i32,
    /// The offset of the next record to emit (what a checkpoint records).
    next: u64,
    /// Bounded: stop at the first end of partition at or after this offset.
    end: Option<u64>,
    /// Bounded and at its end.
    finished: bool,
    /// Started from a timestamp (no checkpoint): records before the first one at or
    /// after it are skipped. The broker's answer to the timestamp lookup is taken as a
    /// lower bound: real Kafka gives the exact offset (nothing is skipped here), a broker
    /// that resolves by batch, or not at all (Tansu 0.6 answers offset 0), gives an
    /// earlier one.
    skip_before_ms: Option<i64>,
    /// The client reported the end of the partition (librdkafka's partition EOF: the
    /// broker's high watermark reached) and no record came since: silent, not behind.
    caught_up: bool,
    /// Its own queue of the consumer (after the assignment).
    queue: Option<SplitQueue>,
}

type SplitQueue = PartitionQueue<SourceContext>;

/// The consumer's callbacks: counts the offset commits still unanswered.
#[derive(Default)]
struct SourceContext {
    outstanding: AtomicUsize,
}

impl ClientContext for SourceContext {}

impl ConsumerContext for SourceContext {
    fn commit_callback(&self, result: rdkafka::error::KafkaResult<()>, _: &TopicPartitionList) {
        self.outstanding.fetch_sub(1, Ordering::Relaxed);
        if let Err(e) = result {
            // Monitoring only: the job goes on.
            tracing::warn!("kafka source: committing offsets to the group failed: {e}");
        }
    }
}

/// One source partition's consumer.
struct KafkaPartition {
    consumer: Arc<BaseConsumer<SourceContext>>,
    /// The Kafka partitions this source partition reads.
    splits: Vec<Split>,
    assigned_yet: bool,
    repoll: Duration,
    /// The split the next poll starts with (round robin).
    rr: usize,
    watermarks: Option<SplitWatermarks>,
    /// Whether the watermark strategy has an idle timeout (then a split is idle only
    /// when it has caught up with the broker's end offset).
    idleness: bool,
    event_time: EventTime,
    /// Commit completed checkpoints' offsets to the consumer's group.
    commit: bool,
    /// Bound on waiting for the last commit at teardown.
    timeout: Duration,
}

impl Drop for KafkaPartition {
    /// The commit of the final checkpoint is usually still in flight when the job ends:
    /// serve the consumer until it is answered (bounded by `timeout`), so the group shows
    /// the final offsets. The job is over here; nothing else waits on the core.
    fn drop(&mut self) {
        if !self.commit {
            return;
        }
        let until = std::time::Instant::now() + self.timeout;
        while self.consumer.context().outstanding.load(Ordering::Relaxed) > 0
            && std::time::Instant::now() < until
        {
            // Messages still fetched are dropped: the job is over.
            let _ = self.consumer.poll(Duration::from_millis(10));
        }
    }
}

/// The checkpointed position: every Kafka partition's next offset.
type Position = Vec<(String, i32, u64)>;

impl KafkaPartition {
    fn assign(&mut self) -> Result<(), KafkaError> {
        // Assigning is local (librdkafka starts fetching on its threads).
        let mut tpl = TopicPartitionList::new();
        for s in &self.splits {
            tpl.add_partition_offset(&s.topic, s.partition, Offset::Offset(s.next as i64))
                .map_err(KafkaError::client("assign"))?;
        }
        self.consumer
            .assign(&tpl)
            .map_err(KafkaError::client("assign"))?;
        // Each Kafka partition into its own queue (after `assign`, which resets them):
        // its end-of-partition events then say which one is caught up.
        for s in &mut self.splits {
            s.queue = Some(
                self.consumer
                    .split_partition_queue(&s.topic, s.partition)
                    .ok_or_else(|| {
                        KafkaError::Config(format!(
                            "cannot split the queue of {}/{}",
                            s.topic, s.partition
                        ))
                    })?,
            );
        }
        self.assigned_yet = true;
        Ok(())
    }

    /// Emits message `m` of split `i` unless it is before the split's position.
    fn take(
        &mut self,
        i: usize,
        m: &BorrowedMessage<'_>,
        now_ns: u64,
        out: &mut Out<'_, KafkaRecord>,
    ) -> bool {
        let s = &mut self.splits[i];
        let off = m.offset();
        if off < s.next as i64 {
            return false; // a re-delivery from before the position
        }
        if let Some(from) = s.skip_before_ms {
            if m.timestamp().to_millis().is_some_and(|t| t < from) {
                s.next = off as u64 + 1;
                s.caught_up = false;
                return false;
            }
            s.skip_before_ms = None;
        }
        let rec = KafkaRecord {
            topic: s.topic.clone(),
            partition: s.partition,
            offset: off,
            timestamp_ms: m.timestamp().to_millis(),
            key: m.key().map(<[u8]>::to_vec),
            value: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
        };
        s.next = off as u64 + 1;
        s.caught_up = false;
        if let Some(w) = &mut self.watermarks {
            if let Some(ts) = (self.event_time.0)(&rec) {
                if let Some(before) = w.on_record(i, ts, now_ns) {
                    out.watermark(before);
                }
            }
        }
        out.emit(rec);
        true
    }

    /// Takes what queue `q` of split `i` has, up to `max` records in this poll.
    fn drain(
        &mut self,
        i: usize,
        q: &SplitQueue,
        max: usize,
        n: &mut usize,
        now_ns: u64,
        out: &mut Out<'_, KafkaRecord>,
    ) -> Result<(), KafkaError> {
        while *n < max {
            match q.poll(Duration::ZERO) {
                None => break,
                Some(Err(RdError::PartitionEOF(_))) => {
                    self.at_end(i);
                    break;
                }
                Some(Err(e)) => {
                    return Err(KafkaError::Client {
                        op: "poll",
                        source: e,
                    })
                }
                Some(Ok(m)) => *n += usize::from(self.take(i, &m, now_ns, out)),
            }
        }
        Ok(())
    }

    /// Split `i` is caught up with the broker's high watermark (control records
    /// included, which carry no message to show their offsets).
    fn at_end(&mut self, i: usize) {
        let s = &mut self.splits[i];
        s.caught_up = true;
        if s.end.is_some_and(|e| s.next >= e) {
            s.finished = true;
        }
    }

    fn poll(
        &mut self,
        cx: &mut IoCx<'_>,
        max: usize,
        out: &mut Out<'_, KafkaRecord>,
    ) -> Result<SourcePoll, KafkaError> {
        if self.splits.is_empty() {
            return Ok(SourcePoll::Done);
        }
        if !self.assigned_yet {
            self.assign()?;
        }
        let now_ns = cx.now_ns();
        let mut n = 0;
        // The consumer's own queue: events (errors, commit results), and messages
        // fetched before their partition's queue was split off.
        let consumer = self.consumer.clone();
        while let Some(r) = consumer.poll(Duration::ZERO) {
            match r {
                Err(RdError::PartitionEOF(p)) => {
                    // Only the partition number: unambiguous unless two topics have it.
                    let mut it = self
                        .splits
                        .iter()
                        .enumerate()
                        .filter(|(_, s)| s.partition == p);
                    if let (Some((i, _)), None) = (it.next(), it.next()) {
                        self.at_end(i);
                    }
                }
                Err(e) => {
                    return Err(KafkaError::Client {
                        op: "poll",
                        source: e,
                    })
                }
                Ok(m) => {
                    let i = self
                        .splits
                        .iter()
                        .position(|s| *s.topic == *m.topic() && s.partition == m.partition());
                    if let Some(i) = i {
                        n += usize::from(self.take(i, &m, now_ns, out));
                    }
                }
            }
        }
        let k = self.splits.len();
        for j in 0..k {
            let i = (self.rr + j) % k;
            // Out of the split while its messages (which borrow it) are taken.
            let q = self.splits[i].queue.take().expect("split at assign");
            let r = self.drain(i, &q, max, &mut n, now_ns, out);
            self.splits[i].queue = Some(q);
            r?;
        }
        self.rr = (self.rr + 1) % k;
        let mut due = None;
        if let Some(w) = &mut self.watermarks {
            if self.idleness && now_ns >= w.next_deadline() {
                // Idle means silent, not behind: a split the client has not reported at
                // its end (partition EOF) since its last record has records on their way.
                for (i, s) in self.splits.iter().enumerate() {
                    if !s.caught_up && !s.finished {
                        w.pending(i, now_ns);
                    }
                }
            }
            if let Some(wm) = w.tick(now_ns) {
                out.watermark(wm);
            }
            due = Some(w.next_deadline());
        }
        if n > 0 {
            return Ok(SourcePoll::Emitted(n));
        }
        if self.splits.iter().all(|s| s.finished) {
            return Ok(SourcePoll::Done);
        }
        let repoll = now_ns + self.repoll.as_nanos() as u64;
        Ok(SourcePoll::Idle {
            next_due_ns: Some(due.map_or(repoll, |d| d.min(repoll))),
        })
    }

    fn position(&self) -> Position {
        self.splits
            .iter()
            .map(|s| (s.topic.to_string(), s.partition, s.next))
            .collect()
    }

    fn seek_position(&mut self, pos: &[u8]) -> Result<(), KafkaError> {
        let pos: Position = serde_json::from_slice(pos).map_err(|e| {
            KafkaError::Config(format!(
                "the checkpoint's source position does not parse: {e}"
            ))
        })?;
        for (topic, partition, next) in pos {
            let Some(s) = self
                .splits
                .iter_mut()
                .find(|s| *s.topic == *topic && s.partition == partition)
            else {
                return Err(KafkaError::Config(format!(
                    "the checkpoint has an offset for {topic}/{partition}, which this source \
                     partition does not read (the topics or their partitions changed: start \
                     over with --fresh)"
                )));
            };
            s.next = next;
            // A restored position is exact: no timestamp skipping.
            s.skip_before_ms = None;
        }
        // Kafka partitions the checkpoint does not know (added since) start by
        // `start_from`, as resolved at open.
        self.assigned_yet = false;
        Ok(())
    }

    fn commit(&self, pos: &Position) -> Result<(), KafkaError> {
        let mut tpl = TopicPartitionList::new();
        for (topic, partition, next) in pos {
            tpl.add_partition_offset(topic, *partition, Offset::Offset(*next as i64))
                .map_err(KafkaError::client("commit offsets"))?;
        }
        self.consumer
            .context()
            .outstanding
            .fetch_add(1, Ordering::Relaxed);
        self.consumer.commit(&tpl, CommitMode::Async).map_err(|e| {
            self.consumer
                .context()
                .outstanding
                .fetch_sub(1, Ordering::Relaxed);
            KafkaError::Client {
                op: "commit offsets",
                source: e,
            }
        })
    }
}

/// A source partition with the names its errors carry.
struct Named {
    inner: KafkaPartition,
    operator: String,
    partition: u32,
}

impl AsyncSourcePartition<KafkaRecord> for Named {
    fn start(&mut self, start_ns: u64) {
        if let Some(w) = &mut self.inner.watermarks {
            w.start(start_ns);
        }
    }
    fn poll_next(
        &mut self,
        cx: &mut IoCx<'_>,
        max: usize,
        out: &mut Out<'_, KafkaRecord>,
    ) -> rill_engine::Result<SourcePoll> {
        self.inner
            .poll(cx, max, out)
            .map_err(|e| e.into_engine(&self.operator, self.partition))
    }
    /// The sum of the next offsets (for display; the position is the real one).
    fn offset(&self) -> u64 {
        self.inner.splits.iter().map(|s| s.next).sum()
    }
    fn seek(&mut self, offset: u64) -> rill_engine::Result<()> {
        // A checkpoint of format version 1: one offset, from a time when a source
        // partition read at most one Kafka partition.
        match self.inner.splits.as_mut_slice() {
            [] => Ok(()),
            [s] => {
                s.next = offset;
                self.inner.assigned_yet = false;
                Ok(())
            }
            more => Err(KafkaError::Config(format!(
                "the checkpoint holds one offset for this source partition, which now reads \
                 {} Kafka partitions (start over with --fresh)",
                more.len()
            ))
            .into_engine(&self.operator, self.partition)),
        }
    }
    fn position(&self) -> Option<Vec<u8>> {
        Some(serde_json::to_vec(&self.inner.position()).expect("a position serializes"))
    }
    fn seek_position(&mut self, position: &[u8]) -> rill_engine::Result<()> {
        self.inner
            .seek_position(position)
            .map_err(|e| e.into_engine(&self.operator, self.partition))
    }
    fn checkpoint_complete(&mut self, id: CheckpointId, _offset: u64, position: Option<&[u8]>) {
        if !self.inner.commit {
            return;
        }
        let Some(pos) = position.and_then(|p| serde_json::from_slice::<Position>(p).ok()) else {
            return;
        };
        if pos.is_empty() {
            return;
        }
        if let Err(e) = self.inner.commit(&pos) {
            // Monitoring only: the job goes on.
            tracing::warn!(
                "kafka source `{}` partition {}: committing the offsets of checkpoint {} \
                 to the group failed: {e}",
                self.operator,
                self.partition,
                id.0
            );
        }
    }
}
