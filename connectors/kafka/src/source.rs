//! The Kafka source: reads topics; Kafka partition `i` (numbered over all topics in the
//! order given) goes to source partition `i % parallelism` (no consumer-group rebalancing).
//!
//! Owns: resolving the start position to concrete offsets at open (earliest, latest, a
//! timestamp, or the checkpoint's offset after `seek`), assigning them to a consumer,
//! and polling it without waiting; the bounded mode's end offsets.
//!
//! Must not: wait on the core. The consumer's fetches run on librdkafka's threads; a poll
//! that finds nothing returns `Idle` with a re-poll time `repoll` ahead, so an idle
//! partition lets its core park until then.
//!
//! Limit: the engine checkpoints one `u64` offset per source partition, so a source
//! partition reads at most one Kafka partition (parallelism >= partitions over all
//! topics); more is refused at open with a clear error.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError as RdError;
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rill_engine::dataflow::{
    AsyncSource, AsyncSourcePartition, IoCx, Out, PartitionContext, SourcePoll,
};

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
        }
    }

    /// Where to start without a checkpoint.
    pub fn start_from(mut self, start: StartFrom) -> Self {
        self.start = start;
        self
    }

    /// Stop at the end offsets seen when the partition opens (tests, batch re-runs):
    /// precisely, at the first time the partition is caught up (end of partition) at or
    /// after that offset. Brokers whose `ListOffsets` under-reports the end (Tansu 0.6
    /// reports the last batch's base offset + 1) still end at the real end; a topic
    /// still being written may give a few records after the start's end.
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

    fn open(&self, ctx: &PartitionContext<'_>) -> Result<KafkaPartition, KafkaError> {
        let mut cc = ClientConfig::new();
        cc.set("bootstrap.servers", &self.brokers)
            // Assigned partitions only: the group is never joined and never committed to.
            .set("group.id", format!("rill-{}", ctx.operator))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "true")
            .set("isolation.level", "read_committed");
        for (k, v) in &self.config {
            cc.set(k, v);
        }
        let consumer: BaseConsumer = cc.create().map_err(KafkaError::client("create consumer"))?;
        // Kafka partitions over all topics, numbered in order; ours are i % parallelism.
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
        let mine: Vec<(String, i32)> = all
            .iter()
            .enumerate()
            .filter(|(i, _)| i % par == me)
            .map(|(_, tp)| tp.clone())
            .collect();
        if mine.len() > 1 {
            return Err(KafkaError::TooManyPartitions {
                partition: ctx.partition.0,
                count: mine.len(),
                total: all.len(),
            });
        }
        let Some((topic, partition)) = mine.into_iter().next() else {
            return Ok(KafkaPartition {
                consumer,
                assigned: None,
                next: 0,
                end: None,
                assigned_yet: false,
                finished: false,
                repoll: self.repoll,
            });
        };
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
        Ok(KafkaPartition {
            consumer,
            assigned: Some((Arc::from(topic.as_str()), partition)),
            next: next.max(0) as u64,
            end: self.bounded.then_some(high.max(0) as u64),
            assigned_yet: false,
            finished: false,
            repoll: self.repoll,
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

/// One source partition's consumer.
struct KafkaPartition {
    consumer: BaseConsumer,
    /// The Kafka partition this source partition reads, if any.
    assigned: Option<(Arc<str>, i32)>,
    /// The offset of the next record to emit (what a checkpoint records).
    next: u64,
    /// Bounded: stop at the first end of partition at or after this offset.
    end: Option<u64>,
    /// Bounded and at its end.
    finished: bool,
    assigned_yet: bool,
    repoll: Duration,
}

impl KafkaPartition {
    fn poll(
        &mut self,
        cx: &mut IoCx<'_>,
        max: usize,
        out: &mut Out<'_, KafkaRecord>,
    ) -> Result<SourcePoll, KafkaError> {
        let Some((topic, partition)) = self.assigned.clone() else {
            return Ok(SourcePoll::Done);
        };
        if !self.assigned_yet {
            // Assigning is local (librdkafka starts fetching on its threads).
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(&topic, partition, Offset::Offset(self.next as i64))
                .map_err(KafkaError::client("assign"))?;
            self.consumer
                .assign(&tpl)
                .map_err(KafkaError::client("assign"))?;
            self.assigned_yet = true;
        }
        let mut n = 0;
        while n < max {
            match self.consumer.poll(Duration::ZERO) {
                None => break,
                Some(Err(RdError::PartitionEOF(_))) => {
                    // Caught up with the broker's high watermark (control records
                    // included, which carry no message to show their offsets).
                    if self.end.is_some_and(|e| self.next >= e) {
                        self.finished = true;
                    }
                    break;
                }
                Some(Err(e)) => {
                    return Err(KafkaError::Client {
                        op: "poll",
                        source: e,
                    })
                }
                Some(Ok(m)) => {
                    let off = m.offset();
                    if off < self.next as i64 {
                        continue; // a re-delivery from before the position
                    }
                    out.emit(KafkaRecord {
                        topic: topic.clone(),
                        partition,
                        offset: off,
                        timestamp_ms: m.timestamp().to_millis(),
                        key: m.key().map(<[u8]>::to_vec),
                        value: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                    });
                    self.next = off as u64 + 1;
                    n += 1;
                }
            }
        }
        if n > 0 {
            return Ok(SourcePoll::Emitted(n));
        }
        if self.finished {
            return Ok(SourcePoll::Done);
        }
        Ok(SourcePoll::Idle {
            next_due_ns: Some(cx.now_ns() + self.repoll.as_nanos() as u64),
        })
    }
}

/// A partition with the names its errors carry.
struct Named {
    inner: KafkaPartition,
    operator: String,
    partition: u32,
}

impl AsyncSourcePartition<KafkaRecord> for Named {
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
    fn offset(&self) -> u64 {
        self.inner.next
    }
    fn seek(&mut self, offset: u64) -> rill_engine::Result<()> {
        // Before `start`: the first poll assigns at this offset.
        self.inner.next = offset;
        self.inner.assigned_yet = false;
        Ok(())
    }
}
