//! Kafka source and sink for rill, on the `rdkafka` client (librdkafka).
//!
//! Owns: [`KafkaSource`] (topics in; every Kafka partition's offset in the checkpoint,
//! many Kafka partitions per source partition; per-Kafka-partition watermarks with
//! idleness; optional commit of completed checkpoints' offsets to a consumer group, for
//! lag monitoring) and [`KafkaSink`]
//! (records out; exactly-once through Kafka transactions tied to checkpoints,
//! at-least-once, or none), the JSON helper [`json_value`], and this crate's errors.
//!
//! Must not: block a pinned core. librdkafka does its network IO on its own threads; the
//! core only polls its queues without waiting (`poll(Duration::ZERO)`, in-flight counts).
//! The few client calls that block by design (a transaction's init and commit, metadata
//! and offset look-ups at start-up, and the exactly-once sink's read of the output log at
//! a restore, `txnlog.rs`) run on a helper thread that wakes the partition's waker when
//! done (see `blocking.rs`), except the start-up look-ups of the source, which run once
//! in `open_partition` (bounded by `KafkaSource::timeout`).
//!
//! Why librdkafka's threads and not the core's io_uring: librdkafka is the client with
//! transactions, idempotence, retries and fencing that real deployments trust; speaking
//! the protocol over the core's own sockets would mean re-implementing those. The cost is
//! a few threads per client outside the pinned cores, and a wake-up through the core's
//! doorbell when a delivery report arrives (the sink) or a short re-poll timer while a
//! source partition has nothing (the source), so an idle source lets its core park.

mod blocking;
mod sink;
mod source;
mod txnlog;

pub use sink::{json_value, Delivery, KafkaSink, Serialized};
pub use source::{KafkaRecord, KafkaSource, StartFrom};

/// What can go wrong in the Kafka connector.
#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    /// The client reported an error.
    #[error("kafka {op}: {source}")]
    Client {
        /// What was being done.
        op: &'static str,
        /// The client's error.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// A topic the source reads does not exist on the broker.
    #[error("kafka: topic `{topic}` does not exist (or has no partitions) on {brokers}")]
    NoSuchTopic {
        /// The topic.
        topic: String,
        /// `bootstrap.servers`.
        brokers: String,
    },
    /// Deliveries to the broker failed (at-least-once and exactly-once cannot go on).
    #[error("kafka sink: {failed} deliveries failed, the last: {last}")]
    Delivery {
        /// How many.
        failed: u64,
        /// The last error.
        last: String,
    },
    /// Reading a topic partition's log raw (to see how a transaction ended) failed.
    #[error("kafka: reading the log of {topic}/{partition}: {reason}")]
    Log {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// What went wrong.
        reason: String,
    },
    /// Bad configuration.
    #[error("kafka: {0}")]
    Config(String),
}

impl KafkaError {
    pub(crate) fn client(op: &'static str) -> impl FnOnce(rdkafka::error::KafkaError) -> Self {
        move |source| KafkaError::Client { op, source }
    }

    /// As the engine's error, naming the operator and partition.
    pub(crate) fn into_engine(self, operator: &str, partition: u32) -> rill_engine::EngineError {
        rill_engine::EngineError::Operator {
            operator: operator.to_string(),
            partition,
            reason: self.to_string(),
        }
    }
}
