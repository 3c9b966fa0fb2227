//! The few bytes of the Kafka protocol that rill speaks itself, over a plain
//! `TcpStream`: one Fetch request (v4, read_uncommitted, control batches included) and
//! the record batches (v2) of its answer.
//!
//! Owns: [`fetch`] (the request and the part of the response a raw reader needs) and
//! [`parse_batches`] (headers, control markers, and uncompressed records). Used by the
//! Kafka sink's recovery (`rill-kafka`: how a transaction ended, from its marker in the
//! log) and by the test kit and benchmark (`rill_testkit::kafka_log`: the committed view
//! rebuilt from the markers).
//!
//! Must not: depend on a Kafka client library, or decompress (a caller that needs the
//! records of compressed batches is told so by [`WireError`]).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// A record's key and value as stored.
pub type KeyValue = (Option<Vec<u8>>, Option<Vec<u8>>);

/// What went wrong talking to the broker.
#[derive(Debug)]
pub enum WireError {
    /// The connection failed.
    Io(std::io::Error),
    /// The broker answered something this reader does not understand or accept.
    Protocol(String),
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WireError::Io(e) => write!(f, "{e}"),
            WireError::Protocol(r) => f.write_str(r),
        }
    }
}

impl std::error::Error for WireError {}

impl From<std::io::Error> for WireError {
    fn from(e: std::io::Error) -> Self {
        WireError::Io(e)
    }
}

impl From<String> for WireError {
    fn from(r: String) -> Self {
        WireError::Protocol(r)
    }
}

/// One Fetch of one topic partition.
#[derive(Clone, Copy, Debug)]
pub struct Fetch<'a> {
    /// The request's correlation id (checked against the answer's).
    pub correlation: i32,
    /// The client id the broker sees.
    pub client_id: &'a str,
    /// The topic.
    pub topic: &'a str,
    /// The partition.
    pub partition: i32,
    /// The first offset wanted.
    pub offset: i64,
    /// How long the broker may wait for `min_bytes`.
    pub max_wait: Duration,
    /// How many bytes the broker waits for (0: answer at once).
    pub min_bytes: i32,
}

/// A Fetch's answer for its partition.
#[derive(Debug)]
pub struct Fetched {
    /// The partition's high watermark.
    pub high_watermark: i64,
    /// The record batches' bytes (the last batch may be cut: [`parse_batches`] leaves it).
    pub records: Vec<u8>,
}

/// Sends `req` (Fetch v4, read_uncommitted: transaction markers are what raw readers look
/// for) on `s` and reads its answer. `None` when the answer names no topic: Tansu answers
/// so a fetch that waited for nothing.
pub fn fetch(s: &mut TcpStream, req: &Fetch<'_>) -> Result<Option<Fetched>, WireError> {
    let mut b = Vec::new();
    b.extend_from_slice(&1i16.to_be_bytes()); // Fetch
    b.extend_from_slice(&4i16.to_be_bytes()); // v4
    b.extend_from_slice(&req.correlation.to_be_bytes());
    put_str(&mut b, req.client_id);
    b.extend_from_slice(&(-1i32).to_be_bytes()); // replica_id
    let wait_ms = i32::try_from(req.max_wait.as_millis()).unwrap_or(i32::MAX);
    b.extend_from_slice(&wait_ms.to_be_bytes());
    b.extend_from_slice(&req.min_bytes.to_be_bytes());
    b.extend_from_slice(&(16i32 << 20).to_be_bytes()); // max_bytes
    b.push(0); // isolation_level: read_uncommitted
    b.extend_from_slice(&1i32.to_be_bytes());
    put_str(&mut b, req.topic);
    b.extend_from_slice(&1i32.to_be_bytes());
    b.extend_from_slice(&req.partition.to_be_bytes());
    b.extend_from_slice(&req.offset.to_be_bytes());
    b.extend_from_slice(&(8i32 << 20).to_be_bytes()); // partition_max_bytes
    let mut frame = (b.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(&b);
    s.write_all(&frame)?;
    let mut len = [0u8; 4];
    s.read_exact(&mut len)?;
    let len = usize::try_from(i32::from_be_bytes(len))
        .map_err(|_| "negative response length".to_string())?;
    let mut r = vec![0u8; len];
    s.read_exact(&mut r)?;
    let mut c = Cur(&r, 0);
    if c.i32()? != req.correlation {
        return Err("the answer's correlation id is not the request's"
            .to_string()
            .into());
    }
    c.i32()?; // throttle
    let topics = c.i32()?;
    if topics == 0 {
        return Ok(None);
    }
    c.str()?;
    if topics != 1 || c.i32()? != 1 || c.i32()? != req.partition {
        return Err(format!(
            "not the partition asked for ({}/{})",
            req.topic, req.partition
        )
        .into());
    }
    let err = c.i16()?;
    if err != 0 {
        return Err(format!("fetch error code {err} for {}/{}", req.topic, req.partition).into());
    }
    let high_watermark = c.i64()?;
    c.i64()?; // last stable offset
    let aborted = c.i32()?;
    for _ in 0..aborted.max(0) {
        c.i64()?;
        c.i64()?;
    }
    let n = c.i32()?;
    let records = if n > 0 {
        c.take(n as usize)?.to_vec()
    } else {
        Vec::new()
    };
    Ok(Some(Fetched {
        high_watermark,
        records,
    }))
}

fn put_str(b: &mut Vec<u8>, s: &str) {
    b.extend_from_slice(&(s.len() as i16).to_be_bytes());
    b.extend_from_slice(s.as_bytes());
}

/// One record batch as stored.
#[derive(Debug, PartialEq, Eq)]
pub struct Batch {
    /// Offset of its first record.
    pub base_offset: i64,
    /// Offset of its last record.
    pub last_offset: i64,
    /// Written inside a transaction.
    pub transactional: bool,
    /// A control batch (a transaction marker).
    pub control: bool,
    /// The producer id.
    pub producer_id: i64,
    /// The producer epoch.
    pub producer_epoch: i16,
    /// (key, value) of each record: always for a control batch; for a data batch only
    /// with [`Records::All`].
    pub records: Vec<KeyValue>,
}

impl Batch {
    /// A control batch's marker type (its first record's key: version i16, type i16):
    /// 0 abort, 1 commit. `None` for a data batch.
    pub fn control_type(&self) -> Option<i16> {
        if !self.control {
            return None;
        }
        match self.records.first() {
            Some((Some(key), _)) if key.len() >= 4 => Some(i16::from_be_bytes([key[2], key[3]])),
            _ => None,
        }
    }
}

/// Which records [`parse_batches`] decodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Records {
    /// Those of control batches only (never compressed); data batches' are skipped, so
    /// compressed ones are fine.
    ControlOnly,
    /// Every batch's; a compressed data batch is an error.
    All,
}

/// The complete record batches (v2) in a Fetch's records bytes; a partial batch at the end
/// (cut by the response size) is left for the next fetch.
pub fn parse_batches(data: &[u8], which: Records) -> Result<Vec<Batch>, String> {
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
        let mut records = Vec::new();
        if control || which == Records::All {
            if attrs & 0x7 != 0 {
                return Err(format!(
                    "batch at offset {base_offset} is compressed (codec {}); only uncompressed \
                     records are decoded",
                    attrs & 0x7
                ));
            }
            for _ in 0..n {
                c.varint()?; // record length
                c.take(1)?; // attributes
                c.varint()?; // timestamp delta
                c.varint()?; // offset delta
                let key = c.bytes_varint()?;
                let value = c.bytes_varint()?;
                for _ in 0..c.varint()? {
                    c.bytes_varint()?;
                    c.bytes_varint()?;
                }
                records.push((key, value));
            }
            if c.1 != end {
                return Err(format!(
                    "batch at offset {base_offset}: records do not fill its length"
                ));
            }
        }
        c.1 = end;
        out.push(Batch {
            base_offset,
            last_offset: base_offset + i64::from(last_delta),
            transactional: attrs & 0x10 != 0,
            control,
            producer_id,
            producer_epoch,
            records,
        });
    }
    Ok(out)
}

/// A reader over a response's bytes; every read checks the length.
struct Cur<'a>(&'a [u8], usize);

impl<'a> Cur<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let s = self
            .0
            .get(self.1..self.1.saturating_add(n))
            .ok_or_else(|| "truncated response".to_string())?;
        self.1 += n;
        Ok(s)
    }
    fn i16(&mut self) -> Result<i16, String> {
        Ok(i16::from_be_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
    }
    fn i32(&mut self) -> Result<i32, String> {
        Ok(i32::from_be_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn i64(&mut self) -> Result<i64, String> {
        Ok(i64::from_be_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
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
    fn bytes_varint(&mut self) -> Result<Option<Vec<u8>>, String> {
        let n = self.varint()?;
        if n < 0 {
            return Ok(None);
        }
        Ok(Some(self.take(n as usize)?.to_vec()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A v2 batch of `n` records (value "v", null key), or a control batch of `kind`;
    /// `codec` sets the compression bits (the records stay plain: a parser must not read
    /// them).
    fn batch(
        base: i64,
        pid: i64,
        epoch: i16,
        txn: bool,
        control: Option<i16>,
        n: i32,
        codec: i16,
    ) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(&0i32.to_be_bytes()); // leader epoch
        body.push(2);
        body.extend_from_slice(&0u32.to_be_bytes()); // crc (not checked)
        let attrs: i16 =
            (if txn { 0x10 } else { 0 }) | (if control.is_some() { 0x20 } else { 0 }) | codec;
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
    fn headers_markers_and_records_parse_and_a_cut_batch_waits() {
        let mut data = batch(0, 7, 1, true, None, 3, 0);
        data.extend(batch(3, 8, 0, false, None, 1, 0));
        data.extend(batch(4, 7, 1, true, Some(1), 1, 0));
        data.extend(batch(5, 7, 2, true, Some(0), 1, 0));
        let full = parse_batches(&data, Records::All).unwrap();
        assert_eq!(full.len(), 4);
        assert_eq!((full[0].base_offset, full[0].last_offset), (0, 2));
        assert!(full[0].transactional && !full[0].control);
        assert_eq!(full[0].control_type(), None);
        assert_eq!(full[0].records, vec![(None, Some(b"v".to_vec())); 3]);
        assert!(!full[1].transactional);
        assert_eq!((full[2].producer_id, full[2].control_type()), (7, Some(1)));
        assert_eq!(
            (full[3].producer_epoch, full[3].control_type()),
            (2, Some(0))
        );
        let headers = parse_batches(&data, Records::ControlOnly).unwrap();
        assert!(headers[0].records.is_empty());
        assert_eq!(headers[2].control_type(), Some(1));
        // Cut anywhere inside the last batch: the complete ones only.
        let last = batch(5, 7, 2, true, Some(0), 1, 0).len();
        for cut in 1..last {
            let got = parse_batches(&data[..data.len() - cut], Records::All).unwrap();
            assert_eq!(got, full[..3], "cut {cut} bytes");
        }
    }

    #[test]
    fn compressed_data_batches_are_skipped_for_markers_and_refused_for_records() {
        let mut data = batch(0, 7, 1, true, None, 2, 1);
        data.extend(batch(2, 7, 1, true, Some(1), 1, 0));
        let got = parse_batches(&data, Records::ControlOnly).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].control_type(), Some(1));
        let err = parse_batches(&data, Records::All).unwrap_err();
        assert!(err.contains("compressed"), "{err}");
    }

    #[test]
    fn a_batch_with_a_bad_format_or_length_is_an_error() {
        let mut data = batch(0, 7, 1, true, None, 1, 0);
        data[16] = 1; // magic
        assert!(parse_batches(&data, Records::All)
            .unwrap_err()
            .contains("format 1"));
        let mut data = batch(0, 7, 1, true, None, 1, 0);
        let len = i32::from_be_bytes(data[8..12].try_into().unwrap());
        data[8..12].copy_from_slice(&(len + 1).to_be_bytes());
        data.push(0);
        assert!(parse_batches(&data, Records::All)
            .unwrap_err()
            .contains("fill"));
    }
}
