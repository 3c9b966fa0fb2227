//! Reading a Kafka topic partition RAW over the Kafka protocol (Fetch v4,
//! read_uncommitted, record batches v2 with their control batches) and rebuilding what
//! was committed from the transaction markers per producer session, as a
//! `read_committed` client would. The broker's own `read_committed` is not relied on:
//! Tansu hides neither aborted nor still-open transactional records.
//!
//! Owns: [`Markers`], the per-producer bookkeeping that releases a transaction's records
//! at its commit marker, and the readers over `rill_kafka_wire` (the Fetch and record
//! batch codec it shares with the Kafka sink's recovery). Used by the Kafka tests (whole-log
//! checks: [`read_raw`] then [`rebuild`]) and by the benchmark harness (a tailing
//! [`RawReader`] whose [`Markers`] tell when records became visible).
//!
//! Must not: depend on a Kafka client library; it speaks the protocol over a plain
//! `TcpStream` so that what it reports is what the broker stored.

use std::collections::HashMap;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use rill_kafka_wire::{fetch, parse_batches, Fetch, Records};
pub use rill_kafka_wire::{Batch, KeyValue};

/// What a batch did to the committed view, as [`Markers::push`] reports it.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Pushed {
    /// Values that became visible to a read_committed reader (a commit marker's
    /// transaction, or a non-transactional batch), in log order.
    pub committed: Vec<Vec<u8>>,
    /// Values of a transaction that an abort marker ended.
    pub aborted: Vec<Vec<u8>>,
    /// Commit markers in this batch.
    pub commits: usize,
}

/// The open transactions of one partition, per producer session (id, epoch): a marker
/// ends the transaction of its own session only. A session fenced without an abort
/// marker (Tansu writes none when a restarted producer's `init_transactions` fences a
/// dead one) never commits: its records stay in [`Markers::open`].
#[derive(Debug, Default)]
pub struct Markers {
    pending: HashMap<(i64, i16), Vec<Vec<u8>>>,
}

impl Markers {
    /// Takes the next batch of the partition (log order).
    pub fn push(&mut self, b: &Batch) -> Pushed {
        let mut out = Pushed::default();
        let values = |b: &Batch| {
            b.records
                .iter()
                .map(|(_, v)| v.clone().unwrap_or_default())
                .collect::<Vec<_>>()
        };
        if b.control {
            for (key, _) in &b.records {
                let key = key.as_ref().expect("a control record has a key");
                assert!(key.len() >= 4, "control record key too short");
                let kind = i16::from_be_bytes([key[2], key[3]]);
                let vals = self
                    .pending
                    .remove(&(b.producer_id, b.producer_epoch))
                    .unwrap_or_default();
                match kind {
                    0 => out.aborted.extend(vals),
                    1 => {
                        out.committed.extend(vals);
                        out.commits += 1;
                    }
                    k => panic!("unknown control record type {k}"),
                }
            }
        } else if b.transactional {
            self.pending
                .entry((b.producer_id, b.producer_epoch))
                .or_default()
                .extend(values(b));
        } else {
            out.committed.extend(values(b));
        }
        out
    }

    /// Values of transactions without a marker so far.
    pub fn open(&self) -> impl Iterator<Item = &Vec<u8>> {
        self.pending.values().flatten()
    }
}

/// What a topic partition holds, rebuilt from its batches.
#[derive(Debug, Default)]
pub struct Rebuilt {
    /// Values visible to a read_committed reader, in log order.
    pub committed: Vec<Vec<u8>>,
    /// Values of aborted transactions.
    pub aborted: Vec<Vec<u8>>,
    /// Values of transactions still open (no marker yet).
    pub open: Vec<Vec<u8>>,
    /// Commit markers seen.
    pub commits: usize,
}

/// Rebuilds committed/aborted/open values from `batches` (one partition, log order).
pub fn rebuild(batches: &[Batch]) -> Rebuilt {
    let mut out = Rebuilt::default();
    let mut m = Markers::default();
    for b in batches {
        let p = m.push(b);
        out.committed.extend(p.committed);
        out.aborted.extend(p.aborted);
        out.commits += p.commits;
    }
    out.open = m.open().cloned().collect();
    out
}

/// Every batch of `topic`/`partition`, read raw (read_uncommitted) from offset 0 to the
/// high watermark.
pub fn read_raw(addr: &str, topic: &str, partition: i32) -> Vec<Batch> {
    let mut r = RawReader::connect(addr, topic, partition);
    let mut batches = Vec::new();
    for round in 1.. {
        let (high, got) = r.fetch(Duration::from_millis(100), 0);
        let empty = got.is_empty();
        batches.extend(got);
        if r.offset >= high {
            break;
        }
        assert!(
            !empty || round < 200,
            "no progress reading {topic}/{partition} raw at {} < {high}",
            r.offset
        );
    }
    batches
}

/// Tails one topic partition raw from an offset (read_uncommitted, control batches
/// included).
pub struct RawReader {
    stream: TcpStream,
    topic: String,
    partition: i32,
    correlation: i32,
    /// The next offset to fetch.
    pub offset: i64,
    /// Since when the broker has answered with a gap after `offset`.
    gap_since: Option<Instant>,
}

/// How long [`RawReader::fetch`] waits for a gap in a partition's offsets to fill.
const GAP_WAIT: Duration = Duration::from_secs(2);

impl RawReader {
    /// Connects to the broker at `addr`; reads from offset 0.
    pub fn connect(addr: &str, topic: &str, partition: i32) -> Self {
        let stream = TcpStream::connect(addr).expect("connecting to the broker");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        stream.set_nodelay(true).unwrap();
        Self {
            stream,
            topic: topic.to_string(),
            partition,
            correlation: 0,
            offset: 0,
            gap_since: None,
        }
    }

    /// One Fetch from the current offset, waiting up to `max_wait` at the broker for
    /// `min_bytes`: the high watermark and the complete batches, after which the offset
    /// is advanced past them.
    pub fn fetch(&mut self, max_wait: Duration, min_bytes: i32) -> (i64, Vec<Batch>) {
        self.correlation += 1;
        let req = Fetch {
            correlation: self.correlation,
            client_id: "rill-raw-reader",
            topic: &self.topic,
            partition: self.partition,
            offset: self.offset,
            max_wait,
            min_bytes,
        };
        let what = format!(
            "{}/{} from offset {}",
            self.topic, self.partition, self.offset
        );
        let Some(fetched) =
            fetch(&mut self.stream, &req).unwrap_or_else(|e| panic!("fetching {what}: {e}"))
        else {
            // Tansu answers a fetch that waited (min_bytes > 0) for nothing with no topics.
            return (self.offset, Vec::new());
        };
        let high = fetched.high_watermark;
        let mut got = parse_batches(&fetched.records, Records::All)
            .unwrap_or_else(|e| panic!("parsing {what}: {e}"));
        // Only what continues where the reader is: Tansu can make a later batch of a
        // partition fetchable before an earlier one (two producers writing at once;
        // the tailing consumers of rill-bench kafka skipped thousands of records this
        // way, all of them in the topic when it was read again). A gap is waited out
        // for GAP_WAIT, then taken as real (offsets a broker never fills).
        let mut next = self.offset;
        let contiguous = got
            .iter()
            .take_while(|b| {
                let ok = b.base_offset <= next;
                if ok {
                    next = next.max(b.last_offset + 1);
                }
                ok
            })
            .count();
        if contiguous < got.len() {
            let since = *self.gap_since.get_or_insert_with(Instant::now);
            if since.elapsed() < GAP_WAIT {
                got.truncate(contiguous);
            } else {
                self.gap_since = None;
            }
        } else {
            self.gap_since = None;
        }
        if let Some(last) = got.last() {
            self.offset = last.last_offset + 1;
        }
        (high, got)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(pid: i64, epoch: i16, txn: bool, values: &[&str]) -> Batch {
        Batch {
            base_offset: 0,
            last_offset: 0,
            transactional: txn,
            control: false,
            producer_id: pid,
            producer_epoch: epoch,
            records: values
                .iter()
                .map(|v| (None, Some(v.as_bytes().to_vec())))
                .collect(),
        }
    }

    fn marker(pid: i64, epoch: i16, commit: bool) -> Batch {
        Batch {
            control: true,
            transactional: true,
            records: vec![(Some(vec![0, 0, 0, u8::from(commit)]), None)],
            ..batch(pid, epoch, true, &[])
        }
    }

    #[test]
    fn markers_release_a_session_at_its_own_commit_only() {
        let mut m = Markers::default();
        assert!(m.push(&batch(1, 0, true, &["a"])).committed.is_empty());
        assert!(m.push(&batch(2, 0, true, &["b"])).committed.is_empty());
        assert_eq!(
            m.push(&batch(3, 0, false, &["c"])).committed,
            [b"c".to_vec()]
        );
        // A marker of another epoch of producer 1 does not end epoch 0's transaction.
        let p = m.push(&marker(1, 1, true));
        assert!(p.committed.is_empty());
        assert_eq!(p.commits, 1);
        let p = m.push(&marker(2, 0, true));
        assert_eq!(p.committed, [b"b".to_vec()]);
        let p = m.push(&marker(1, 0, false));
        assert_eq!(p.aborted, [b"a".to_vec()]);
        assert_eq!(m.open().count(), 0);
        let r = rebuild(&[
            batch(5, 0, true, &["x"]),
            batch(6, 0, true, &["y"]),
            marker(6, 0, true),
        ]);
        assert_eq!(r.committed, [b"y".to_vec()]);
        assert_eq!(r.open, [b"x".to_vec()]);
        assert_eq!(r.commits, 1);
    }
}
