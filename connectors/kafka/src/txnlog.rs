//! How a transaction ended, read from the topic partition's log itself.
//!
//! Owns: [`outcome`], which fetches a partition raw (Fetch v4, read_uncommitted, control
//! batches included) from the offset of one record a transaction wrote, takes the
//! producer session (id, epoch) of the batch holding it, and looks for that session's
//! next transaction marker: commit, abort, or none up to the high watermark. The bytes
//! on the wire are `rill_kafka_wire`'s.
//!
//! Why the log and not the client or a consumer group: librdkafka neither resumes another
//! session's transaction nor says how one ended, and the offsets a transaction commits
//! to a consumer group (`send_offsets_to_transaction`) are not a reliable witness: Tansu
//! keeps them back while another transactional producer has an open transaction on the
//! same partitions (and drops them when that producer's next transaction aborts), so a
//! committed transaction could look uncommitted and be produced again. The marker in the
//! log is what every `read_committed` reader goes by.
//!
//! Must not: run on a core (it blocks on a socket: the sink calls it on its helper
//! thread at start-up), or decode data records (they may be compressed; only batch
//! headers and control records are read).

use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use rdkafka::client::Client;
use rdkafka::ClientContext;
use rill_kafka_wire::{fetch, parse_batches, Fetch, Fetched, Records, WireError};

use crate::KafkaError;

/// How the transaction of a producer session that wrote a given record ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// A commit marker of that session follows the record.
    Committed,
    /// An abort marker follows it.
    Aborted,
    /// No marker of that session up to the high watermark. Called after the sink's
    /// `init_transactions` fenced the session, this means it never committed: a broker
    /// completes (writes the markers of) a fenced session's transaction before it answers
    /// the new session's init.
    Unmarked,
}

/// How the transaction holding the record at `topic`/`partition`/`offset` ended, asked of
/// the partition's leader (found through `client`'s metadata).
pub(crate) fn outcome<C: ClientContext>(
    client: &Client<C>,
    topic: &str,
    partition: i32,
    offset: i64,
    timeout: Duration,
) -> Result<Outcome, KafkaError> {
    let leader = leader(client, topic, partition, timeout)?;
    let bad = |reason: String| KafkaError::Log {
        topic: topic.to_string(),
        partition,
        reason,
    };
    let io = |e: std::io::Error| bad(format!("{leader}: {e}"));
    let addr = leader
        .to_socket_addrs()
        .map_err(io)?
        .next()
        .ok_or_else(|| bad(format!("{leader} resolves to no address")))?;
    let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(io)?;
    s.set_read_timeout(Some(timeout)).map_err(io)?;
    s.set_write_timeout(Some(timeout)).map_err(io)?;
    let give_up = Instant::now() + timeout;
    let mut session = None;
    let mut at = offset;
    for corr in 1.. {
        let req = Fetch {
            correlation: corr,
            client_id: "rill-kafka-sink-recovery",
            topic,
            partition,
            offset: at,
            // Waits up to 100 ms for 1 byte: Tansu answers a fetch that does not wait
            // with no data even where there is some.
            max_wait: Duration::from_millis(100),
            min_bytes: 1,
        };
        let got = fetch(&mut s, &req).map_err(|e| match e {
            WireError::Io(e) => io(e),
            WireError::Protocol(r) => bad(r),
        })?;
        let Some(Fetched {
            high_watermark: high,
            records: data,
        }) = got
        else {
            // Tansu answers a fetch it had nothing for within its wait with no topics.
            if Instant::now() > give_up {
                return Err(bad(format!("no answer to a fetch from offset {at}")));
            }
            continue;
        };
        let batches = parse_batches(&data, Records::ControlOnly).map_err(bad)?;
        for b in &batches {
            if b.last_offset < offset {
                continue;
            }
            let Some((pid, epoch)) = session else {
                // The batch holding the record: its session.
                if !b.transactional || b.control || b.base_offset > offset {
                    return Err(bad(format!(
                        "offset {offset} is not in a transactional batch (the batch there \
                         starts at {}, transactional {}, control {})",
                        b.base_offset, b.transactional, b.control
                    )));
                }
                session = Some((b.producer_id, b.producer_epoch));
                continue;
            };
            if b.control && b.producer_id == pid && b.producer_epoch == epoch {
                return match b.control_type() {
                    Some(1) => Ok(Outcome::Committed),
                    Some(0) => Ok(Outcome::Aborted),
                    t => Err(bad(format!("control record of unknown type {t:?}"))),
                };
            }
        }
        if let Some(last) = batches.last() {
            at = at.max(last.last_offset + 1);
        }
        if at >= high {
            return Ok(Outcome::Unmarked);
        }
        if batches.is_empty() || Instant::now() > give_up {
            return Err(bad(format!(
                "no progress reading from offset {at} (high watermark {high})"
            )));
        }
    }
    unreachable!("the loop returns")
}

/// `host:port` of the leader of `topic`/`partition`.
fn leader<C: ClientContext>(
    client: &Client<C>,
    topic: &str,
    partition: i32,
    timeout: Duration,
) -> Result<String, KafkaError> {
    let md = client
        .fetch_metadata(Some(topic), timeout)
        .map_err(KafkaError::client("metadata"))?;
    let id = md
        .topics()
        .iter()
        .filter(|t| t.name() == topic)
        .flat_map(|t| t.partitions())
        .find(|p| p.id() == partition)
        .map(|p| p.leader())
        .ok_or_else(|| KafkaError::Log {
            topic: topic.to_string(),
            partition,
            reason: "no such partition in the metadata".into(),
        })?;
    md.brokers()
        .iter()
        .find(|b| b.id() == id)
        .map(|b| format!("{}:{}", b.host(), b.port()))
        .ok_or_else(|| KafkaError::Log {
            topic: topic.to_string(),
            partition,
            reason: format!("its leader {id} is not among the brokers"),
        })
}
