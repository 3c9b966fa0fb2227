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

use crate::ids::KeyGroup;
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
    groups: Vec<FastMap<K, S>>,
    /// With incremental checkpoints: per key group, the keys changed since the last
    /// snapshot of that group.
    dirty: Option<Vec<FastSet<K>>>,
    /// Per key group, how many deltas the group's chain in the log has (`None`: no chain
    /// yet, the next snapshot of the group is a full one).
    chain: Vec<Option<usize>>,
}

impl<K: Hash + Eq + Clone, S> KeyedTable<K, S> {
    fn new(max_key_groups: u16, incremental: bool) -> Self {
        let n = max_key_groups as usize;
        Self {
            groups: (0..n).map(|_| FastMap::default()).collect(),
            dirty: incremental.then(|| (0..n).map(|_| FastSet::default()).collect()),
            chain: vec![None; n],
        }
    }

    #[inline]
    fn group(&self, kg: KeyGroup) -> &FastMap<K, S> {
        &self.groups[kg.0 as usize]
    }

    /// The group of `key` for changing it (noted as changed for incremental snapshots).
    #[inline]
    fn group_mut(&mut self, kg: KeyGroup, key: &K) -> &mut FastMap<K, S> {
        if let Some(d) = &mut self.dirty {
            let set = &mut d[kg.0 as usize];
            if !set.contains(key) {
                set.insert(key.clone());
            }
        }
        &mut self.groups[kg.0 as usize]
    }

    /// Entries of one key group (for snapshots and tests).
    pub fn entries(&self, kg: KeyGroup) -> impl Iterator<Item = (&K, &S)> {
        self.group(kg).iter()
    }

    /// Number of keys with state, over all key groups.
    pub fn len(&self) -> usize {
        self.groups.iter().map(HashMap::len).sum()
    }

    /// Whether no key has state.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
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

/// What a snapshot of one key group is.
#[derive(Debug)]
pub(crate) enum GroupSnapshot {
    /// Every entry of the group (a new chain base).
    Full(rkyv::util::AlignedVec),
    /// The changes since the group's previous snapshot, on top of its chain.
    Delta(rkyv::util::AlignedVec),
    /// Nothing changed: the group's chain stays as it is.
    Unchanged,
    /// The group holds no state and has no chain.
    Empty,
}

/// A state table's part in checkpoints, with its types erased.
pub(crate) trait SnapshotTable {
    /// Archives key group `kg` (the synchronous part of a checkpoint). With incremental
    /// tracking, a group with a chain shorter than `max_chain` gets a delta.
    fn snapshot(&mut self, kg: KeyGroup, max_chain: usize) -> rill_storage::Result<GroupSnapshot>;
    /// Forgets every chain: the next snapshot of every group is a full one (after a
    /// failed checkpoint, whose deltas may be missing, and after a restore).
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

impl<K, S, A> SnapshotTable for TableSnapshots<K, S, A>
where
    K: Hash + Eq + Clone,
    (K, A): Entry<K = K, V = A>,
{
    fn snapshot(&mut self, kg: KeyGroup, max_chain: usize) -> rill_storage::Result<GroupSnapshot> {
        let mut t = self.table.borrow_mut();
        let g = kg.0 as usize;
        let depth = t.chain[g];
        let incremental = t.dirty.is_some();
        if incremental {
            if let Some(d) = depth.filter(|d| *d < max_chain) {
                let dirty = std::mem::take(&mut t.dirty.as_mut().expect("incremental")[g]);
                if dirty.is_empty() {
                    return Ok(GroupSnapshot::Unchanged);
                }
                let group = &t.groups[g];
                let mut ups = Vec::new();
                let mut dels = Vec::new();
                for k in dirty {
                    match group.get(&k) {
                        Some(s) => ups.push((k, (self.to)(s))),
                        None => dels.push(k),
                    }
                }
                let bytes = <(K, A)>::archive_delta(&mut ups, &mut dels)?;
                t.chain[g] = Some(d + 1);
                return Ok(GroupSnapshot::Delta(bytes));
            }
            t.dirty.as_mut().expect("incremental")[g].clear();
        }
        let group = &t.groups[g];
        if group.is_empty() {
            t.chain[g] = None;
            return Ok(GroupSnapshot::Empty);
        }
        let mut entries: Vec<(K, A)> = group
            .iter()
            .map(|(k, s)| (k.clone(), (self.to)(s)))
            .collect();
        let bytes = <(K, A)>::archive_full(&mut entries)?;
        t.chain[g] = Some(0);
        Ok(GroupSnapshot::Full(bytes))
    }

    fn reset_chains(&mut self) {
        let mut t = self.table.borrow_mut();
        t.chain.iter_mut().for_each(|c| *c = None);
    }

    fn restore(
        &mut self,
        kg: KeyGroup,
        chain: &[rill_storage::RecordView],
    ) -> rill_storage::Result<usize> {
        let entries = <(K, A)>::fold(chain)?;
        let n = entries.len();
        let mut t = self.table.borrow_mut();
        let group = &mut t.groups[kg.0 as usize];
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
