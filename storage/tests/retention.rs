//! Retention against a model: the pure plan's rules over random facts, and a real directory
//! where incremental chains, savepoints and rolled segments meet `retain(N)` — every kept
//! checkpoint still loads with exactly the model's state, bases of live chains survive, and
//! segments only dropped checkpoints used are deleted.

mod common;
use common::*;
use proptest::prelude::*;
use rill_storage::retention::{plan, ManifestFacts, SegmentFacts};
use rill_storage::*;
use std::collections::{BTreeMap, BTreeSet};

fn facts() -> impl Strategy<Value = (Vec<ManifestFacts>, Vec<SegmentFacts>)> {
    let segs = proptest::collection::vec(
        (0u32..2, proptest::option::of(1u64..12), any::<bool>()),
        1..12,
    );
    let mans = proptest::collection::vec(
        (
            any::<bool>(),
            proptest::bool::weighted(0.2),
            proptest::collection::vec(0usize..12, 0..4),
        ),
        0..10,
    );
    (segs, mans).prop_map(|(segs, mans)| {
        let mut segments: Vec<SegmentFacts> = segs
            .iter()
            .enumerate()
            .map(|(i, (core, max, unreadable))| SegmentFacts {
                core: CoreId(*core),
                base: Lsn(i as u64 * 4096),
                newest_of_core: false,
                max_checkpoint: max.map(CheckpointId),
                unreadable: *unreadable && i % 5 == 0,
            })
            .collect();
        for core in 0..2 {
            if let Some(s) = segments.iter_mut().rev().find(|s| s.core == CoreId(core)) {
                s.newest_of_core = true;
            }
        }
        let manifests = mans
            .iter()
            .enumerate()
            .map(|(i, (valid, savepoint, refs))| ManifestFacts {
                checkpoint: CheckpointId(i as u64 + 1),
                valid: *valid || i == 0,
                savepoint: *savepoint,
                segments: refs
                    .iter()
                    .filter_map(|r| segments.get(*r))
                    .map(|s| (s.core, s.base))
                    .collect(),
            })
            .collect();
        (manifests, segments)
    })
}

proptest! {
    #[test]
    fn plan_follows_the_rules((manifests, segments) in facts(), keep in 1usize..4) {
        let p = plan(&manifests, &segments, keep);
        let mut valid: Vec<&ManifestFacts> = manifests.iter().filter(|m| m.valid).collect();
        valid.sort_by_key(|m| std::cmp::Reverse(m.checkpoint));
        let want: BTreeSet<CheckpointId> = valid.iter().enumerate()
            .filter(|(i, m)| *i < keep || m.savepoint).map(|(_, m)| m.checkpoint).collect();
        prop_assert_eq!(p.keep.iter().copied().collect::<BTreeSet<_>>(), want.clone());
        let newest = want.iter().max().copied();
        let referenced: BTreeSet<(CoreId, Lsn)> = manifests.iter().filter(|m| want.contains(&m.checkpoint))
            .flat_map(|m| m.segments.iter().copied()).collect();
        let deleted: BTreeSet<(CoreId, Lsn)> = p.delete_segments.iter().copied().collect();
        for s in &segments {
            let may_go = !s.newest_of_core && !s.unreadable && !referenced.contains(&(s.core, s.base))
                && s.max_checkpoint.is_none_or(|m| newest.is_some_and(|n| m <= n));
            prop_assert_eq!(deleted.contains(&(s.core, s.base)), may_go, "{:?}", s);
        }
        for m in &manifests {
            let gone = p.delete_manifests.contains(&m.checkpoint);
            prop_assert!(!(gone && want.contains(&m.checkpoint)));
            if !m.valid && newest.is_none_or(|n| m.checkpoint > n) {
                prop_assert!(!gone, "an invalid manifest newer than every kept one stays for inspection");
            }
        }
    }
}

#[test]
fn retention_keeps_chains_and_savepoints_and_frees_the_rest() {
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(7);
    use rand::Rng;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let store = CheckpointStore::new(root);
    let keep = 2;
    let mut models: BTreeMap<CheckpointId, Vec<BTreeMap<u64, u64>>> = BTreeMap::new();
    let mut state: Vec<BTreeMap<u64, u64>> = vec![BTreeMap::new(); 3];
    let mut chains: Vec<Vec<RecordRef>> = vec![Vec::new(); 3];
    // Changes since the last *published* checkpoint: a failed checkpoint's changes go into
    // the next delta, as an engine must do.
    let mut pending: Vec<BTreeMap<u64, Option<u64>>> = vec![BTreeMap::new(); 3];
    let mut savepoints = BTreeSet::new();
    let logs = [std_writer(root, 0), std_writer(root, 1)];
    for n in 1..=40u64 {
        let id = CheckpointId(n);
        for o in 0..3u32 {
            let mut ups: Vec<(u64, u64)> = (0..rng.gen_range(1..200))
                .map(|_| (rng.gen_range(0..3000), n))
                .collect();
            ups.sort();
            ups.dedup_by_key(|e| e.0);
            let mut dels: Vec<u64> = (0..5)
                .map(|_| rng.gen_range(0..3000))
                .filter(|k| ups.binary_search_by_key(k, |e| e.0).is_err())
                .collect();
            dels.sort();
            dels.dedup();
            for k in &dels {
                state[o as usize].remove(k);
                pending[o as usize].insert(*k, None);
            }
            state[o as usize].extend(ups.iter().copied());
            pending[o as usize].extend(ups.iter().map(|(k, v)| (*k, Some(*v))));
            let log = &logs[(o % 2) as usize];
            let full = chains[o as usize].is_empty() || rng.gen_ratio(1, 5);
            let r = if full {
                let mut e: Vec<(u64, u64)> =
                    state[o as usize].iter().map(|(k, v)| (*k, *v)).collect();
                chains[o as usize].clear();
                block_on(log.append_full(id, owner(o), &archive_full(&mut e).unwrap())).unwrap()
            } else {
                let base = chains[o as usize][0].checkpoint;
                let p = &pending[o as usize];
                let mut ups: Vec<(u64, u64)> =
                    p.iter().filter_map(|(k, v)| v.map(|v| (*k, v))).collect();
                let mut dels: Vec<u64> = p
                    .iter()
                    .filter(|(_, v)| v.is_none())
                    .map(|(k, _)| *k)
                    .collect();
                block_on(log.append_delta(
                    id,
                    base,
                    owner(o),
                    &archive_delta(&mut ups, &mut dels).unwrap(),
                ))
                .unwrap()
            };
            chains[o as usize].push(r);
        }
        // Some checkpoints fail (records written, manifest never published).
        if rng.gen_ratio(1, 6) {
            for c in &mut chains {
                c.retain(|r| r.checkpoint != id);
            }
            continue;
        }
        store
            .publish(&Manifest::new(
                id,
                chains.iter().flatten().copied().collect(),
                vec![],
            ))
            .unwrap();
        pending.iter_mut().for_each(BTreeMap::clear);
        models.insert(id, state.clone());
        if rng.gen_ratio(1, 10) {
            store.mark_savepoint(id).unwrap();
            savepoints.insert(id);
        }
        let report = store.retain(keep).unwrap();

        // Model: newest `keep` published plus savepoints.
        let published: Vec<CheckpointId> = models.keys().rev().copied().collect();
        let want: BTreeSet<CheckpointId> = published
            .iter()
            .take(keep)
            .copied()
            .chain(savepoints.iter().copied())
            .collect();
        let listed: BTreeSet<CheckpointId> = store
            .list()
            .unwrap()
            .into_iter()
            .map(|i| i.checkpoint)
            .collect();
        assert_eq!(listed, want, "after {id}: {report:?}");
        for c in &want {
            let cp = store.load(*c).unwrap();
            for o in 0..3u32 {
                let view = ChainView::<u64, u64>::open(cp.chain(&owner(o)).unwrap()).unwrap();
                let got: BTreeMap<u64, u64> = view
                    .entries()
                    .iter()
                    .map(|(k, v)| (k.to_native(), v.to_native()))
                    .collect();
                assert!(
                    got == models[c][o as usize],
                    "{c} owner {o}: restored state differs from the model"
                );
            }
        }
        // Everything on disk is needed: referenced, newest of its core, or newer than kept.
        let referenced: BTreeSet<(CoreId, Lsn)> = want
            .iter()
            .flat_map(|c| {
                manifest::load(root, *c)
                    .unwrap()
                    .segments()
                    .collect::<Vec<_>>()
            })
            .collect();
        for core in layout::list_cores(root).unwrap() {
            let segs = layout::list_segments(root, core).unwrap();
            for s in &segs[..segs.len() - 1] {
                assert!(
                    referenced.contains(&(core, *s)),
                    "after {id}: {core} segment {s} should have been deleted"
                );
            }
        }
    }
    assert!(!savepoints.is_empty());
}
