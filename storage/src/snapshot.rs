//! Typed keyed-state snapshots on top of records: a full snapshot is an rkyv archive of the
//! entries sorted by key, a delta is an archive of (upserted entries, deleted keys) since the
//! previous checkpoint. Views look keys up in place (binary search over the archive, no
//! deserialization); a chain view layers deltas over their base; compaction folds a chain
//! into a new full snapshot. No IO here: bytes in, bytes or views out.

use crate::error::{ChainProblem, Error, Result};
use crate::frame::RecordKind;
use crate::reader::RecordView;
use rkyv::api::high::{HighDeserializer, HighSerializer, HighValidator};
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor;
use rkyv::ser::allocator::ArenaHandle;
use rkyv::tuple::ArchivedTuple2;
use rkyv::util::AlignedVec;
use rkyv::vec::ArchivedVec;
use rkyv::{Archive, Archived, Deserialize, Portable, Serialize};
use std::cmp::Ordering;

/// What a full snapshot archives: entries strictly sorted by key.
pub type FullState<K, V> = Vec<(K, V)>;
/// What a delta archives: upserted entries and deleted keys, each strictly sorted, disjoint.
pub type DeltaState<K, V> = (Vec<(K, V)>, Vec<K>);
type ArchivedEntries<K, V> = ArchivedVec<ArchivedTuple2<Archived<K>, Archived<V>>>;
type ArchivedDelta<K, V> = ArchivedTuple2<ArchivedEntries<K, V>, ArchivedVec<Archived<K>>>;

fn check_sorted<T, K: Ord>(items: &[T], key: impl Fn(&T) -> &K) -> Result<()> {
    match items.windows(2).position(|w| key(&w[0]) >= key(&w[1])) {
        Some(i) => Err(Error::UnsortedEntries { index: i + 1 }),
        None => Ok(()),
    }
}

/// Sorts `entries` by key and archives them as a full snapshot, ready for
/// [`crate::LogWriter::append_full`]. Duplicate keys are an error.
pub fn archive_full<K, V>(entries: &mut FullState<K, V>) -> Result<AlignedVec>
where
    K: Ord,
    FullState<K, V>: for<'a> Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, rancor::Error>>,
{
    entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    check_sorted(entries, |e| &e.0)?;
    rkyv::to_bytes::<rancor::Error>(entries).map_err(|source| Error::Archive { source })
}

/// Sorts and archives a delta: `upserts` changed since the previous checkpoint, `deletes`
/// removed since it. A key in both, or twice in one, is an error.
pub fn archive_delta<K, V>(upserts: &mut Vec<(K, V)>, deletes: &mut Vec<K>) -> Result<AlignedVec>
where
    K: Ord,
    DeltaState<K, V>: for<'a> Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, rancor::Error>>,
{
    upserts.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    deletes.sort_unstable();
    check_sorted(upserts, |e| &e.0)?;
    check_sorted(deletes, |k| k)?;
    let (mut i, mut j) = (0, 0);
    while i < upserts.len() && j < deletes.len() {
        match upserts[i].0.cmp(&deletes[j]) {
            Ordering::Less => i += 1,
            Ordering::Greater => j += 1,
            Ordering::Equal => return Err(Error::UnsortedEntries { index: i }),
        }
    }
    let state = (std::mem::take(upserts), std::mem::take(deletes));
    let bytes = rkyv::to_bytes::<rancor::Error>(&state).map_err(|source| Error::Archive { source });
    (*upserts, *deletes) = state;
    bytes
}

fn search<'a, KA, VA, Q: ?Sized>(entries: &'a [ArchivedTuple2<KA, VA>], key: &Q) -> Option<&'a VA>
where
    KA: PartialOrd<Q>,
{
    entries
        .binary_search_by(|e| e.0.partial_cmp(key).unwrap_or(Ordering::Less))
        .ok()
        .map(|i| &entries[i].1)
}

/// A full snapshot read in place.
pub struct FullView<'a, K: Archive, V: Archive> {
    entries: &'a ArchivedEntries<K, V>,
}

impl<'a, K: Archive, V: Archive> FullView<'a, K, V>
where
    ArchivedEntries<K, V>: Portable + for<'c> CheckBytes<HighValidator<'c, rancor::Error>>,
{
    /// Validates `record` (a [`RecordKind::Full`]) as a snapshot of `K -> V`. Zero-copy.
    pub fn open(record: &'a RecordView) -> Result<Self> {
        record.expect_kind(RecordKind::Full)?;
        Ok(FullView {
            entries: record.access::<ArchivedEntries<K, V>>()?,
        })
    }

    /// Validates raw archive bytes (e.g. straight from [`archive_full`]).
    pub fn from_bytes(bytes: &'a [u8]) -> Result<Self> {
        let entries = rkyv::access::<ArchivedEntries<K, V>, rancor::Error>(bytes)
            .map_err(|source| Error::Archive { source })?;
        Ok(FullView { entries })
    }
}

impl<'a, K: Archive, V: Archive> FullView<'a, K, V> {
    /// The value of `key`, in place.
    pub fn get<Q: ?Sized>(&self, key: &Q) -> Option<&'a Archived<V>>
    where
        Archived<K>: PartialOrd<Q>,
    {
        search(self.entries.as_slice(), key)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when the snapshot has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Entries in key order, in place.
    pub fn iter(&self) -> impl Iterator<Item = (&'a Archived<K>, &'a Archived<V>)> + 'a {
        self.entries.iter().map(|e| (&e.0, &e.1))
    }
}

/// A delta read in place.
pub struct DeltaView<'a, K: Archive, V: Archive> {
    delta: &'a ArchivedDelta<K, V>,
}

impl<'a, K: Archive, V: Archive> DeltaView<'a, K, V>
where
    ArchivedDelta<K, V>: Portable + for<'c> CheckBytes<HighValidator<'c, rancor::Error>>,
{
    /// Validates `record` (a [`RecordKind::Delta`]) as a delta of `K -> V`. Zero-copy.
    pub fn open(record: &'a RecordView) -> Result<Self> {
        record.expect_kind(RecordKind::Delta)?;
        Ok(DeltaView {
            delta: record.access::<ArchivedDelta<K, V>>()?,
        })
    }

    /// Validates raw archive bytes (e.g. straight from [`archive_delta`]).
    pub fn from_bytes(bytes: &'a [u8]) -> Result<Self> {
        let delta = rkyv::access::<ArchivedDelta<K, V>, rancor::Error>(bytes)
            .map_err(|source| Error::Archive { source })?;
        Ok(DeltaView { delta })
    }
}

/// What a delta says about a key.
#[derive(Debug, PartialEq, Eq)]
pub enum Change<'a, VA> {
    /// Set to this value.
    Upsert(&'a VA),
    /// Deleted.
    Delete,
    /// Not touched by this delta.
    Untouched,
}

impl<'a, K: Archive, V: Archive> DeltaView<'a, K, V> {
    /// What this delta did to `key`.
    pub fn change<Q: ?Sized>(&self, key: &Q) -> Change<'a, Archived<V>>
    where
        Archived<K>: PartialOrd<Q>,
    {
        if let Some(v) = search(self.delta.0.as_slice(), key) {
            return Change::Upsert(v);
        }
        let deleted = self
            .delta
            .1
            .as_slice()
            .binary_search_by(|k| k.partial_cmp(key).unwrap_or(Ordering::Less))
            .is_ok();
        if deleted {
            Change::Delete
        } else {
            Change::Untouched
        }
    }

    /// Upserted entries in key order.
    pub fn upserts(&self) -> impl Iterator<Item = (&'a Archived<K>, &'a Archived<V>)> + 'a {
        self.delta.0.iter().map(|e| (&e.0, &e.1))
    }

    /// Deleted keys in order.
    pub fn deletes(&self) -> impl Iterator<Item = &'a Archived<K>> + 'a {
        self.delta.1.iter()
    }
}

/// A base snapshot with the deltas of later checkpoints layered over it (oldest first).
pub struct ChainView<'a, K: Archive, V: Archive> {
    base: FullView<'a, K, V>,
    deltas: Vec<DeltaView<'a, K, V>>,
}

impl<'a, K: Archive, V: Archive> ChainView<'a, K, V>
where
    ArchivedEntries<K, V>: Portable + for<'c> CheckBytes<HighValidator<'c, rancor::Error>>,
    ArchivedDelta<K, V>: Portable + for<'c> CheckBytes<HighValidator<'c, rancor::Error>>,
{
    /// Opens a chain from its records (one full snapshot, then its deltas in checkpoint
    /// order, all of one owner — what [`crate::Checkpoint::chain`] returns). Validates the
    /// chain's shape and every archive.
    pub fn open(records: &'a [RecordView]) -> Result<Self> {
        let first = records.first().ok_or(Error::BrokenChain {
            checkpoint: crate::ids::CheckpointId(0),
            owner: Default::default(),
            problem: ChainProblem::MissingBase,
        })?;
        let last = records.last().unwrap_or(first).header();
        let broken = |problem| Error::BrokenChain {
            checkpoint: last.checkpoint,
            owner: last.owner,
            problem,
        };
        let shape: Vec<_> = records
            .iter()
            .map(|r| (r.kind(), r.header().checkpoint, r.header().base))
            .collect();
        if let Some(problem) = chain_problem(&shape) {
            return Err(broken(problem));
        }
        let base = FullView::open(first)?;
        let deltas = records[1..]
            .iter()
            .map(DeltaView::open)
            .collect::<Result<Vec<_>>>()?;
        Ok(ChainView { base, deltas })
    }
}

/// Checks a chain's shape: `(kind, checkpoint, base)` per record, oldest first.
pub fn chain_problem(
    shape: &[(
        RecordKind,
        crate::ids::CheckpointId,
        crate::ids::CheckpointId,
    )],
) -> Option<ChainProblem> {
    let Some(&(kind, base_ckpt, _)) = shape.first() else {
        return Some(ChainProblem::MissingBase);
    };
    match kind {
        RecordKind::Full => {}
        RecordKind::Delta => return Some(ChainProblem::MissingBase),
        k => return Some(ChainProblem::NotSnapshot(k)),
    }
    let mut prev = base_ckpt;
    for &(kind, ckpt, base) in &shape[1..] {
        match kind {
            RecordKind::Delta => {}
            RecordKind::Full => return Some(ChainProblem::SeveralBases),
            k => return Some(ChainProblem::NotSnapshot(k)),
        }
        if base != base_ckpt {
            return Some(ChainProblem::WrongBase { names: base });
        }
        if ckpt <= prev {
            return Some(ChainProblem::OutOfOrder);
        }
        prev = ckpt;
    }
    None
}

impl<'a, K: Archive, V: Archive> ChainView<'a, K, V> {
    /// The value of `key` as of the newest checkpoint in the chain, in place.
    pub fn get<Q: ?Sized>(&self, key: &Q) -> Option<&'a Archived<V>>
    where
        Archived<K>: PartialOrd<Q>,
    {
        for d in self.deltas.iter().rev() {
            match d.change(key) {
                Change::Upsert(v) => return Some(v),
                Change::Delete => return None,
                Change::Untouched => {}
            }
        }
        self.base.get(key)
    }

    /// Number of deltas over the base.
    pub fn depth(&self) -> usize {
        self.deltas.len()
    }

    /// Every live entry in key order (the folded state), still in place.
    pub fn entries(&self) -> Vec<(&'a Archived<K>, &'a Archived<V>)>
    where
        Archived<K>: Ord,
    {
        let mut acc: Vec<(&'a Archived<K>, &'a Archived<V>)> = self.base.iter().collect();
        for d in &self.deltas {
            let mut ups = d.upserts().peekable();
            let mut dels = d.deletes().peekable();
            let mut out = Vec::with_capacity(acc.len());
            let mut it = acc.into_iter().peekable();
            loop {
                let next_key = [it.peek().map(|e| e.0), ups.peek().map(|e| e.0)]
                    .into_iter()
                    .flatten()
                    .min();
                let Some(k) = next_key else { break };
                while dels.peek().is_some_and(|d| *d < k) {
                    dels.next();
                }
                let deleted = dels.peek().is_some_and(|d| *d == k);
                let old = if it.peek().is_some_and(|e| e.0 == k) {
                    it.next()
                } else {
                    None
                };
                let new = if ups.peek().is_some_and(|e| e.0 == k) {
                    ups.next()
                } else {
                    None
                };
                if let Some(e) = new {
                    out.push(e);
                } else if let (Some(e), false) = (old, deleted) {
                    out.push(e);
                }
            }
            acc = out;
        }
        acc
    }

    /// Folds the chain into the entries of a new full snapshot (deserializing each live
    /// entry once); archive it with [`archive_full`] and append it as the new base.
    pub fn fold(&self) -> Result<FullState<K, V>>
    where
        Archived<K>: Ord + Deserialize<K, HighDeserializer<rancor::Error>>,
        Archived<V>: Deserialize<V, HighDeserializer<rancor::Error>>,
    {
        self.entries()
            .into_iter()
            .map(|(k, v)| {
                let k = rkyv::deserialize::<K, rancor::Error>(k)
                    .map_err(|source| Error::Archive { source })?;
                let v = rkyv::deserialize::<V, rancor::Error>(v)
                    .map_err(|source| Error::Archive { source })?;
                Ok((k, v))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_and_delta_bytes_round_trip() {
        let mut entries = vec![(3u64, 30u64), (1, 10), (2, 20)];
        let bytes = archive_full(&mut entries).unwrap();
        let v = FullView::<u64, u64>::from_bytes(&bytes).unwrap();
        assert_eq!(v.get(&2u64).map(|x| x.to_native()), Some(20));
        assert_eq!(v.get(&4u64), None);
        let mut ups = vec![(5u64, 50u64)];
        let mut dels = vec![1u64];
        let d = archive_delta(&mut ups, &mut dels).unwrap();
        let dv = DeltaView::<u64, u64>::from_bytes(&d).unwrap();
        assert_eq!(dv.change(&1u64), Change::Delete);
        assert_eq!(dv.change(&9u64), Change::Untouched);
    }

    #[test]
    fn duplicates_and_overlaps_are_rejected() {
        let mut dup = vec![(1u64, 1u64), (1, 2)];
        assert!(matches!(
            archive_full(&mut dup),
            Err(Error::UnsortedEntries { .. })
        ));
        let mut ups = vec![(1u64, 1u64)];
        let mut dels = vec![1u64];
        assert!(archive_delta(&mut ups, &mut dels).is_err());
    }

    #[test]
    fn string_keys_look_up_by_str() {
        let mut entries = vec![("b".to_string(), 2u32), ("a".to_string(), 1)];
        let bytes = archive_full(&mut entries).unwrap();
        let v = FullView::<String, u32>::from_bytes(&bytes).unwrap();
        assert_eq!(v.get("b").map(|x| x.to_native()), Some(2));
    }

    #[test]
    fn chain_shapes() {
        use crate::ids::CheckpointId as C;
        use RecordKind::*;
        assert_eq!(
            chain_problem(&[(Full, C(1), C(1)), (Delta, C(2), C(1))]),
            None
        );
        assert_eq!(
            chain_problem(&[(Delta, C(2), C(1))]),
            Some(ChainProblem::MissingBase)
        );
        assert_eq!(
            chain_problem(&[(Full, C(1), C(1)), (Delta, C(2), C(0))]),
            Some(ChainProblem::WrongBase { names: C(0) })
        );
        assert_eq!(
            chain_problem(&[(Full, C(1), C(1)), (Delta, C(3), C(1)), (Delta, C(2), C(1))]),
            Some(ChainProblem::OutOfOrder)
        );
    }
}
