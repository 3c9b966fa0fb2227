//! Framing round trips and corrupt inputs: every bit flip and every truncation of a record is
//! reported as corruption, garbage never panics, a wrong version is named.

use proptest::prelude::*;
use rill_storage::frame::{decode, encode_into, scan, ScanEnd, FORMAT_VERSION};
use rill_storage::*;

fn spec_strategy() -> impl Strategy<Value = RecordSpec> {
    (
        0u8..3,
        any::<u64>(),
        any::<u64>(),
        any::<u32>(),
        any::<u32>(),
        any::<u32>(),
        any::<u32>(),
    )
        .prop_map(|(k, c, b, op, p, s, e)| RecordSpec {
            kind: [RecordKind::Full, RecordKind::Delta, RecordKind::Blob][k as usize],
            checkpoint: CheckpointId(c),
            base: CheckpointId(b),
            owner: Owner {
                operator: OperatorId(op),
                partition: PartitionId(p),
                key_groups: KeyGroupRange { start: s, end: e },
            },
        })
}

proptest! {
    #[test]
    fn round_trip(spec in spec_strategy(), lsn in any::<u64>(), core in any::<u32>(),
                  payload in proptest::collection::vec(any::<u8>(), 0..2000)) {
        let mut buf = Vec::new();
        let h = encode_into(&mut buf, &spec, Lsn(lsn), CoreId(core), &payload);
        prop_assert_eq!(buf.len() % 16, 0);
        let (d, p) = decode(&buf).unwrap();
        prop_assert_eq!(d, h);
        prop_assert_eq!(p, &payload[..]);
        prop_assert_eq!((d.kind, d.checkpoint, d.base, d.owner, d.lsn, d.core),
                        (spec.kind, spec.checkpoint, spec.base, spec.owner, Lsn(lsn), CoreId(core)));
    }

    #[test]
    fn any_bit_flip_is_detected(spec in spec_strategy(), payload in proptest::collection::vec(any::<u8>(), 0..300),
                                bit in any::<prop::sample::Index>()) {
        let mut buf = Vec::new();
        let h = encode_into(&mut buf, &spec, Lsn(0), CoreId(0), &payload);
        let len = h.record_len() as usize;
        let i = bit.index(len * 8);
        buf[i / 8] ^= 1 << (i % 8);
        prop_assert!(decode(&buf[..len]).is_err());
    }

    #[test]
    fn any_truncation_is_detected(payload in proptest::collection::vec(any::<u8>(), 0..300), cut in any::<prop::sample::Index>()) {
        let mut buf = Vec::new();
        let h = encode_into(&mut buf, &RecordSpec::blob(CheckpointId(1), Owner::default()), Lsn(0), CoreId(0), &payload);
        let cut = cut.index(h.record_len() as usize);
        prop_assert!(decode(&buf[..cut]).is_err());
    }

    #[test]
    fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600), base in any::<u64>()) {
        let _ = decode(&bytes);
        let s = scan(&bytes, Lsn(base));
        prop_assert!(s.valid_end <= bytes.len() as u64);
    }

    #[test]
    fn scan_finds_every_record_and_stops_at_a_torn_one(
        payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 1..8),
        cut in any::<prop::sample::Index>()) {
        let mut buf = Vec::new();
        let mut ends = Vec::new(); // (end of the record's bytes, end of its alignment padding)
        for p in &payloads {
            let lsn = Lsn(1000 + buf.len() as u64);
            let h = encode_into(&mut buf, &RecordSpec::blob(CheckpointId(1), Owner::default()), lsn, CoreId(0), p);
            ends.push((lsn.0 - 1000 + h.record_len(), buf.len() as u64));
        }
        let s = scan(&buf, Lsn(1000));
        prop_assert_eq!(s.records.len(), payloads.len());
        prop_assert_eq!(s.end, ScanEnd::Clean);
        let cut = cut.index(buf.len()) as u64;
        let torn = scan(&buf[..cut as usize], Lsn(1000));
        let whole = ends.iter().filter(|e| e.0 <= cut).count();
        prop_assert_eq!(torn.records.len(), whole);
        prop_assert_eq!(torn.valid_end, if whole == 0 { 0 } else { ends[whole - 1].1.min(cut) });
    }
}

#[test]
fn wrong_version_and_kind_are_named() {
    let mut buf = Vec::new();
    encode_into(
        &mut buf,
        &RecordSpec::blob(CheckpointId(1), Owner::default()),
        Lsn(0),
        CoreId(0),
        b"x",
    );
    let mut v = buf.clone();
    v[4..6].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
    assert_eq!(
        decode(&v).unwrap_err(),
        Corruption::UnsupportedVersion {
            found: FORMAT_VERSION + 1,
            supported: FORMAT_VERSION
        }
    );
    let mut k = buf.clone();
    k[6] = 200;
    assert_eq!(
        decode(&k).unwrap_err(),
        Corruption::UnknownKind { found: 200 }
    );
    assert!(matches!(
        decode(&[0u8; 10]).unwrap_err(),
        Corruption::TruncatedHeader { .. }
    ));
}
