//! How a transaction ended, read from the topic partition's log itself.
//!
//! Owns: [`outcome`], which fetches a partition raw (Fetch v4, read_uncommitted, control
//! batches included) from the offset of one record a transaction wrote, takes the
//! producer session (id, epoch) of the batch holding it, and looks for that session's
//! next transaction marker: commit, abort, or none up to the high watermark. Also the
//! few bytes of the Fetch codec and the record batch (v2) header that this needs.
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

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use rdkafka::client::Client;
use rdkafka::ClientContext;

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
        let got = fetch(&mut s, corr, topic, partition, at).map_err(|e| match e {
            FetchError::Io(e) => io(e),
            FetchError::Protocol(r) => bad(r),
        })?;
        let Some((high, data)) = got else {
            // Tansu answers a fetch it had nothing for within its wait with no topics.
            if Instant::now() > give_up {
                return Err(bad(format!("no answer to a fetch from offset {at}")));
            }
            continue;
        };
        let batches = parse_headers(&data).map_err(bad)?;
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
                return match b.control_type {
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

enum FetchError {
    Io(std::io::Error),
    Protocol(String),
}

impl From<std::io::Error> for FetchError {
    fn from(e: std::io::Error) -> Self {
        FetchError::Io(e)
    }
}

fn put_str(b: &mut Vec<u8>, s: &str) {
    b.extend_from_slice(&(s.len() as i16).to_be_bytes());
    b.extend_from_slice(s.as_bytes());
}

/// One Fetch v4 (read_uncommitted) of `topic`/`partition` from `offset`: the high
/// watermark and the records bytes, or `None` when the answer names no topic.
fn fetch(
    s: &mut TcpStream,
    corr: i32,
    topic: &str,
    partition: i32,
    offset: i64,
) -> Result<Option<(i64, Vec<u8>)>, FetchError> {
    let mut b = Vec::new();
    b.extend_from_slice(&1i16.to_be_bytes()); // Fetch
    b.extend_from_slice(&4i16.to_be_bytes()); // v4
    b.extend_from_slice(&corr.to_be_bytes());
    put_str(&mut b, "rill-kafka-sink-recovery");
    b.extend_from_slice(&(-1i32).to_be_bytes()); // replica_id
                                                 // Waits up to 100 ms for 1 byte: Tansu answers a fetch that does not wait with no
                                                 // data even where there is some.
    b.extend_from_slice(&100i32.to_be_bytes()); // max_wait_ms
    b.extend_from_slice(&1i32.to_be_bytes()); // min_bytes
    b.extend_from_slice(&(16i32 << 20).to_be_bytes()); // max_bytes
    b.push(0); // isolation_level: read_uncommitted (markers are what we look for)
    b.extend_from_slice(&1i32.to_be_bytes());
    put_str(&mut b, topic);
    b.extend_from_slice(&1i32.to_be_bytes());
    b.extend_from_slice(&partition.to_be_bytes());
    b.extend_from_slice(&offset.to_be_bytes());
    b.extend_from_slice(&(8i32 << 20).to_be_bytes()); // partition_max_bytes
    let mut frame = (b.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(&b);
    s.write_all(&frame)?;
    let mut len = [0u8; 4];
    s.read_exact(&mut len)?;
    let len = usize::try_from(i32::from_be_bytes(len))
        .map_err(|_| FetchError::Protocol("negative response length".into()))?;
    let mut r = vec![0u8; len];
    s.read_exact(&mut r)?;
    let p = |e: String| FetchError::Protocol(e);
    let mut c = Cur(&r, 0);
    if c.i32().map_err(p)? != corr {
        return Err(p("correlation id".into()));
    }
    c.i32().map_err(p)?; // throttle
    let topics = c.i32().map_err(p)?;
    if topics == 0 {
        return Ok(None);
    }
    c.str().map_err(p)?;
    if c.i32().map_err(p)? != 1 || c.i32().map_err(p)? != partition {
        return Err(p("not the partition asked for".into()));
    }
    let err = c.i16().map_err(p)?;
    if err != 0 {
        return Err(p(format!("fetch error code {err}")));
    }
    let high = c.i64().map_err(p)?;
    c.i64().map_err(p)?; // last stable offset
    let aborted = c.i32().map_err(p)?;
    for _ in 0..aborted.max(0) {
        c.i64().map_err(p)?;
        c.i64().map_err(p)?;
    }
    let n = c.i32().map_err(p)?;
    let data = if n > 0 {
        c.take(n as usize).map_err(p)?.to_vec()
    } else {
        Vec::new()
    };
    Ok(Some((high, data)))
}

struct Cur<'a>(&'a [u8], usize);

impl<'a> Cur<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let s = self
            .0
            .get(self.1..self.1 + n)
            .ok_or_else(|| "truncated response".to_string())?;
        self.1 += n;
        Ok(s)
    }
    fn i16(&mut self) -> Result<i16, String> {
        Ok(i16::from_be_bytes(self.take(2)?.try_into().expect("2")))
    }
    fn i32(&mut self) -> Result<i32, String> {
        Ok(i32::from_be_bytes(self.take(4)?.try_into().expect("4")))
    }
    fn i64(&mut self) -> Result<i64, String> {
        Ok(i64::from_be_bytes(self.take(8)?.try_into().expect("8")))
    }
    fn str(&mut self) -> Result<(), String> {
        let n = self.i16()?;
        self.take(n.max(0) as usize).map(drop)
    }
    fn varint(&mut self) -> Result<i64, String> {
        let (mut v, mut shift) = (0u64, 0);
        loop {
            let b = self.take(1)?[0];
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                break;
            }
            shift += 7;
            if shift > 63 {
                return Err("varint too long".into());
            }
        }
        Ok(((v >> 1) as i64) ^ -((v & 1) as i64))
    }
}

/// A record batch's header (and, for a control batch, its marker's type).
#[derive(Debug, PartialEq, Eq)]
struct Header {
    base_offset: i64,
    last_offset: i64,
    transactional: bool,
    control: bool,
    producer_id: i64,
    producer_epoch: i16,
    /// A control batch's record key type: 0 abort, 1 commit.
    control_type: Option<i16>,
}

/// The headers of the complete record batches (v2) in a fetch's records bytes; a partial
/// batch at the end (cut by the response size) is left for the next fetch.
fn parse_headers(data: &[u8]) -> Result<Vec<Header>, String> {
    let mut out = Vec::new();
    let mut c = Cur(data, 0);
    while data.len() - c.1 >= 12 {
        let base_offset = c.i64()?;
        let len = usize::try_from(c.i32()?).map_err(|_| "negative batch length")?;
        if data.len() - c.1 < len {
            break;
        }
        let end = c.1 + len;
        c.i32()?; // partition leader epoch
        let magic = c.take(1)?[0];
        if magic != 2 {
            return Err(format!("record batch format {magic} (only 2 is read)"));
        }
        c.take(4)?; // crc
        let attrs = c.i16()?;
        let last_delta = c.i32()?;
        c.i64()?; // first timestamp
        c.i64()?; // max timestamp
        let producer_id = c.i64()?;
        let producer_epoch = c.i16()?;
        c.i32()?; // base sequence
        let n = c.i32()?;
        let control = attrs & 0x20 != 0;
        let mut control_type = None;
        if control && n >= 1 {
            // Control batches are never compressed: the first record's key is
            // (version i16, type i16).
            c.varint()?; // record length
            c.take(1)?; // attributes
            c.varint()?; // timestamp delta
            c.varint()?; // offset delta
            let klen = c.varint()?;
            if klen >= 4 {
                let key = c.take(klen as usize)?;
                control_type = Some(i16::from_be_bytes([key[2], key[3]]));
            }
        }
        c.1 = end;
        out.push(Header {
            base_offset,
            last_offset: base_offset + i64::from(last_delta),
            transactional: attrs & 0x10 != 0,
            control,
            producer_id,
            producer_epoch,
            control_type,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A v2 batch: `records` (key, value) uncompressed, or a control batch of `kind`.
    fn batch(base: i64, pid: i64, epoch: i16, txn: bool, control: Option<i16>, n: i32) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(&0i32.to_be_bytes()); // leader epoch
        body.push(2);
        body.extend_from_slice(&0u32.to_be_bytes()); // crc (not checked)
        let attrs: i16 = (if txn { 0x10 } else { 0 }) | (if control.is_some() { 0x20 } else { 0 });
        body.extend_from_slice(&attrs.to_be_bytes());
        body.extend_from_slice(&(n - 1).to_be_bytes());
        body.extend_from_slice(&0i64.to_be_bytes());
        body.extend_from_slice(&0i64.to_be_bytes());
        body.extend_from_slice(&pid.to_be_bytes());
        body.extend_from_slice(&epoch.to_be_bytes());
        body.extend_from_slice(&0i32.to_be_bytes());
        body.extend_from_slice(&n.to_be_bytes());
        for i in 0..n {
            let mut rec = vec![0u8, 0, (2 * i) as u8]; // attrs, ts delta, offset delta
            match control {
                Some(kind) => {
                    rec.push(8); // key length 4 (zigzag)
                    rec.extend_from_slice(&0i16.to_be_bytes());
                    rec.extend_from_slice(&kind.to_be_bytes());
                }
                None => rec.push(1), // null key
            }
            rec.extend_from_slice(&[2, b'v', 0]); // value "v", no headers
            body.push((2 * rec.len()) as u8);
            body.extend_from_slice(&rec);
        }
        let mut b = base.to_be_bytes().to_vec();
        b.extend_from_slice(&(body.len() as i32).to_be_bytes());
        b.extend_from_slice(&body);
        b
    }

    #[test]
    fn batch_headers_and_marker_types_parse_and_a_cut_batch_waits() {
        let mut data = batch(0, 7, 1, true, None, 3);
        data.extend(batch(3, 8, 0, false, None, 1));
        data.extend(batch(4, 7, 1, true, Some(1), 1));
        data.extend(batch(5, 7, 2, true, Some(0), 1));
        let full = parse_headers(&data).unwrap();
        assert_eq!(full.len(), 4);
        assert_eq!((full[0].base_offset, full[0].last_offset), (0, 2));
        assert!(full[0].transactional && !full[0].control);
        assert_eq!(full[0].control_type, None);
        assert!(!full[1].transactional);
        assert_eq!((full[2].producer_id, full[2].control_type), (7, Some(1)));
        assert_eq!((full[3].producer_epoch, full[3].control_type), (2, Some(0)));
        // Cut anywhere inside the last batch: the complete ones only.
        let last = batch(5, 7, 2, true, Some(0), 1).len();
        for cut in 1..last {
            let got = parse_headers(&data[..data.len() - cut]).unwrap();
            assert_eq!(got, full[..3], "cut {cut} bytes");
        }
    }
}
