//! Helpers of the Kafka tests: producing input with a plain client, and reading a topic
//! RAW over the Kafka protocol (Fetch v4, read_uncommitted, record batches v2 with their
//! control batches) to rebuild what was committed from the transaction markers per
//! producer, as a `read_committed` client would. The broker's own `read_committed` is not
//! used: Tansu does not hide aborted records.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

/// Produces `values` to `topic` (key = value, so they spread over partitions) and waits
/// until all are acknowledged.
pub fn produce(brokers: &str, topic: &str, values: impl IntoIterator<Item = String>) {
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        .create()
        .expect("creating the test producer");
    for v in values {
        let mut rec = BaseRecord::to(topic)
            .key(v.as_bytes())
            .payload(v.as_bytes());
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

/// A record's key and value as stored.
pub type KeyValue = (Option<Vec<u8>>, Option<Vec<u8>>);

/// One record batch as stored.
#[derive(Debug)]
pub struct Batch {
    pub base_offset: i64,
    pub last_offset: i64,
    pub transactional: bool,
    pub control: bool,
    pub producer_id: i64,
    pub producer_epoch: i16,
    /// (key, value) of each record.
    pub records: Vec<KeyValue>,
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
    // Per producer session (id and epoch): a marker ends the transaction of its own
    // session only. A session fenced without an abort marker (Tansu writes none when a
    // restarted producer's init_transactions fences a dead one) never commits.
    let mut pending: HashMap<(i64, i16), Vec<Vec<u8>>> = HashMap::new();
    for b in batches {
        if b.control {
            for (key, _) in &b.records {
                let key = key.as_ref().expect("a control record has a key");
                assert!(key.len() >= 4, "control record key too short");
                let kind = i16::from_be_bytes([key[2], key[3]]);
                let vals = pending
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
            pending
                .entry((b.producer_id, b.producer_epoch))
                .or_default()
                .extend(b.records.iter().map(|(_, v)| v.clone().unwrap_or_default()));
        } else {
            out.committed
                .extend(b.records.iter().map(|(_, v)| v.clone().unwrap_or_default()));
        }
    }
    for (_, v) in pending {
        out.open.extend(v);
    }
    out
}

/// Every batch of `topic`/`partition`, read raw (read_uncommitted) from offset 0 to the
/// high watermark.
pub fn read_raw(addr: &str, topic: &str, partition: i32) -> Vec<Batch> {
    let mut s = TcpStream::connect(addr).expect("connecting to the broker");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut batches = Vec::new();
    let mut offset = 0i64;
    for corr in 1.. {
        let (high, data) = fetch(&mut s, corr, topic, partition, offset);
        let got = parse_batches(&data);
        if let Some(last) = got.last() {
            offset = last.last_offset + 1;
        }
        let empty = got.is_empty();
        batches.extend(got);
        if offset >= high {
            break;
        }
        assert!(
            !empty || corr < 200,
            "no progress reading {topic}/{partition} raw at {offset} < {high}"
        );
    }
    batches
}

fn put_str(b: &mut Vec<u8>, s: &str) {
    b.extend_from_slice(&(s.len() as i16).to_be_bytes());
    b.extend_from_slice(s.as_bytes());
}

/// One Fetch v4 of `topic`/`partition` from `offset`: (high watermark, records bytes).
fn fetch(s: &mut TcpStream, corr: i32, topic: &str, partition: i32, offset: i64) -> (i64, Vec<u8>) {
    let mut b = Vec::new();
    b.extend_from_slice(&1i16.to_be_bytes()); // Fetch
    b.extend_from_slice(&4i16.to_be_bytes()); // v4
    b.extend_from_slice(&corr.to_be_bytes());
    put_str(&mut b, "rill-raw-reader");
    b.extend_from_slice(&(-1i32).to_be_bytes()); // replica_id
    b.extend_from_slice(&100i32.to_be_bytes()); // max_wait_ms
    b.extend_from_slice(&0i32.to_be_bytes()); // min_bytes
    b.extend_from_slice(&(16i32 << 20).to_be_bytes()); // max_bytes
    b.push(0); // isolation_level: read_uncommitted
    b.extend_from_slice(&1i32.to_be_bytes());
    put_str(&mut b, topic);
    b.extend_from_slice(&1i32.to_be_bytes());
    b.extend_from_slice(&partition.to_be_bytes());
    b.extend_from_slice(&offset.to_be_bytes());
    b.extend_from_slice(&(8i32 << 20).to_be_bytes()); // partition_max_bytes
    let mut frame = (b.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(&b);
    s.write_all(&frame).expect("sending a fetch");
    let mut len = [0u8; 4];
    s.read_exact(&mut len).expect("reading a fetch response");
    let mut r = vec![0u8; i32::from_be_bytes(len) as usize];
    s.read_exact(&mut r).expect("reading a fetch response");
    let mut c = Cur(&r, 0);
    assert_eq!(c.i32(), corr, "correlation id");
    c.i32(); // throttle
    assert_eq!(c.i32(), 1, "one topic");
    c.str();
    assert_eq!(c.i32(), 1, "one partition");
    assert_eq!(c.i32(), partition);
    let err = c.i16();
    assert_eq!(err, 0, "fetch error code {err} for {topic}/{partition}");
    let high = c.i64();
    c.i64(); // last stable offset
    let aborted = c.i32();
    for _ in 0..aborted.max(0) {
        c.i64();
        c.i64();
    }
    let n = c.i32();
    let data = if n > 0 {
        c.take(n as usize).to_vec()
    } else {
        Vec::new()
    };
    (high, data)
}

struct Cur<'a>(&'a [u8], usize);

impl<'a> Cur<'a> {
    fn take(&mut self, n: usize) -> &'a [u8] {
        let s = &self.0[self.1..self.1 + n];
        self.1 += n;
        s
    }
    fn i16(&mut self) -> i16 {
        i16::from_be_bytes(self.take(2).try_into().unwrap())
    }
    fn i32(&mut self) -> i32 {
        i32::from_be_bytes(self.take(4).try_into().unwrap())
    }
    fn i64(&mut self) -> i64 {
        i64::from_be_bytes(self.take(8).try_into().unwrap())
    }
    fn str(&mut self) -> String {
        let n = self.i16();
        String::from_utf8(self.take(n as usize).to_vec()).unwrap()
    }
    fn varint(&mut self) -> i64 {
        let (mut v, mut shift) = (0u64, 0);
        loop {
            let b = self.take(1)[0];
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                break;
            }
            shift += 7;
        }
        ((v >> 1) as i64) ^ -((v & 1) as i64)
    }
    fn bytes_varint(&mut self) -> Option<Vec<u8>> {
        let n = self.varint();
        (n >= 0).then(|| self.take(n as usize).to_vec())
    }
}

/// The complete record batches (v2, uncompressed) in a fetch's records bytes.
fn parse_batches(data: &[u8]) -> Vec<Batch> {
    let mut out = Vec::new();
    let mut c = Cur(data, 0);
    while data.len() - c.1 >= 12 {
        let start = c.1;
        let base_offset = c.i64();
        let len = c.i32() as usize;
        if data.len() - c.1 < len {
            break; // a partial batch at the end of the response
        }
        c.i32(); // partition leader epoch
        let magic = c.take(1)[0];
        assert_eq!(magic, 2, "record batch v2");
        c.take(4); // crc
        let attrs = c.i16();
        assert_eq!(attrs & 0x7, 0, "uncompressed batches only");
        let last_delta = c.i32();
        c.i64();
        c.i64();
        let producer_id = c.i64();
        let producer_epoch = c.i16();
        c.i32();
        let n = c.i32();
        let mut records = Vec::new();
        for _ in 0..n {
            c.varint(); // length
            c.take(1);
            c.varint();
            c.varint();
            let key = c.bytes_varint();
            let value = c.bytes_varint();
            let headers = c.varint();
            for _ in 0..headers {
                c.bytes_varint();
                c.bytes_varint();
            }
            records.push((key, value));
        }
        assert_eq!(c.1, start + 12 + len, "batch length");
        out.push(Batch {
            base_offset,
            last_offset: base_offset + i64::from(last_delta),
            transactional: attrs & 0x10 != 0,
            control: attrs & 0x20 != 0,
            producer_id,
            producer_epoch,
            records,
        });
    }
    out
}
