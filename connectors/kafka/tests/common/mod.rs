//! Helpers of the Kafka tests: producing input with a plain client, and reading a topic
//! RAW to rebuild what was committed from the transaction markers per producer, as a
//! `read_committed` client would (both in `rill_testkit`, shared with the jobs that use
//! the connector). The broker's own `read_committed` is not used: Tansu does not hide
//! aborted records.

#![allow(dead_code)]

pub use rill_testkit::kafka_log::{read_raw, rebuild};

/// Produces `values` to `topic` (key = value, so they spread over partitions) and waits
/// until all are acknowledged.
pub fn produce(brokers: &str, topic: &str, values: impl IntoIterator<Item = String>) {
    rill_testkit::kafka_client::produce(
        brokers,
        topic,
        values
            .into_iter()
            .map(|v| (Some(v.clone().into_bytes()), v.into_bytes())),
    );
}
