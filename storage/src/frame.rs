//! Record framing: the fixed 64-byte header, its CRC32C, encoding into a buffer and
//! validated decoding from untrusted bytes. Pure byte manipulation; no IO, no panics on any
//! input (every length is checked before it is used).

use crate::error::Corruption;
use crate::ids::{CheckpointId, CoreId, KeyGroupRange, Lsn, OperatorId, Owner, PartitionId};
use serde::{Deserialize, Serialize};

/// `b"RILL"` read as a little-endian u32.
pub const MAGIC: u32 = u32::from_le_bytes(*b"RILL");
/// The on-disk format version this build writes and reads.
pub const FORMAT_VERSION: u16 = 1;
/// Size of the record header; the payload starts right after it.
pub const HEADER_LEN: usize = 64;
/// Records start, and payloads therefore start, at multiples of this (rkyv needs at most
/// 16 for the types rill archives; segment files are mapped page-aligned).
pub const RECORD_ALIGN: usize = 16;
/// Offset of the CRC field inside the header.
const CRC_AT: usize = 60;

/// What a record holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RecordKind {
    /// A full snapshot of an owner's state (the base of an incremental chain).
    Full = 1,
    /// Changes since the previous checkpoint of the same owner, chained to a base.
    Delta = 2,
    /// Opaque bytes (operator state that is not a keyed map, channel state, ...).
    Blob = 3,
    /// Filler written so that every flush ends on a block boundary. Never referenced.
    Padding = 4,
    /// A checkpoint manifest (only in manifest files).
    Manifest = 5,
}

impl RecordKind {
    fn from_u8(v: u8) -> Option<RecordKind> {
        Some(match v {
            1 => RecordKind::Full,
            2 => RecordKind::Delta,
            3 => RecordKind::Blob,
            4 => RecordKind::Padding,
            5 => RecordKind::Manifest,
            _ => return None,
        })
    }
}

/// The decoded header of a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// What the record holds.
    pub kind: RecordKind,
    /// Payload length in bytes.
    pub payload_len: u64,
    /// The record's own position (guards against reading a stale record from the wrong
    /// place).
    pub lsn: Lsn,
    /// The checkpoint the record belongs to.
    pub checkpoint: CheckpointId,
    /// For a delta: the checkpoint of its chain's full snapshot. Otherwise equal to
    /// `checkpoint`.
    pub base: CheckpointId,
    /// Whose state it is.
    pub owner: Owner,
    /// The core that wrote it.
    pub core: CoreId,
    /// CRC32C of header bytes `0..60` followed by the payload.
    pub crc: u32,
}

impl Header {
    /// Header plus payload, without the trailing alignment padding.
    pub fn record_len(&self) -> u64 {
        HEADER_LEN as u64 + self.payload_len
    }
}

/// Rounds `v` up to a multiple of `align` (a power of two).
pub fn align_up(v: u64, align: u64) -> u64 {
    debug_assert!(align.is_power_of_two());
    (v + align - 1) & !(align - 1)
}

/// Space a record with `payload_len` bytes of payload takes in a segment, padding included.
pub fn framed_len(payload_len: u64) -> u64 {
    align_up(HEADER_LEN as u64 + payload_len, RECORD_ALIGN as u64)
}

/// `framed_len` for a length read from disk: `None` where it would overflow.
pub fn checked_framed_len(payload_len: u64) -> Option<u64> {
    (HEADER_LEN as u64)
        .checked_add(payload_len)?
        .checked_add(RECORD_ALIGN as u64 - 1)
        .map(|v| v & !(RECORD_ALIGN as u64 - 1))
}

fn put_u16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}
fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}
fn get_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn get_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn get_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// The fields of a record that the caller chooses (everything except length, Lsn and CRC).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordSpec {
    /// What the record holds.
    pub kind: RecordKind,
    /// The checkpoint it belongs to.
    pub checkpoint: CheckpointId,
    /// For a delta, the checkpoint of its chain's base; otherwise `checkpoint`.
    pub base: CheckpointId,
    /// Whose state it is.
    pub owner: Owner,
}

impl RecordSpec {
    /// A full snapshot of `owner` for `checkpoint`.
    pub fn full(checkpoint: CheckpointId, owner: Owner) -> Self {
        RecordSpec {
            kind: RecordKind::Full,
            checkpoint,
            base: checkpoint,
            owner,
        }
    }
    /// A delta of `owner` for `checkpoint`, chained to the full snapshot of `base`.
    pub fn delta(checkpoint: CheckpointId, base: CheckpointId, owner: Owner) -> Self {
        RecordSpec {
            kind: RecordKind::Delta,
            checkpoint,
            base,
            owner,
        }
    }
    /// Opaque bytes of `owner` for `checkpoint`.
    pub fn blob(checkpoint: CheckpointId, owner: Owner) -> Self {
        RecordSpec {
            kind: RecordKind::Blob,
            checkpoint,
            base: checkpoint,
            owner,
        }
    }
}

/// Appends one framed record to `out` (which must currently end at a 16-byte aligned
/// position relative to `lsn`'s segment) and returns its header. Layout, little-endian:
///
/// ```text
///  0        4      6    7    8                 16                24                32
///  +--------+------+----+----+-----------------+-----------------+-----------------+
///  | magic  | ver  |kind|flag|   payload_len   |       lsn       |   checkpoint    |
///  | "RILL" | u16  | u8 | u8 |       u64       |       u64       |       u64       |
///  +--------+------+----+----+-----------------+--------+--------+--------+--------+
///  32                40       44       48       52       56       60       64
///  +-----------------+--------+--------+--------+--------+--------+--------+
///  |  base ckpt u64  |operator|partitn | kg_lo  | kg_hi  |  core  | crc32c |
///  |                 |  u32   |  u32   |  u32   |  u32   |  u32   |  u32   |
///  +-----------------+--------+--------+--------+--------+--------+--------+
///  64: payload (payload_len bytes; 16-byte aligned, so rkyv can read it in place)
///      then zeroes up to the next multiple of 16, where the next record starts.
///  crc32c = CRC32C(header[0..60] ++ payload)
/// ```
pub fn encode_into(
    out: &mut Vec<u8>,
    spec: &RecordSpec,
    lsn: Lsn,
    core: CoreId,
    payload: &[u8],
) -> Header {
    assert_eq!(
        out.len() % RECORD_ALIGN,
        0,
        "record must start 16-byte aligned"
    );
    let start = out.len();
    out.resize(start + HEADER_LEN, 0);
    let h = &mut out[start..start + HEADER_LEN];
    put_u32(h, 0, MAGIC);
    put_u16(h, 4, FORMAT_VERSION);
    h[6] = spec.kind as u8;
    h[7] = 0;
    put_u64(h, 8, payload.len() as u64);
    put_u64(h, 16, lsn.0);
    put_u64(h, 24, spec.checkpoint.0);
    put_u64(h, 32, spec.base.0);
    put_u32(h, 40, spec.owner.operator.0);
    put_u32(h, 44, spec.owner.partition.0);
    put_u32(h, 48, spec.owner.key_groups.start);
    put_u32(h, 52, spec.owner.key_groups.end);
    put_u32(h, 56, core.0);
    let crc = crc32c::crc32c_append(crc32c::crc32c(&h[..CRC_AT]), payload);
    put_u32(h, CRC_AT, crc);
    out.extend_from_slice(payload);
    out.resize(start + framed_len(payload.len() as u64) as usize, 0);
    Header {
        kind: spec.kind,
        payload_len: payload.len() as u64,
        lsn,
        checkpoint: spec.checkpoint,
        base: spec.base,
        owner: spec.owner,
        core,
        crc,
    }
}

/// Parses and checks the header at the start of `bytes` without looking at the payload.
pub fn decode_header(bytes: &[u8]) -> Result<Header, Corruption> {
    if bytes.len() < HEADER_LEN {
        return Err(Corruption::TruncatedHeader {
            needed: HEADER_LEN as u64,
            available: bytes.len() as u64,
        });
    }
    let h = &bytes[..HEADER_LEN];
    let magic = get_u32(h, 0);
    if magic != MAGIC {
        return Err(Corruption::BadMagic { found: magic });
    }
    let version = get_u16(h, 4);
    if version != FORMAT_VERSION {
        return Err(Corruption::UnsupportedVersion {
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    let kind = RecordKind::from_u8(h[6]).ok_or(Corruption::UnknownKind { found: h[6] })?;
    Ok(Header {
        kind,
        payload_len: get_u64(h, 8),
        lsn: Lsn(get_u64(h, 16)),
        checkpoint: CheckpointId(get_u64(h, 24)),
        base: CheckpointId(get_u64(h, 32)),
        owner: Owner {
            operator: OperatorId(get_u32(h, 40)),
            partition: PartitionId(get_u32(h, 44)),
            key_groups: KeyGroupRange {
                start: get_u32(h, 48),
                end: get_u32(h, 52),
            },
        },
        core: CoreId(get_u32(h, 56)),
        crc: get_u32(h, CRC_AT),
    })
}

/// Decodes the record at the start of `bytes`: header checks, bounds check, then CRC.
/// Returns the header and the payload slice (borrowed, never copied).
pub fn decode(bytes: &[u8]) -> Result<(Header, &[u8]), Corruption> {
    let header = decode_header(bytes)?;
    let available = (bytes.len() - HEADER_LEN) as u64;
    if header.payload_len > available {
        return Err(Corruption::TruncatedPayload {
            declared: header.payload_len,
            available,
        });
    }
    let payload = &bytes[HEADER_LEN..HEADER_LEN + header.payload_len as usize];
    let computed = crc32c::crc32c_append(crc32c::crc32c(&bytes[..CRC_AT]), payload);
    if computed != header.crc {
        return Err(Corruption::CrcMismatch {
            stored: header.crc,
            computed,
        });
    }
    Ok((header, payload))
}

/// How a scan of a segment's bytes ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScanEnd {
    /// Every byte was consumed by valid records.
    Clean,
    /// The rest of the bytes (from `valid_end`) are zeroes: preallocated, never written.
    Zeroes,
    /// Invalid bytes start at `valid_end`: a torn tail or corruption.
    Invalid(Corruption),
}

/// Result of scanning a segment: its valid records and where validity ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scan {
    /// Each valid record's offset in the segment and header (padding records included).
    pub records: Vec<(u64, Header)>,
    /// Offset just past the last valid record (aligned): the size a truncation keeps.
    pub valid_end: u64,
    /// Why the scan stopped.
    pub end: ScanEnd,
}

/// Walks the records of one segment whose first byte is at `base`. Stops at the first
/// invalid record; never panics.
pub fn scan(bytes: &[u8], base: Lsn) -> Scan {
    let mut records = Vec::new();
    let mut off = 0usize;
    let end = loop {
        if off >= bytes.len() {
            break ScanEnd::Clean;
        }
        let rest = &bytes[off..];
        match decode(rest) {
            Ok((h, _)) if Some(h.lsn) != base.checked_advance(off as u64) => {
                break ScanEnd::Invalid(Corruption::RefMismatch {
                    field: "lsn",
                    expected: base.0.wrapping_add(off as u64),
                    found: h.lsn.0,
                })
            }
            Ok((h, _)) => {
                records.push((off as u64, h));
                let step = framed_len(h.payload_len);
                off = (off as u64).saturating_add(step).min(bytes.len() as u64) as usize;
            }
            Err(c) => {
                if rest.iter().all(|b| *b == 0) {
                    break ScanEnd::Zeroes;
                }
                break ScanEnd::Invalid(c);
            }
        }
    };
    Scan {
        records,
        valid_end: off as u64,
        end,
    }
}

/// Where a durable record lives and what it must look like: what the writer returns, what a
/// manifest lists and what the reader takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RecordRef {
    /// The core whose log holds it.
    pub core: CoreId,
    /// Base Lsn (file name) of the segment holding it.
    pub segment: Lsn,
    /// The record's position.
    pub lsn: Lsn,
    /// Header plus payload, in bytes.
    pub len: u64,
    /// The record's CRC32C.
    pub crc: u32,
    /// What it holds.
    pub kind: RecordKind,
    /// The checkpoint that wrote it.
    pub checkpoint: CheckpointId,
    /// For a delta, its chain's base checkpoint; otherwise `checkpoint`.
    pub base: CheckpointId,
    /// Whose state it is.
    pub owner: Owner,
}

impl RecordRef {
    /// The reference to the record described by `header`, in segment `segment`.
    pub fn from_header(segment: Lsn, h: &Header) -> Self {
        RecordRef {
            core: h.core,
            segment,
            lsn: h.lsn,
            len: h.record_len(),
            crc: h.crc,
            kind: h.kind,
            checkpoint: h.checkpoint,
            base: h.base,
            owner: h.owner,
        }
    }

    /// Payload length in bytes.
    pub fn payload_len(&self) -> u64 {
        self.len.saturating_sub(HEADER_LEN as u64)
    }

    /// Checks that a decoded header is the record this reference names.
    pub fn check(&self, h: &Header) -> Result<(), Corruption> {
        let fields: [(&'static str, u64, u64); 8] = [
            ("lsn", self.lsn.0, h.lsn.0),
            ("length", self.len, h.record_len()),
            ("crc", self.crc as u64, h.crc as u64),
            ("kind", self.kind as u64, h.kind as u64),
            ("checkpoint", self.checkpoint.0, h.checkpoint.0),
            ("base", self.base.0, h.base.0),
            ("core", self.core.0 as u64, h.core.0 as u64),
            (
                "operator",
                self.owner.operator.0 as u64,
                h.owner.operator.0 as u64,
            ),
        ];
        for (field, expected, found) in fields {
            if expected != found {
                return Err(Corruption::RefMismatch {
                    field,
                    expected,
                    found,
                });
            }
        }
        if self.owner != h.owner {
            return Err(Corruption::RefMismatch {
                field: "owner",
                expected: self.owner.partition.0 as u64,
                found: h.owner.partition.0 as u64,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> RecordSpec {
        RecordSpec::full(
            CheckpointId(7),
            Owner::new(OperatorId(1), PartitionId(2), KeyGroupRange::new(3, 9)),
        )
    }

    #[test]
    fn encode_decode_round_trip() {
        let mut buf = Vec::new();
        let h = encode_into(&mut buf, &spec(), Lsn(4096), CoreId(1), b"hello");
        assert_eq!(buf.len(), 80);
        let (d, p) = decode(&buf).unwrap();
        assert_eq!(d, h);
        assert_eq!(p, b"hello");
    }

    #[test]
    fn scan_stops_at_zeroes_and_garbage() {
        let mut buf = Vec::new();
        encode_into(&mut buf, &spec(), Lsn(0), CoreId(0), b"a");
        let l = buf.len() as u64;
        encode_into(&mut buf, &spec(), Lsn(l), CoreId(0), b"bb");
        let valid = buf.len() as u64;
        buf.resize(buf.len() + 100, 0);
        let s = scan(&buf, Lsn(0));
        assert_eq!(
            (s.records.len(), s.valid_end, s.end),
            (2, valid, ScanEnd::Zeroes)
        );
        buf[valid as usize + 3] = 1;
        assert!(matches!(scan(&buf, Lsn(0)).end, ScanEnd::Invalid(_)));
    }

    #[test]
    fn wrong_version_is_reported() {
        let mut buf = Vec::new();
        encode_into(&mut buf, &spec(), Lsn(0), CoreId(0), b"x");
        buf[4] = 9;
        assert_eq!(
            decode(&buf).unwrap_err(),
            Corruption::UnsupportedVersion {
                found: 9,
                supported: FORMAT_VERSION
            }
        );
    }
}
