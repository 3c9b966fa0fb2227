//! Keyed state: value, list and map state scoped to the current key, stored per key
//! group so that a checkpoint can archive a key group and a restore can move it to
//! another core. One set of tables per keyed operator partition; it is touched only by
//! the core that owns the partition (no locks, `Rc`). Each table can archive its key
//! groups for a checkpoint and load them back (`SnapshotTable`, used by the checkpoint
//! machinery; with incremental checkpoints it tracks the keys changed since the last one).

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hash};
use std::rc::Rc;

use crate::ids::{CheckpointId, KeyGroup};
use crate::keys::StableHasher;

use crate::checkpoint::codec::Entry;

type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<StableHasher>>;
type FastSet<K> = HashSet<K, BuildHasherDefault<StableHasher>>;

/// The key a `process` function is currently called for, and its key group.
#[derive(Debug)]
pub struct KeyCtx<'a, K> {
    key: &'a K,
    key_group: KeyGroup,
}

impl<'a, K> KeyCtx<'a, K> {
    /// The context for `key` in `key_group` (the engine makes these; tests of `process`
    /// functions outside a pipeline can too).
    pub fn new(key: &'a K, key_group: KeyGroup) -> Self {
        Self { key, key_group }
    }

    /// The current key.
    pub fn key(&self) -> &K {
        self.key
    }

    /// The current key's group.
    pub fn key_group(&self) -> KeyGroup {
        self.key_group
    }
}

/// One named piece of state for every key: per key group, a map from key to `S`.
#[derive(Debug)]
pub struct KeyedTable<K, S> {
    groups: Vec<Group<K, S>>,
    /// Whether each group tracks the keys changed since its last snapshot (incremental
    /// checkpoints).
    incremental: bool,
    /// Per key group, how many deltas the group's chain in the log has (`None`: no chain
    /// yet, the next snapshot of the group is a full one).
    chain: Vec<Option<usize>>,
    /// Groups archived before the checkpoint that froze them got to them (a newer barrier
    /// froze them again first): (that checkpoint, the group, its archive). At most one
    /// per group and checkpoint in flight; dropped once a newer checkpoint archives.
    stash: Vec<(CheckpointId, KeyGroup, GroupSnapshot)>,
}

/// One key group of a table.
#[derive(Debug)]
struct Group<K, S> {
    map: FastMap<K, S>,
    /// With incremental checkpoints: the keys changed since the group's last snapshot.
    dirty: FastSet<K>,
    /// Set from a barrier until the group is archived for that checkpoint.
    frozen: Option<Frozen<K, S>>,
}

/// A key group as a checkpoint's barrier left it, kept until the checkpoint archives it
/// (copy-on-write per key: the live map goes on changing; the first change of a key
/// after the barrier saves the key's value at the barrier here).
#[derive(Debug)]
struct Frozen<K, S> {
    id: CheckpointId,
    /// `None`: a full snapshot; `Some(keys)`: a delta of the keys changed between the
    /// group's previous snapshot and the barrier.
    delta: Option<FastSet<K>>,
    /// For every key changed since the barrier: its value at the barrier (`None`: it had
    /// none). Bounded by the group's keys: one entry per key at most.
    before: FastMap<K, Option<S>>,
}

impl<K, S> Group<K, S> {
    fn new() -> Self {
        Self {
            map: FastMap::default(),
            dirty: FastSet::default(),
            frozen: None,
        }
    }
}

impl<K: Hash + Eq + Clone, S> KeyedTable<K, S> {
    fn new(max_key_groups: u16, incremental: bool) -> Self {
        let n = max_key_groups as usize;
        Self {
            groups: (0..n).map(|_| Group::new()).collect(),
            incremental,
            chain: vec![None; n],
            stash: Vec::new(),
        }
    }

    #[inline]
    fn group(&self, kg: KeyGroup) -> &FastMap<K, S> {
        &self.groups[kg.0 as usize].map
    }

    /// Entries of one key group (for snapshots and tests).
    pub fn entries(&self, kg: KeyGroup) -> impl Iterator<Item = (&K, &S)> {
        self.group(kg).iter()
    }

    /// Number of keys with state, over all key groups.
    pub fn len(&self) -> usize {
        self.groups.iter().map(|g| g.map.len()).sum()
    }

    /// Whether no key has state.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of key groups a checkpoint froze and has not archived yet (tests, bench).
    pub fn frozen_groups(&self) -> usize {
        self.groups.iter().filter(|g| g.frozen.is_some()).count()
    }
}

impl<K: Hash + Eq + Clone, S: Clone> KeyedTable<K, S> {
    /// The group of `key` for changing it: noted as changed for incremental snapshots,
    /// and, while a checkpoint has the group frozen, the key's value at the barrier is
    /// saved first (once per key).
    #[inline]
    fn group_mut(&mut self, kg: KeyGroup, key: &K) -> &mut FastMap<K, S> {
        let g = &mut self.groups[kg.0 as usize];
        if self.incremental && !g.dirty.contains(key) {
            g.dirty.insert(key.clone());
        }
        if let Some(f) = &mut g.frozen {
            if !f.before.contains_key(key) {
                f.before.insert(key.clone(), g.map.get(key).cloned());
            }
        }
        &mut g.map
    }
}

/// Archives group `g` as checkpoint `f.id`'s barrier left it and unfreezes it.
fn archive_group<K, S, A>(
    g: &mut Group<K, S>,
    f: Frozen<K, S>,
    to: fn(&S) -> A,
) -> rill_storage::Result<GroupSnapshot>
where
    K: Hash + Eq + Clone,
    (K, A): Entry<K = K, V = A>,
{
    let Frozen { delta, before, .. } = f;
    match delta {
        Some(keys) => {
            let mut ups = Vec::new();
            let mut dels = Vec::new();
            for k in keys {
                let at_barrier = match before.get(&k) {
                    Some(old) => old.as_ref(),
                    None => g.map.get(&k),
                };
                match at_barrier {
                    Some(s) => ups.push((k, to(s))),
                    None => dels.push(k),
                }
            }
            Ok(GroupSnapshot::Delta(<(K, A)>::archive_delta(
                &mut ups, &mut dels,
            )?))
        }
        None => {
            let mut entries: Vec<(K, A)> = Vec::with_capacity(g.map.len() + before.len());
            if before.is_empty() {
                entries.extend(g.map.iter().map(|(k, s)| (k.clone(), to(s))));
            } else {
                entries.extend(
                    g.map
                        .iter()
                        .filter(|(k, _)| !before.contains_key(*k))
                        .map(|(k, s)| (k.clone(), to(s))),
                );
                entries.extend(
                    before
                        .into_iter()
                        .filter_map(|(k, old)| old.map(|s| (k, to(&s)))),
                );
            }
            Ok(GroupSnapshot::Full(<(K, A)>::archive_full(&mut entries)?))
        }
    }
}

/// How many deltas the first chain of key group `kg` counts as having already: the
/// groups' compactions (full snapshots when a chain reaches `max_chain` deltas) are
/// spread over `max_chain` consecutive checkpoints instead of all falling on one.
fn stagger(kg: KeyGroup, max_chain: usize) -> usize {
    usize::from(kg.0) % max_chain
}

/// Declares the state of one keyed operator partition; handed to a `process` factory.
///
/// Every piece of state is checkpointed: its key and value types must be archivable,
/// i.e. `(K, V): Entry` (integers, strings, vectors, tuples, options, and types deriving
/// `rkyv::Archive`, `rkyv::Serialize` and `rkyv::Deserialize`; keys also `Ord`).
pub struct StateInit<K> {
    max_key_groups: u16,
    incremental: bool,
    names: Vec<String>,
    tables: Vec<(String, Rc<RefCell<dyn SnapshotTable>>)>,
    _k: std::marker::PhantomData<K>,
}

impl<K: Hash + Eq + Clone + 'static> StateInit<K> {
    /// A fresh state declaration for one partition with `max_key_groups` key groups (the
    /// engine makes one per keyed partition; tests of `process` functions can too).
    pub fn new(max_key_groups: u16) -> Self {
        Self::with_incremental(max_key_groups, false)
    }

    /// Like `new`, tracking changed keys for incremental checkpoints when `incremental`.
    pub fn with_incremental(max_key_groups: u16, incremental: bool) -> Self {
        Self {
            max_key_groups,
            incremental,
            names: Vec::new(),
            tables: Vec::new(),
            _k: std::marker::PhantomData,
        }
    }

    fn declare(&mut self, name: &str) {
        assert!(
            !self.names.iter().any(|n| n == name),
            "state `{name}` is declared twice in one operator"
        );
        self.names.push(name.to_string());
    }

    fn table<S: 'static, A>(
        &mut self,
        name: &str,
        to: fn(&S) -> A,
        from: fn(A) -> S,
    ) -> Rc<RefCell<KeyedTable<K, S>>>
    where
        (K, A): Entry<K = K, V = A> + 'static,
        A: 'static,
    {
        self.declare(name);
        let table = Rc::new(RefCell::new(KeyedTable::new(
            self.max_key_groups,
            self.incremental,
        )));
        let erased: Rc<RefCell<dyn SnapshotTable>> = Rc::new(RefCell::new(TableSnapshots {
            table: table.clone(),
            to,
            from,
        }));
        self.tables.push((name.to_string(), erased));
        table
    }

    /// A single value per key.
    pub fn value<V: Clone + 'static>(&mut self, name: &str) -> ValueState<K, V>
    where
        (K, V): Entry<K = K, V = V> + 'static,
    {
        ValueState {
            table: self.table(name, V::clone, |v| v),
        }
    }

    /// An append-only list per key.
    pub fn list<V: Clone + 'static>(&mut self, name: &str) -> ListState<K, V>
    where
        (K, Vec<V>): Entry<K = K, V = Vec<V>> + 'static,
    {
        ListState {
            table: self.table(name, Vec::clone, |v| v),
        }
    }

    /// A map per key.
    pub fn map<MK: Hash + Eq + Clone + 'static, MV: Clone + 'static>(
        &mut self,
        name: &str,
    ) -> MapState<K, MK, MV>
    where
        (K, Vec<(MK, MV)>): Entry<K = K, V = Vec<(MK, MV)>> + 'static,
    {
        MapState {
            table: self.table(
                name,
                |m: &FastMap<MK, MV>| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                |v: Vec<(MK, MV)>| v.into_iter().collect(),
            ),
        }
    }
}

impl<K> StateInit<K> {
    /// The declared tables in declaration order, for the checkpoint machinery.
    pub(crate) fn tables(&self) -> &[(String, Rc<RefCell<dyn SnapshotTable>>)] {
        &self.tables
    }
}

/// Hooks for the criterion benchmarks in `perf/benches/` (hidden from the docs; not an
/// API): a checkpoint's barrier on a partition's state and the archiving after it, made
/// with the calls the engine makes (`SnapshotTable::snapshot` at the barrier,
/// `FrozenGroup::archive` in the core's writer task).
#[doc(hidden)]
pub struct BenchBarrier {
    groups: Vec<GroupSnapshot>,
}

impl<K> StateInit<K> {
    /// The barrier of checkpoint `id`: every key group of every table, as a keyed
    /// partition owning them all does it.
    #[doc(hidden)]
    pub fn bench_barrier(&self, id: u64, max_chain: usize) -> BenchBarrier {
        let mut groups = Vec::new();
        for (_, t) in &self.tables {
            let mut t = t.borrow_mut();
            for g in 0..self.max_key_groups {
                groups.push(
                    t.snapshot(KeyGroup(g), CheckpointId(id), max_chain)
                        .expect("archiving a bench table"),
                );
            }
        }
        BenchBarrier { groups }
    }
}

impl BenchBarrier {
    /// Key groups the barrier froze (the rest were unchanged or empty).
    #[doc(hidden)]
    pub fn frozen(&self) -> usize {
        self.groups
            .iter()
            .filter(|g| matches!(g, GroupSnapshot::Frozen(_)))
            .count()
    }

    /// Archives every frozen group (what the writer task does after the barrier);
    /// returns the archive bytes and each group's archiving time (the slices it needs).
    #[doc(hidden)]
    pub fn archive(self) -> (usize, Vec<std::time::Duration>) {
        let mut bytes = 0;
        let mut times = Vec::new();
        for g in self.groups {
            if let GroupSnapshot::Frozen(job) = g {
                let t0 = std::time::Instant::now();
                match job.archive().expect("archiving a bench table") {
                    Some(GroupSnapshot::Full(b) | GroupSnapshot::Delta(b)) => bytes += b.len(),
                    other => panic!("a frozen group archived as {other:?}"),
                }
                times.push(t0.elapsed());
            }
        }
        (bytes, times)
    }
}

/// What a snapshot of one key group is.
pub(crate) enum GroupSnapshot {
    /// Every entry of the group (a new chain base).
    Full(rkyv::util::AlignedVec),
    /// The changes since the group's previous snapshot, on top of its chain.
    Delta(rkyv::util::AlignedVec),
    /// Nothing changed: the group's chain stays as it is.
    Unchanged,
    /// The group holds no state and has no chain.
    Empty,
    /// Frozen at the barrier, to be archived after it (`FrozenGroup::archive` gives the
    /// `Full` or `Delta` the group was at the barrier).
    Frozen(Box<dyn FrozenGroup>),
}

impl std::fmt::Debug for GroupSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Full(b) => write!(f, "Full({} bytes)", b.len()),
            Self::Delta(b) => write!(f, "Delta({} bytes)", b.len()),
            Self::Unchanged => f.write_str("Unchanged"),
            Self::Empty => f.write_str("Empty"),
            Self::Frozen(_) => f.write_str("Frozen"),
        }
    }
}

/// A key group frozen by a checkpoint's barrier, archived later, off the barrier.
pub(crate) trait FrozenGroup {
    /// Archives the group as the barrier left it and unfreezes it (the archiving part of
    /// a checkpoint, done by the core between rounds of its loop). `Ok(None)`: the frozen
    /// state is gone, dropped when a checkpoint was aborted (`reset_chains`).
    fn archive(self: Box<Self>) -> rill_storage::Result<Option<GroupSnapshot>>;
}

/// A state table's part in checkpoints, with its types erased.
pub(crate) trait SnapshotTable {
    /// The barrier of checkpoint `id` reached key group `kg`: decides what the group's
    /// snapshot is (with incremental tracking, a group with a chain shorter than
    /// `max_chain` gets a delta) and freezes the group for archiving after the barrier.
    /// Work proportional to the keys only when an older checkpoint still has the group
    /// frozen (it is archived now, for that checkpoint).
    fn snapshot(
        &mut self,
        kg: KeyGroup,
        id: CheckpointId,
        max_chain: usize,
    ) -> rill_storage::Result<GroupSnapshot>;
    /// Forgets every chain and every frozen group: the next snapshot of every group is a
    /// full one (after a failed checkpoint, whose deltas may be missing, and after a
    /// restore).
    fn reset_chains(&mut self);
    /// Loads key group `kg` from its chain in a restored checkpoint; returns the number
    /// of keys loaded.
    fn restore(
        &mut self,
        kg: KeyGroup,
        chain: &[rill_storage::RecordView],
    ) -> rill_storage::Result<usize>;
    /// Number of keys with state.
    fn keys(&self) -> usize;
}

struct TableSnapshots<K, S, A> {
    table: Rc<RefCell<KeyedTable<K, S>>>,
    to: fn(&S) -> A,
    from: fn(A) -> S,
}

/// Key group `kg` of `table`, frozen for checkpoint `id`.
struct FrozenJob<K, S, A> {
    table: Rc<RefCell<KeyedTable<K, S>>>,
    to: fn(&S) -> A,
    kg: KeyGroup,
    id: CheckpointId,
}

impl<K, S, A> FrozenGroup for FrozenJob<K, S, A>
where
    K: Hash + Eq + Clone,
    (K, A): Entry<K = K, V = A>,
{
    fn archive(self: Box<Self>) -> rill_storage::Result<Option<GroupSnapshot>> {
        let mut t = self.table.borrow_mut();
        let t = &mut *t;
        // Archives of older checkpoints still stashed were never claimed (their
        // checkpoint failed before archiving everything): checkpoints archive in order.
        t.stash.retain(|(id, _, _)| *id >= self.id);
        if let Some(i) = t
            .stash
            .iter()
            .position(|(id, kg, _)| *id == self.id && *kg == self.kg)
        {
            return Ok(Some(t.stash.swap_remove(i).2));
        }
        let g = &mut t.groups[self.kg.0 as usize];
        match g.frozen.take() {
            Some(f) if f.id == self.id => archive_group(g, f, self.to).map(Some),
            other => {
                g.frozen = other;
                Ok(None)
            }
        }
    }
}

impl<K, S, A> SnapshotTable for TableSnapshots<K, S, A>
where
    K: Hash + Eq + Clone + 'static,
    S: 'static,
    A: 'static,
    (K, A): Entry<K = K, V = A>,
{
    fn snapshot(
        &mut self,
        kg: KeyGroup,
        id: CheckpointId,
        max_chain: usize,
    ) -> rill_storage::Result<GroupSnapshot> {
        let mut t = self.table.borrow_mut();
        let t = &mut *t;
        let i = kg.0 as usize;
        if let Some(older) = t.groups[i].frozen.take() {
            // A newer barrier before the older checkpoint archived this group (several
            // checkpoints in flight, or a slow log): archive it now, for that one.
            let older_id = older.id;
            let snap = archive_group(&mut t.groups[i], older, self.to)?;
            t.stash.push((older_id, kg, snap));
        }
        let frozen = |delta| {
            Some(Frozen {
                id,
                delta,
                before: FastMap::default(),
            })
        };
        let job = || {
            GroupSnapshot::Frozen(Box::new(FrozenJob {
                table: self.table.clone(),
                to: self.to,
                kg,
                id,
            }))
        };
        let g = &mut t.groups[i];
        if t.incremental {
            if let Some(d) = t.chain[i].filter(|d| *d < max_chain) {
                if g.dirty.is_empty() {
                    return Ok(GroupSnapshot::Unchanged);
                }
                g.frozen = frozen(Some(std::mem::take(&mut g.dirty)));
                t.chain[i] = Some(d + 1);
                return Ok(job());
            }
            g.dirty.clear();
        }
        if g.map.is_empty() {
            t.chain[i] = None;
            return Ok(GroupSnapshot::Empty);
        }
        g.frozen = frozen(None);
        t.chain[i] = Some(match t.chain[i] {
            // A group's first chain (after a start, a restore or an abort) is shortened
            // by its position among the groups, so that later compactions of the groups
            // that got their first full snapshot together fall on different checkpoints:
            // about 1/max_chain of them per checkpoint, not all at once every max_chain.
            None if t.incremental => stagger(kg, max_chain),
            _ => 0,
        });
        Ok(job())
    }

    fn reset_chains(&mut self) {
        let mut t = self.table.borrow_mut();
        t.chain.iter_mut().for_each(|c| *c = None);
        t.groups.iter_mut().for_each(|g| g.frozen = None);
        t.stash.clear();
    }

    fn restore(
        &mut self,
        kg: KeyGroup,
        chain: &[rill_storage::RecordView],
    ) -> rill_storage::Result<usize> {
        let entries = <(K, A)>::fold(chain)?;
        let n = entries.len();
        let mut t = self.table.borrow_mut();
        let group = &mut t.groups[kg.0 as usize].map;
        for (k, a) in entries {
            group.insert(k, (self.from)(a));
        }
        Ok(n)
    }

    fn keys(&self) -> usize {
        self.table.borrow().len()
    }
}

/// A value per key.
pub struct ValueState<K, V> {
    table: Rc<RefCell<KeyedTable<K, V>>>,
}

impl<K, V> Clone for ValueState<K, V> {
    fn clone(&self) -> Self {
        Self {
            table: self.table.clone(),
        }
    }
}

impl<K: Hash + Eq + Clone, V: Clone> ValueState<K, V> {
    /// The current key's value.
    pub fn get(&self, ctx: &KeyCtx<'_, K>) -> Option<V> {
        self.table
            .borrow()
            .group(ctx.key_group)
            .get(ctx.key)
            .cloned()
    }

    /// Sets the current key's value.
    pub fn set(&self, ctx: &KeyCtx<'_, K>, v: V) {
        self.table
            .borrow_mut()
            .group_mut(ctx.key_group, ctx.key)
            .insert(ctx.key.clone(), v);
    }

    /// Changes the current key's value in place (inserting `init()` first if unset) and
    /// returns the result of `f`.
    pub fn update<R>(
        &self,
        ctx: &KeyCtx<'_, K>,
        init: impl FnOnce() -> V,
        f: impl FnOnce(&mut V) -> R,
    ) -> R {
        let mut t = self.table.borrow_mut();
        let group = t.group_mut(ctx.key_group, ctx.key);
        if let Some(v) = group.get_mut(ctx.key) {
            return f(v);
        }
        f(group.entry(ctx.key.clone()).or_insert_with(init))
    }

    /// Removes the current key's value.
    pub fn clear(&self, ctx: &KeyCtx<'_, K>) {
        self.table
            .borrow_mut()
            .group_mut(ctx.key_group, ctx.key)
            .remove(ctx.key);
    }

    /// Read access to the whole table (snapshots, tests).
    pub fn with_table<R>(&self, f: impl FnOnce(&KeyedTable<K, V>) -> R) -> R {
        f(&self.table.borrow())
    }
}

/// A list per key.
pub struct ListState<K, V> {
    table: Rc<RefCell<KeyedTable<K, Vec<V>>>>,
}

impl<K, V> Clone for ListState<K, V> {
    fn clone(&self) -> Self {
        Self {
            table: self.table.clone(),
        }
    }
}

impl<K: Hash + Eq + Clone, V: Clone> ListState<K, V> {
    /// Appends to the current key's list.
    pub fn add(&self, ctx: &KeyCtx<'_, K>, v: V) {
        self.table
            .borrow_mut()
            .group_mut(ctx.key_group, ctx.key)
            .entry(ctx.key.clone())
            .or_default()
            .push(v);
    }

    /// A copy of the current key's list (empty when unset).
    pub fn get(&self, ctx: &KeyCtx<'_, K>) -> Vec<V> {
        self.with(ctx, <[V]>::to_vec)
    }

    /// Calls `f` with the current key's list, without copying it.
    pub fn with<R>(&self, ctx: &KeyCtx<'_, K>, f: impl FnOnce(&[V]) -> R) -> R {
        let t = self.table.borrow();
        f(t.group(ctx.key_group)
            .get(ctx.key)
            .map_or(&[], Vec::as_slice))
    }

    /// Removes the current key's list.
    pub fn clear(&self, ctx: &KeyCtx<'_, K>) {
        self.table
            .borrow_mut()
            .group_mut(ctx.key_group, ctx.key)
            .remove(ctx.key);
    }
}

/// A map per key.
pub struct MapState<K, MK, MV> {
    table: Rc<RefCell<KeyedTable<K, FastMap<MK, MV>>>>,
}

impl<K, MK, MV> Clone for MapState<K, MK, MV> {
    fn clone(&self) -> Self {
        Self {
            table: self.table.clone(),
        }
    }
}

impl<K: Hash + Eq + Clone, MK: Hash + Eq + Clone, MV: Clone> MapState<K, MK, MV> {
    /// The value under `mk` in the current key's map.
    pub fn get(&self, ctx: &KeyCtx<'_, K>, mk: &MK) -> Option<MV> {
        let t = self.table.borrow();
        t.group(ctx.key_group).get(ctx.key)?.get(mk).cloned()
    }

    /// Sets `mk` to `mv` in the current key's map.
    pub fn put(&self, ctx: &KeyCtx<'_, K>, mk: MK, mv: MV) {
        self.table
            .borrow_mut()
            .group_mut(ctx.key_group, ctx.key)
            .entry(ctx.key.clone())
            .or_default()
            .insert(mk, mv);
    }

    /// Removes `mk` from the current key's map; returns the old value. An emptied map is
    /// removed with its key.
    pub fn remove(&self, ctx: &KeyCtx<'_, K>, mk: &MK) -> Option<MV> {
        let mut t = self.table.borrow_mut();
        let group = t.group_mut(ctx.key_group, ctx.key);
        let map = group.get_mut(ctx.key)?;
        let old = map.remove(mk);
        if map.is_empty() {
            group.remove(ctx.key);
        }
        old
    }

    /// Number of entries in the current key's map.
    pub fn len(&self, ctx: &KeyCtx<'_, K>) -> usize {
        self.table
            .borrow()
            .group(ctx.key_group)
            .get(ctx.key)
            .map_or(0, HashMap::len)
    }

    /// Whether the current key's map is empty.
    pub fn is_empty(&self, ctx: &KeyCtx<'_, K>) -> bool {
        self.len(ctx) == 0
    }

    /// The current key's entries, sorted by map key for determinism.
    pub fn entries(&self, ctx: &KeyCtx<'_, K>) -> Vec<(MK, MV)>
    where
        MK: Ord,
    {
        let t = self.table.borrow();
        let mut v: Vec<(MK, MV)> = t
            .group(ctx.key_group)
            .get(ctx.key)
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;
    use crate::keys::key_group_of;

    #[derive(Debug, Clone)]
    enum Op {
        Set(u8, i64),
        Add(u8, i64),
        Clear(u8),
        Put(u8, u8, i64),
        Remove(u8, u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (any::<u8>(), any::<i64>()).prop_map(|(k, v)| Op::Set(k % 16, v)),
            (any::<u8>(), any::<i64>()).prop_map(|(k, v)| Op::Add(k % 16, v)),
            any::<u8>().prop_map(|k| Op::Clear(k % 16)),
            (any::<u8>(), any::<u8>(), any::<i64>()).prop_map(|(k, m, v)| Op::Put(
                k % 16,
                m % 4,
                v
            )),
            (any::<u8>(), any::<u8>()).prop_map(|(k, m)| Op::Remove(k % 16, m % 4)),
        ]
    }

    proptest! {
        /// Value, list and map state behave like a plain `BTreeMap` model keyed by key.
        #[test]
        fn state_matches_a_btreemap_model(ops in proptest::collection::vec(op(), 0..200)) {
            let mut init = StateInit::<u8>::new(8);
            let value = init.value::<i64>("v");
            let list = init.list::<i64>("l");
            let map = init.map::<u8, i64>("m");
            let mut mv: BTreeMap<u8, i64> = BTreeMap::new();
            let mut ml: BTreeMap<u8, Vec<i64>> = BTreeMap::new();
            let mut mm: BTreeMap<u8, BTreeMap<u8, i64>> = BTreeMap::new();
            for op in ops {
                let key = match op { Op::Set(k, _) | Op::Add(k, _) | Op::Clear(k)
                    | Op::Put(k, _, _) | Op::Remove(k, _) => k };
                let ctx = KeyCtx::new(&key, key_group_of(&key, 8));
                match op {
                    Op::Set(_, v) => { value.set(&ctx, v); mv.insert(key, v); }
                    Op::Add(_, v) => { list.add(&ctx, v); ml.entry(key).or_default().push(v); }
                    Op::Clear(_) => { value.clear(&ctx); list.clear(&ctx); mv.remove(&key); ml.remove(&key); }
                    Op::Put(_, m, v) => { map.put(&ctx, m, v); mm.entry(key).or_default().insert(m, v); }
                    Op::Remove(_, m) => {
                        let got = map.remove(&ctx, &m);
                        let want = mm.get_mut(&key).and_then(|x| x.remove(&m));
                        if mm.get(&key).is_some_and(BTreeMap::is_empty) { mm.remove(&key); }
                        prop_assert_eq!(got, want);
                    }
                }
                prop_assert_eq!(value.get(&ctx), mv.get(&key).copied());
                prop_assert_eq!(list.get(&ctx), ml.get(&key).cloned().unwrap_or_default());
                let entries: Vec<(u8, i64)> = mm.get(&key).map(|m| m.iter().map(|(a, b)| (*a, *b)).collect()).unwrap_or_default();
                prop_assert_eq!(map.entries(&ctx), entries);
            }
            prop_assert_eq!(value.with_table(|t| t.len()), mv.len());
        }
    }

    /// The snapshot records of each (table, key group) as the core keeps them: the
    /// chain since the last full snapshot, `true` for the full one.
    type Chains = BTreeMap<(usize, u16), Vec<(bool, rkyv::util::AlignedVec)>>;

    /// Applies an archived group to its chain the way the core's writer does.
    fn apply(chains: &mut Chains, at: (usize, u16), g: GroupSnapshot) {
        match g {
            GroupSnapshot::Full(b) => {
                chains.insert(at, vec![(true, b)]);
            }
            GroupSnapshot::Delta(b) => chains
                .get_mut(&at)
                .expect("a delta has a base")
                .push((false, b)),
            GroupSnapshot::Unchanged => {}
            GroupSnapshot::Empty => {
                chains.remove(&at);
            }
            GroupSnapshot::Frozen(_) => panic!("archive a frozen group first"),
        }
    }

    /// Folds table `table`'s chains into its entries, through rkyv's validated access
    /// and deserialization (what a restore reads).
    fn fold<A>(chains: &Chains, table: usize) -> BTreeMap<u8, A>
    where
        Vec<(u8, A)>: rkyv::Archive,
        rkyv::Archived<Vec<(u8, A)>>: for<'a> rkyv::bytecheck::CheckBytes<
                rkyv::api::high::HighValidator<'a, rkyv::rancor::Error>,
            > + rkyv::Deserialize<Vec<(u8, A)>, rkyv::api::high::HighDeserializer<rkyv::rancor::Error>>,
        (Vec<(u8, A)>, Vec<u8>): rkyv::Archive,
        rkyv::Archived<(Vec<(u8, A)>, Vec<u8>)>: for<'a> rkyv::bytecheck::CheckBytes<
                rkyv::api::high::HighValidator<'a, rkyv::rancor::Error>,
            > + rkyv::Deserialize<
                (Vec<(u8, A)>, Vec<u8>),
                rkyv::api::high::HighDeserializer<rkyv::rancor::Error>,
            >,
    {
        let mut out = BTreeMap::new();
        for ((_, _), chain) in chains.range((table, 0)..(table + 1, 0)) {
            let mut group = BTreeMap::new();
            for (full, bytes) in chain {
                if *full {
                    let e = rkyv::from_bytes::<Vec<(u8, A)>, rkyv::rancor::Error>(bytes).unwrap();
                    group = e.into_iter().collect();
                } else {
                    let (ups, dels) =
                        rkyv::from_bytes::<(Vec<(u8, A)>, Vec<u8>), rkyv::rancor::Error>(bytes)
                            .unwrap();
                    // A key set and cleared between two checkpoints (or cleared while
                    // unset) is deleted by the delta without being in the chain.
                    for k in dels {
                        group.remove(&k);
                    }
                    group.extend(ups);
                }
            }
            out.extend(group);
        }
        out
    }

    #[derive(Debug, Clone)]
    enum Step {
        Op(Op),
        /// A barrier: every key group of every table is frozen (the synchronous part).
        Barrier,
        /// The core archives this many frozen groups (a slice between rounds).
        Archive(usize),
        /// The checkpoints in flight are aborted.
        Abort,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            8 => op().prop_map(Step::Op),
            1 => Just(Step::Barrier),
            2 => (1usize..12).prop_map(Step::Archive),
            1 => Just(Step::Abort),
        ]
    }

    /// A checkpoint in flight: its groups still to archive, its archived ones, and the
    /// state its barrier saw (the model's, per table).
    struct InFlight {
        todo: std::collections::VecDeque<((usize, u16), GroupSnapshot)>,
        done: Vec<((usize, u16), GroupSnapshot)>,
        value: BTreeMap<u8, i64>,
        list: BTreeMap<u8, Vec<i64>>,
        map: BTreeMap<u8, Vec<(u8, i64)>>,
    }

    proptest! {
        /// Copy-on-write snapshots: whatever the records do after a barrier, and however
        /// the archiving of its frozen key groups is sliced (several checkpoints in
        /// flight, aborts, full and incremental, short and long delta chains), the chain
        /// of records of every checkpoint folds back to exactly the state at its barrier.
        #[test]
        fn every_checkpoint_restores_the_state_at_its_barrier(
            steps in proptest::collection::vec(step(), 0..300),
            incremental in any::<bool>(),
            max_chain in 1usize..4,
        ) {
            const GROUPS: u16 = 4;
            let mut init = StateInit::<u8>::with_incremental(GROUPS, incremental);
            let value = init.value::<i64>("v");
            let list = init.list::<i64>("l");
            let map = init.map::<u8, i64>("m");
            let tables: Vec<_> = init.tables().iter().map(|(_, t)| t.clone()).collect();
            let mut mv: BTreeMap<u8, i64> = BTreeMap::new();
            let mut ml: BTreeMap<u8, Vec<i64>> = BTreeMap::new();
            let mut mm: BTreeMap<u8, BTreeMap<u8, i64>> = BTreeMap::new();
            let mut chains = Chains::new();
            let mut inflight: std::collections::VecDeque<InFlight> = Default::default();
            let mut next_id = 1u64;
            for s in steps {
                match s {
                    Step::Op(op) => {
                        let key = match op { Op::Set(k, _) | Op::Add(k, _) | Op::Clear(k)
                            | Op::Put(k, _, _) | Op::Remove(k, _) => k };
                        let ctx = KeyCtx::new(&key, key_group_of(&key, GROUPS));
                        match op {
                            Op::Set(_, v) => { value.set(&ctx, v); mv.insert(key, v); }
                            Op::Add(_, v) => { list.add(&ctx, v); ml.entry(key).or_default().push(v); }
                            Op::Clear(_) => { value.clear(&ctx); list.clear(&ctx); mv.remove(&key); ml.remove(&key); }
                            Op::Put(_, m, v) => { map.put(&ctx, m, v); mm.entry(key).or_default().insert(m, v); }
                            Op::Remove(_, m) => {
                                map.remove(&ctx, &m);
                                if let Some(x) = mm.get_mut(&key) { x.remove(&m); }
                                if mm.get(&key).is_some_and(BTreeMap::is_empty) { mm.remove(&key); }
                            }
                        }
                    }
                    Step::Barrier => {
                        let id = CheckpointId(next_id);
                        next_id += 1;
                        let mut todo = std::collections::VecDeque::new();
                        for (ti, t) in tables.iter().enumerate() {
                            for g in 0..GROUPS {
                                let snap = t.borrow_mut().snapshot(KeyGroup(g), id, max_chain).unwrap();
                                todo.push_back(((ti, g), snap));
                            }
                        }
                        inflight.push_back(InFlight {
                            todo,
                            done: Vec::new(),
                            value: mv.clone(),
                            list: ml.clone(),
                            map: mm.iter().map(|(k, m)| (*k, m.iter().map(|(a, b)| (*a, *b)).collect())).collect(),
                        });
                    }
                    Step::Archive(mut n) => {
                        // Oldest checkpoint first, as the core's writer goes.
                        while n > 0 {
                            let Some(c) = inflight.front_mut() else { break };
                            match c.todo.pop_front() {
                                Some((at, GroupSnapshot::Frozen(job))) => {
                                    n -= 1;
                                    let g = job.archive().unwrap().expect("not aborted");
                                    prop_assert!(!matches!(g, GroupSnapshot::Frozen(_)));
                                    c.done.push((at, g));
                                }
                                Some(other) => c.done.push(other),
                                None => {
                                    let c = inflight.pop_front().expect("front");
                                    for (at, g) in c.done {
                                        apply(&mut chains, at, g);
                                    }
                                    prop_assert_eq!(fold::<i64>(&chains, 0), c.value);
                                    prop_assert_eq!(fold::<Vec<i64>>(&chains, 1), c.list);
                                    let mut got = fold::<Vec<(u8, i64)>>(&chains, 2);
                                    got.values_mut().for_each(|v| v.sort_unstable());
                                    prop_assert_eq!(got, c.map);
                                }
                            }
                        }
                    }
                    Step::Abort => {
                        for t in &tables {
                            t.borrow_mut().reset_chains();
                        }
                        // A group frozen for an aborted checkpoint is gone.
                        for c in inflight.drain(..) {
                            for (_, g) in c.todo {
                                if let GroupSnapshot::Frozen(job) = g {
                                    prop_assert!(job.archive().unwrap().is_none());
                                }
                            }
                        }
                    }
                }
            }
            // Nothing stays frozen once every checkpoint is archived.
            for c in inflight.drain(..) {
                for (_, g) in c.todo {
                    if let GroupSnapshot::Frozen(job) = g {
                        prop_assert!(job.archive().unwrap().is_some());
                    }
                }
            }
            prop_assert_eq!(value.with_table(KeyedTable::frozen_groups), 0);
        }
    }

    /// The barrier only freezes: no key is archived at it, and what records do after it
    /// (change, delete, insert) does not reach its snapshot.
    #[test]
    fn writes_after_the_barrier_stay_out_of_its_snapshot() {
        let mut init = StateInit::<u64>::new(1);
        let count = init.value::<u64>("count");
        let kg = KeyGroup(0);
        for k in 0..1000u64 {
            count.set(&KeyCtx::new(&k, kg), k);
        }
        let table = init.tables()[0].1.clone();
        let snap = table
            .borrow_mut()
            .snapshot(kg, CheckpointId(1), 16)
            .unwrap();
        let GroupSnapshot::Frozen(job) = snap else {
            panic!("expected a frozen group, got {snap:?}");
        };
        assert_eq!(count.with_table(KeyedTable::frozen_groups), 1);
        count.set(&KeyCtx::new(&5, kg), 555);
        count.clear(&KeyCtx::new(&6, kg));
        count.set(&KeyCtx::new(&5000, kg), 1);
        count.update(&KeyCtx::new(&7, kg), || 0, |c| *c += 100);
        let Some(GroupSnapshot::Full(bytes)) = job.archive().unwrap() else {
            panic!("expected a full snapshot");
        };
        let entries = rkyv::from_bytes::<Vec<(u64, u64)>, rkyv::rancor::Error>(&bytes).unwrap();
        let want: Vec<(u64, u64)> = (0..1000).map(|k| (k, k)).collect();
        assert_eq!(entries, want);
        // The live state has the writes; the group is no longer frozen.
        assert_eq!(count.get(&KeyCtx::new(&5, kg)), Some(555));
        assert_eq!(count.get(&KeyCtx::new(&6, kg)), None);
        assert_eq!(count.get(&KeyCtx::new(&7, kg)), Some(107));
        assert_eq!(count.with_table(KeyedTable::frozen_groups), 0);
    }

    /// A barrier that finds its group still frozen by the previous checkpoint archives
    /// it for that one first, so each gets the state at its own barrier.
    #[test]
    fn a_second_barrier_before_the_first_archive_keeps_both_cuts() {
        let mut init = StateInit::<u64>::with_incremental(1, true);
        let count = init.value::<u64>("count");
        let kg = KeyGroup(0);
        fn ctx(k: &u64) -> KeyCtx<'_, u64> {
            KeyCtx::new(k, KeyGroup(0))
        }
        count.set(&ctx(&1), 10);
        let table = init.tables()[0].1.clone();
        let GroupSnapshot::Frozen(first) = table
            .borrow_mut()
            .snapshot(kg, CheckpointId(1), 16)
            .unwrap()
        else {
            panic!("frozen");
        };
        count.set(&ctx(&1), 11);
        count.set(&ctx(&2), 20);
        let GroupSnapshot::Frozen(second) = table
            .borrow_mut()
            .snapshot(kg, CheckpointId(2), 16)
            .unwrap()
        else {
            panic!("frozen");
        };
        count.clear(&ctx(&1));
        let Some(GroupSnapshot::Full(a)) = first.archive().unwrap() else {
            panic!("full")
        };
        let Some(GroupSnapshot::Delta(b)) = second.archive().unwrap() else {
            panic!("delta")
        };
        assert_eq!(
            rkyv::from_bytes::<Vec<(u64, u64)>, rkyv::rancor::Error>(&a).unwrap(),
            vec![(1, 10)]
        );
        assert_eq!(
            rkyv::from_bytes::<(Vec<(u64, u64)>, Vec<u64>), rkyv::rancor::Error>(&b).unwrap(),
            (vec![(1, 11), (2, 20)], vec![])
        );
    }

    /// Incremental checkpoints compact (write a full snapshot of) a key group when its
    /// chain reaches `max_chain` deltas. Groups that got their first full snapshot at the
    /// same checkpoint must not all compact again at the same later one: that checkpoint
    /// would archive every key (at 1M keys, tens of ms of archiving and megabytes to
    /// write at once). Every group changes at every checkpoint here; after the first
    /// checkpoint, no checkpoint writes more than ceil(groups / max_chain) full
    /// snapshots, and every chain still gets compacted within `max_chain` deltas.
    #[test]
    fn compactions_of_key_groups_are_spread_over_checkpoints() {
        const GROUPS: u16 = 32;
        const MAX_CHAIN: usize = 4;
        let mut init = StateInit::<u64>::with_incremental(GROUPS, true);
        let count = init.value::<u64>("count");
        let table = init.tables()[0].1.clone();
        let mut since_full = vec![0usize; GROUPS as usize];
        for id in 1..=30u64 {
            for g in 0..GROUPS {
                let k = u64::from(g) * 1000 + id;
                count.set(&KeyCtx::new(&k, KeyGroup(g)), id);
            }
            let mut fulls = 0;
            for g in 0..GROUPS {
                let snap = table
                    .borrow_mut()
                    .snapshot(KeyGroup(g), CheckpointId(id), MAX_CHAIN)
                    .unwrap();
                let GroupSnapshot::Frozen(job) = snap else {
                    panic!("group {g} changed, got {snap:?}");
                };
                match job.archive().unwrap() {
                    Some(GroupSnapshot::Full(_)) => {
                        fulls += 1;
                        since_full[g as usize] = 0;
                    }
                    Some(GroupSnapshot::Delta(_)) => {
                        since_full[g as usize] += 1;
                        assert!(since_full[g as usize] <= MAX_CHAIN, "group {g} at {id}");
                    }
                    other => panic!("group {g} at checkpoint {id}: {other:?}"),
                }
            }
            if id == 1 {
                assert_eq!(fulls, GROUPS as usize, "the first checkpoint is full");
            } else {
                let most = (GROUPS as usize).div_ceil(MAX_CHAIN);
                assert!(
                    fulls <= most,
                    "checkpoint {id} compacted {fulls} groups (most {most})"
                );
            }
        }
    }

    #[test]
    fn state_lives_in_the_key_group_of_its_key() {
        let mut init = StateInit::<String>::new(128);
        let v = init.value::<u32>("count");
        let key = "user-7".to_string();
        let kg = key_group_of(&key, 128);
        v.set(&KeyCtx::new(&key, kg), 5);
        v.with_table(|t| {
            assert_eq!(t.entries(kg).count(), 1);
            let others: usize = (0..128u16)
                .filter(|g| *g != kg.0)
                .map(|g| t.entries(KeyGroup(g)).count())
                .sum();
            assert_eq!(others, 0);
        });
    }

    #[test]
    #[should_panic(expected = "declared twice")]
    fn a_state_name_is_declared_once() {
        let mut init = StateInit::<u8>::new(4);
        let _a = init.value::<u8>("x");
        let _b = init.list::<u8>("x");
    }
}
