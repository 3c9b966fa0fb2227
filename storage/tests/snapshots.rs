//! Snapshot round trips and incremental chains against a `BTreeMap` model, through the real
//! log (write, publish, recover, read in place), plus compaction folding a chain into a base.

mod common;
use common::*;
use proptest::prelude::*;
use rill_storage::*;
use std::collections::BTreeMap;

#[derive(Clone, Debug)]
enum Op {
    Put(u16, u64),
    Del(u16),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (any::<u16>(), any::<u64>()).prop_map(|(k, v)| Op::Put(k % 300, v)),
        any::<u16>().prop_map(|k| Op::Del(k % 300))
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn full_snapshot_round_trip(map in proptest::collection::btree_map(any::<u64>(), any::<u64>(), 0..500)) {
        let mut entries: Vec<(u64, u64)> = map.iter().rev().map(|(k, v)| (*k, *v)).collect();
        let bytes = archive_full(&mut entries).unwrap();
        let view = FullView::<u64, u64>::from_bytes(&bytes).unwrap();
        prop_assert_eq!(view.len(), map.len());
        for (k, v) in &map {
            prop_assert_eq!(view.get(k).map(|x| x.to_native()), Some(*v));
        }
        let back: BTreeMap<u64, u64> = view.iter().map(|(k, v)| (k.to_native(), v.to_native())).collect();
        prop_assert_eq!(back, map);
    }

    #[test]
    fn archive_bit_flips_never_panic(map in proptest::collection::btree_map(any::<u64>(), any::<u64>(), 1..50),
                                     bit in any::<prop::sample::Index>()) {
        let mut entries: Vec<(u64, u64)> = map.into_iter().collect();
        let bytes = archive_full(&mut entries).unwrap();
        let mut b = rkyv::util::AlignedVec::<16>::new();
        b.extend_from_slice(&bytes);
        let i = bit.index(b.len() * 8);
        b[i / 8] ^= 1 << (i % 8);
        // Validation either rejects the bytes or yields a view that is safe to use.
        if let Ok(v) = FullView::<u64, u64>::from_bytes(&b) {
            let _ = v.iter().count();
        }
    }

    /// Checkpoints of random operations: each either a full snapshot or a delta, restored
    /// after every step through publish + recover and compared with the model; every few
    /// steps the chain is compacted by folding it into a new base.
    #[test]
    fn incremental_chains_match_the_model(steps in proptest::collection::vec(
        (proptest::collection::vec(op(), 0..40), 0u8..4), 1..8)) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let store = CheckpointStore::new(root);
        let o = owner(0);
        let mut model: BTreeMap<u64, u64> = BTreeMap::new();
        let mut chain: Vec<RecordRef> = Vec::new();
        for (n, (ops, mode)) in steps.iter().enumerate() {
            let id = CheckpointId(n as u64 + 1);
            // Every step is a restart: a fresh writer after recovery, as after a crash.
            let log = std_writer(root, 0);
            let mut changed: BTreeMap<u64, Option<u64>> = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Put(k, v) => { model.insert(u64::from(*k), *v); changed.insert(u64::from(*k), Some(*v)); }
                    Op::Del(k) => { model.remove(&u64::from(*k)); changed.insert(u64::from(*k), None); }
                }
            }
            let record = if chain.is_empty() || *mode == 0 {
                let mut entries: Vec<(u64, u64)> = model.iter().map(|(k, v)| (*k, *v)).collect();
                let r = block_on(log.append_full(id, o, &archive_full(&mut entries).unwrap())).unwrap();
                chain.clear();
                r
            } else if *mode == 1 && chain.len() > 1 {
                // Compaction: fold the restored chain plus this step's changes into a base.
                let c = store.load(CheckpointId(n as u64)).unwrap();
                let view = ChainView::<u64, u64>::open(c.chain(&o).unwrap()).unwrap();
                let mut folded: BTreeMap<u64, u64> = view.fold().unwrap().into_iter().collect();
                for (k, v) in &changed {
                    match v { Some(v) => { folded.insert(*k, *v); } None => { folded.remove(k); } }
                }
                prop_assert_eq!(&folded, &model);
                let mut entries: Vec<(u64, u64)> = folded.into_iter().collect();
                let r = block_on(log.append_full(id, o, &archive_full(&mut entries).unwrap())).unwrap();
                chain.clear();
                r
            } else {
                let mut ups: Vec<(u64, u64)> = changed.iter().filter_map(|(k, v)| v.map(|v| (*k, v))).collect();
                let mut dels: Vec<u64> = changed.iter().filter(|(_, v)| v.is_none()).map(|(k, _)| *k).collect();
                let base = chain[0].checkpoint;
                block_on(log.append_delta(id, base, o, &archive_delta(&mut ups, &mut dels).unwrap())).unwrap()
            };
            block_on(log.close()).unwrap();
            chain.push(record);
            store.publish(&Manifest::new(id, chain.clone(), vec![])).unwrap();
            store.retain(2, &Default::default()).unwrap();

            let rec = recover(root).unwrap();
            let c = rec.checkpoint.unwrap();
            prop_assert_eq!(c.id(), id);
            let view = ChainView::<u64, u64>::open(c.chain(&o).unwrap()).unwrap();
            prop_assert_eq!(view.depth() + 1, chain.len());
            for k in 0..300u64 {
                prop_assert_eq!(view.get(&k).map(|v| v.to_native()), model.get(&k).copied(), "key {}", k);
            }
            let entries: BTreeMap<u64, u64> = view.entries().iter().map(|(k, v)| (k.to_native(), v.to_native())).collect();
            prop_assert_eq!(&entries, &model);
        }
    }
}

#[test]
fn a_large_snapshot_is_read_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let log = std_writer(dir.path(), 1);
    let mut entries: Vec<(u64, u64)> = (0..200_000u64).map(|k| (k * 3, k)).collect();
    let bytes = archive_full(&mut entries).unwrap();
    let r = block_on(log.append_full(CheckpointId(1), owner(0), &bytes)).unwrap();
    let reader = LogReader::new(dir.path());
    let rec = reader.read(&r).unwrap();
    // The payload is the mapped file's bytes, not a copy: same address on a second read.
    let again = reader.read(&r).unwrap();
    assert_eq!(rec.payload().as_ptr(), again.payload().as_ptr());
    assert_eq!(
        rec.payload().as_ptr() as usize % 16,
        0,
        "payload is 16-byte aligned"
    );
    let view = FullView::<u64, u64>::open(&rec).unwrap();
    assert_eq!(view.get(&(3 * 12_345)).map(|v| v.to_native()), Some(12_345));
    assert_eq!(view.get(&1), None);
}
