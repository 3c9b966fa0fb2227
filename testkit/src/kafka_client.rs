//! Producing test input to a Kafka-protocol broker with a plain client (rdkafka), for
//! the tests of the Kafka connector and of the jobs that use it (feature `kafka`).
//!
//! Must not: be used for what a test checks; that is read raw (`kafka_log`).

use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

/// Produces `records` (key, value) to `topic` in order and waits until all are
/// acknowledged. Without a key, librdkafka's partitioner spreads them over the
/// partitions; a topic with one partition keeps their order.
pub fn produce(
    brokers: &str,
    topic: &str,
    records: impl IntoIterator<Item = (Option<Vec<u8>>, Vec<u8>)>,
) {
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        .create()
        .expect("creating the test producer");
    for (key, value) in records {
        let mut rec = BaseRecord::to(topic).payload(&value);
        if let Some(k) = &key {
            rec = rec.key(k);
        }
        loop {
            match p.send(rec) {
                Ok(()) => break,
                Err((_, r)) => {
                    rec = r;
                    p.poll(Duration::from_millis(10));
                }
            }
        }
        p.poll(Duration::ZERO);
    }
    p.flush(Duration::from_secs(30))
        .expect("flushing the test producer");
}
