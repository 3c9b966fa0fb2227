//! `state`: one keyed-state update, the per-record cost of `rill_engine::state`.
//!
//! Isolates `ValueState::update` (find the key's group, look the key up, change the value
//! in place) on a warm table of 100k `u64` keys over 128 key groups, visiting keys in a
//! scattered order (stride 7919) so the lookups are not all in cache. `full`: plain
//! tables; `incremental`: tables that also track changed keys for incremental
//! checkpoints (every key is already marked, as between two checkpoints). After the run
//! the sum of all counts is checked against the number of updates made. Excludes key
//! hashing into a key group (done once at `key_by`, precomputed here) and snapshots (see
//! `codec`). Ids: `state/value_update/{full,incremental}`.
//!
//! Run: `cargo bench -p rill-perf --bench state -- --warm-up-time 1 --measurement-time 3`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rill_engine::ids::KeyGroup;
use rill_engine::keys::key_group_of;
use rill_engine::state::{KeyCtx, StateInit};
use std::hint::black_box;

const KEYS: u64 = 100_000;
const KEY_GROUPS: u16 = 128;

fn value_update(c: &mut Criterion) {
    let keys: Vec<(u64, KeyGroup)> = (0..KEYS)
        .map(|k| (k, key_group_of(&k, KEY_GROUPS)))
        .collect();
    let mut g = c.benchmark_group("state/value_update");
    g.throughput(Throughput::Elements(1));
    for (name, incremental) in [("full", false), ("incremental", true)] {
        let mut init = StateInit::<u64>::with_incremental(KEY_GROUPS, incremental);
        let count = init.value::<u64>("count");
        for (k, kg) in &keys {
            count.set(&KeyCtx::new(k, *kg), 0);
        }
        let mut updates = 0u64;
        let mut i = 0usize;
        g.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                let (k, kg) = &keys[i % keys.len()];
                i = i.wrapping_add(7919);
                updates += 1;
                count.update(&KeyCtx::new(black_box(k), *kg), || 0, |c| *c += 1)
            });
        });
        let total: u64 = count.with_table(|t| {
            assert_eq!(t.len() as u64, KEYS, "keys appeared or vanished");
            (0..KEY_GROUPS)
                .flat_map(|g| t.entries(KeyGroup(g)).map(|(_, v)| *v).collect::<Vec<_>>())
                .sum()
        });
        assert_eq!(total, updates, "an update was lost");
    }
    g.finish();
}

criterion_group!(state, value_update);
criterion_main!(state);
