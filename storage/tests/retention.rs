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

fn facts() -> impl Strategy<
    Value = (
        Vec<ManifestFacts>,
        Vec<SegmentFacts>,
        BTreeSet<CheckpointId>,
    ),
> {
    let segs = proptest::collection::vec(
        (0u32..2, proptest::option::of(1u64..22), any::<bool>()),
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
    let in_flight = proptest::collection::btree_set(1u64..22, 0..3);
    (segs, mans, in_flight).prop_map(|(segs, mans, in_flight)| {
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
        let manifests: Vec<ManifestFacts> = mans
            .iter()
            .enumerate()
            .map(|(i, (valid, savepoint, refs))| ManifestFacts {
                // Odd ids: the even ones between may be in flight.
                checkpoint: CheckpointId(2 * i as u64 + 1),
                valid: *valid || i == 0,
                savepoint: *savepoint,
                segments: refs
                    .iter()
                    .filter_map(|r| segments.get(*r))
                    .map(|s| (s.core, s.base))
                    .collect(),
            })
            .collect();
        // In flight: checkpoints without a manifest.
        let in_flight = in_flight
            .into_iter()
            .map(CheckpointId)
            .filter(|c| manifests.iter().all(|m| m.checkpoint != *c))
            .collect();
        (manifests, segments, in_flight)
    })
}

proptest! {
    #[test]
    fn plan_follows_the_rules((manifests, segments, in_flight) in facts(), keep in 1usize..4) {
        let p = plan(&manifests, &segments, keep, &in_flight);
        let mut valid: Vec<&ManifestFacts> = manifests.iter().filter(|m| m.valid).collect();
        valid.sort_by_key(|m| std::cmp::Reverse(m.checkpoint));
        let pred = |c: CheckpointId| valid.iter().map(|m| m.checkpoint).find(|m| *m < c);
        let mut want: BTreeSet<CheckpointId> = valid.iter().enumerate()
            .filter(|(i, m)| *i < keep || m.savepoint).map(|(_, m)| m.checkpoint).collect();
        want.extend(in_flight.iter().filter_map(|c| pred(*c)));
        prop_assert_eq!(p.keep.iter().copied().collect::<BTreeSet<_>>(), want.clone());
        let newest = want.iter().max().copied();
        let mut floor = newest.unwrap_or(CheckpointId(0));
        for c in &in_flight {
            floor = floor.min(pred(*c).unwrap_or(CheckpointId(0)));
        }
        let referenced: BTreeSet<(CoreId, Lsn)> = manifests.iter()
            .filter(|m| want.contains(&m.checkpoint) || m.savepoint)
            .flat_map(|m| m.segments.iter().copied()).collect();
        let deleted: BTreeSet<(CoreId, Lsn)> = p.delete_segments.iter().copied().collect();
        for s in &segments {
            let may_go = !s.newest_of_core && !s.unreadable && !referenced.contains(&(s.core, s.base))
                && s.max_checkpoint.is_none_or(|m| m <= floor);
            prop_assert_eq!(deleted.contains(&(s.core, s.base)), may_go, "{:?}", s);
        }
        for m in &manifests {
            let gone = p.delete_manifests.contains(&m.checkpoint);
            prop_assert!(!(gone && want.contains(&m.checkpoint)));
            prop_assert!(!(gone && m.savepoint), "a savepoint is never deleted");
            if !m.valid && newest.is_none_or(|n| m.checkpoint > n) {
                prop_assert!(!gone, "an invalid manifest newer than every kept one stays for inspection");
            }
        }
    }
}

/// The rules against what they are for, over every order in which five concurrent
/// checkpoints can complete, with a savepoint at each position: one core writes each
/// checkpoint's record in id order into a segment of its own (every third a full
/// snapshot, the others deltas over it), so a checkpoint's chain includes records of
/// older ones. A periodic checkpoint still in flight when a newer one completes is
/// subsumed (aborted); a savepoint never is. Retention runs after every completion with
/// what is then in flight. Every checkpoint still in flight, and every kept one, must find
/// all its segments; once nothing is in flight, only referenced segments remain.
#[test]
fn retention_is_safe_whatever_order_checkpoints_complete_in() {
    const N: u64 = 5;
    let seg = |c: u64| (CoreId(0), Lsn(c * 4096));
    // chain[c]: the segments checkpoint c's manifest references.
    let mut chain: BTreeMap<u64, BTreeSet<(CoreId, Lsn)>> = BTreeMap::new();
    let mut current = BTreeSet::new();
    for c in 1..=N {
        if c % 3 == 1 {
            current.clear();
        }
        current.insert(seg(c));
        chain.insert(c, current.clone());
    }
    let mut orders: Vec<Vec<u64>> = vec![vec![]];
    for _ in 0..N {
        orders = orders
            .iter()
            .flat_map(|o| {
                (1..=N)
                    .filter(|c| !o.contains(c))
                    .map(|c| o.iter().copied().chain([c]).collect::<Vec<_>>())
                    .collect::<Vec<_>>()
            })
            .collect();
    }
    let mut cases = 0;
    for order in &orders {
        for savepoint in 1..=N {
            for keep in 1..=2 {
                cases += 1;
                let case = format!("order {order:?}, savepoint {savepoint}, keep {keep}");
                // Segment N + 1 is the core's newest (being written).
                let mut on_disk: BTreeSet<(CoreId, Lsn)> = (1..=N + 1).map(seg).collect();
                let mut manifests: BTreeMap<u64, ManifestFacts> = BTreeMap::new();
                let mut in_flight: BTreeSet<u64> = (1..=N).collect();
                let run = |in_flight: &BTreeSet<u64>,
                           manifests: &mut BTreeMap<u64, ManifestFacts>,
                           on_disk: &mut BTreeSet<(CoreId, Lsn)>| {
                    let facts: Vec<ManifestFacts> = manifests.values().cloned().collect();
                    let segments: Vec<SegmentFacts> = on_disk
                        .iter()
                        .map(|&(core, base)| SegmentFacts {
                            core,
                            base,
                            newest_of_core: base == seg(N + 1).1,
                            max_checkpoint: (base.0 <= N * 4096)
                                .then_some(CheckpointId(base.0 / 4096)),
                            unreadable: false,
                        })
                        .collect();
                    let ids = in_flight.iter().copied().map(CheckpointId).collect();
                    let p = plan(&facts, &segments, keep, &ids);
                    for c in &p.delete_manifests {
                        manifests.remove(&c.0);
                    }
                    for s in &p.delete_segments {
                        on_disk.remove(s);
                    }
                };
                for &done in order {
                    if !in_flight.remove(&done) {
                        continue; // subsumed earlier
                    }
                    assert!(
                        chain[&done].is_subset(&on_disk),
                        "{case}: checkpoint {done} completes naming deleted segments"
                    );
                    manifests.insert(
                        done,
                        ManifestFacts {
                            checkpoint: CheckpointId(done),
                            valid: true,
                            savepoint: done == savepoint,
                            segments: chain[&done].clone(),
                        },
                    );
                    in_flight.retain(|c| *c > done || *c == savepoint);
                    run(&in_flight, &mut manifests, &mut on_disk);
                    for c in in_flight.iter().chain(manifests.keys()) {
                        assert!(
                            chain[c].is_subset(&on_disk),
                            "{case}: after {done} completed, retention deleted a segment \
                             checkpoint {c} needs"
                        );
                    }
                    if manifests.contains_key(&savepoint) {
                        assert!(chain[&savepoint].is_subset(&on_disk), "{case}");
                    }
                }
                assert!(in_flight.is_empty(), "{case}");
                run(&in_flight, &mut manifests, &mut on_disk);
                let referenced: BTreeSet<_> = manifests
                    .values()
                    .flat_map(|m| m.segments.iter().copied())
                    .collect();
                for s in &on_disk {
                    assert!(
                        *s == seg(N + 1) || referenced.contains(s),
                        "{case}: {s:?} is left although nothing references it"
                    );
                }
            }
        }
    }
    assert_eq!(cases, 120 * 5 * 2);
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
        let report = store.retain(keep, &BTreeSet::new()).unwrap();

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

/// Checkpoints 3 and 4 complete (a chain: full 3, delta 4); savepoint 5 (delta on 3) is
/// written but still in flight when checkpoint 6 (a new full snapshot) completes first —
/// `max_concurrent > 1`, and savepoints are never subsumed. Every record has a segment of
/// its own. Returns the root's records: (f3, d4, d5, f6).
fn out_of_order_with_a_savepoint_in_flight(root: &std::path::Path) -> [RecordRef; 4] {
    let payload = vec![9u8; 40 << 10];
    let w = std_writer(root, 0);
    let o = owner(0);
    let c = CheckpointId;
    let f3 = block_on(w.append(RecordSpec::full(c(3), o), &payload)).unwrap();
    let d4 = block_on(w.append(RecordSpec::delta(c(4), c(3), o), &payload)).unwrap();
    let d5 = block_on(w.append(RecordSpec::delta(c(5), c(3), o), &payload)).unwrap();
    let f6 = block_on(w.append(RecordSpec::full(c(6), o), &payload)).unwrap();
    let b6 = block_on(w.append(RecordSpec::blob(c(6), owner(1)), &payload)).unwrap();
    block_on(w.close()).unwrap();
    let segs: BTreeSet<Lsn> = [f3, d4, d5, f6, b6].iter().map(|r| r.segment).collect();
    assert_eq!(segs.len(), 5, "every record sits in a segment of its own");
    let store = CheckpointStore::new(root);
    store
        .publish(&Manifest::new(c(3), vec![f3], vec![]))
        .unwrap();
    store
        .publish(&Manifest::new(c(4), vec![f3, d4], vec![]))
        .unwrap();
    store
        .publish(&Manifest::new(c(6), vec![f6, b6], vec![]))
        .unwrap();
    [f3, d4, d5, f6]
}

fn publish_savepoint(root: &std::path::Path, records: Vec<RecordRef>) {
    let mut m = Manifest::new(CheckpointId(5), records, vec![]);
    m.savepoint = true;
    CheckpointStore::new(root).publish(&m).unwrap();
}

/// Retention assumed checkpoints complete in id order: with checkpoint 6 complete it
/// deleted every segment of older checkpoints nothing kept referenced, among them the
/// in-flight savepoint 5's own record and the base of its chain; the savepoint then
/// completed naming deleted segments.
#[test]
fn an_in_flight_savepoint_survives_retention_after_a_newer_checkpoint_completes_first() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let [f3, d4, d5, _] = out_of_order_with_a_savepoint_in_flight(root);
    CheckpointStore::new(root)
        .retain(1, &[CheckpointId(5)].into())
        .unwrap();
    publish_savepoint(root, vec![f3, d4, d5]);
    let store = CheckpointStore::new(root);
    let sp = store
        .load(CheckpointId(5))
        .expect("the savepoint loads after retention ran while it was in flight");
    assert_eq!(sp.chain(&owner(0)).unwrap().len(), 3);
    // Once it is complete, retention keeps it (a savepoint) and the newest checkpoint.
    store.retain(1, &BTreeSet::new()).unwrap();
    store.load(CheckpointId(5)).unwrap();
    store.load(CheckpointId(6)).unwrap();
}

/// The same directory, but checkpoint 5 was aborted (it is not in flight): its record and
/// the chain it extended are garbage once checkpoint 6 is the one kept.
#[test]
fn a_dead_checkpoint_s_segments_are_freed() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let [f3, d4, d5, f6] = out_of_order_with_a_savepoint_in_flight(root);
    let report = CheckpointStore::new(root)
        .retain(1, &BTreeSet::new())
        .unwrap();
    let gone: BTreeSet<Lsn> = report.plan.delete_segments.iter().map(|s| s.1).collect();
    assert_eq!(gone, [f3.segment, d4.segment, d5.segment].into());
    assert_eq!(report.plan.keep, vec![CheckpointId(6)]);
    assert!(layout::segment_path(root, CoreId(0), f6.segment).exists());
}
