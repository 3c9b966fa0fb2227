//! `codec`: archiving one key group's keyed state with rkyv at a barrier, and validating
//! and reading it back on restore — the work `checkpoint::codec` does per key group.
//!
//! Isolates, for one key group of a `ValueState` table holding 1k or 10k entries:
//!
//! * `codec/archive/*` — the synchronous part of a full snapshot: collect the group's
//!   entries from the live table (clone each), then `Entry::archive_full` (sort, rkyv
//!   serialize into an aligned buffer). These are the calls `state::TableSnapshots`
//!   makes for a full snapshot, made here through the public `ValueState::with_table`.
//!   The archive's length is checked against the one made before timing.
//! * `codec/validate/*` — `FullView::open` of the record as read from the log: kind
//!   check plus rkyv's validated access (bytecheck) over the whole archive; the entry
//!   count is checked. Reading the record (mmap, CRC32C) happens once, before timing.
//! * `codec/restore/*` — `Entry::fold` of the one-record chain, the engine's restore of a
//!   key group: validate the chain, then deserialize every entry; the count is checked.
//!   Inserting into the restored table is excluded.
//!
//! Entries are `u64 -> u64` (`u64_1k`, `u64_10k`) and `String -> u64` with 13-byte keys
//! (`string_10k`). Element throughput is entries/s. Excludes appending the archive to the
//! log (see `log`) and the checkpoint bookkeeping around it.
//!
//! Run: `cargo bench -p rill-perf --bench codec -- --warm-up-time 1 --measurement-time 3`.

use criterion::{BenchmarkGroup, BenchmarkId, Criterion, Throughput};
use rill_engine::checkpoint::codec::Entry;
use rill_engine::ids::KeyGroup;
use rill_engine::keys::key_group_of;
use rill_engine::state::{KeyCtx, StateInit, ValueState};
use rill_storage::{
    CheckpointId, CoreId, FullView, KeyGroupRange, LogConfig, LogReader, LogWriter, OperatorId,
    Owner, PartitionId, RecordView,
};
use std::hash::Hash;
use std::hint::black_box;

const KEY_GROUPS: u16 = 128;
/// The key group every benchmarked entry hashes to.
const GROUP: KeyGroup = KeyGroup(7);

/// The first `n` keys made by `make` (from 0, 1, 2, …) that hash to `GROUP`.
fn keys_in_group<K: Hash>(n: usize, make: impl Fn(u64) -> K) -> Vec<K> {
    (0u64..)
        .map(make)
        .filter(|k| key_group_of(k, KEY_GROUPS) == GROUP)
        .take(n)
        .collect()
}

/// Appends `bytes` as a full snapshot to a fresh log under `dir` and reads it back.
fn write_and_read(dir: &std::path::Path, bytes: &[u8]) -> RecordView {
    let owner = Owner::new(
        OperatorId(1),
        PartitionId(0),
        KeyGroupRange::new(u32::from(GROUP.0), u32::from(GROUP.0) + 1),
    );
    let ex = glommio::LocalExecutorBuilder::default()
        .make()
        .expect("glommio executor");
    let r = ex.run(async {
        let log = LogWriter::open(dir, CoreId(0), LogConfig::default())
            .await
            .expect("open log");
        let r = log
            .append_full(CheckpointId(1), owner, bytes)
            .await
            .expect("append");
        log.close().await.expect("close log");
        r
    });
    LogReader::new(dir).read(&r).expect("read back the record")
}

fn key_group<K>(
    g: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    keys: Vec<K>,
    validate: impl Fn(&RecordView) -> usize,
) where
    K: Clone + Hash + Eq + Ord + 'static,
    (K, u64): Entry<K = K, V = u64> + 'static,
{
    let n = keys.len();
    let mut init = StateInit::<K>::new(KEY_GROUPS);
    let state: ValueState<K, u64> = init.value("count");
    for (i, k) in keys.iter().enumerate() {
        state.set(&KeyCtx::new(k, GROUP), i as u64);
    }
    let snapshot = || {
        let mut entries: Vec<(K, u64)> =
            state.with_table(|t| t.entries(GROUP).map(|(k, v)| (k.clone(), *v)).collect());
        <(K, u64)>::archive_full(&mut entries).expect("archive")
    };
    let bytes = snapshot();
    println!(
        "codec {name}: {n} entries archive to {} bytes ({:.1} bytes/entry)",
        bytes.len(),
        bytes.len() as f64 / n as f64
    );
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function(BenchmarkId::new("archive", name), |b| {
        b.iter(|| {
            let a = snapshot();
            assert_eq!(a.len(), bytes.len());
            a
        })
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let record = write_and_read(dir.path(), &bytes);
    g.bench_function(BenchmarkId::new("validate", name), |b| {
        b.iter(|| assert_eq!(validate(black_box(&record)), n))
    });
    let chain = [record];
    g.bench_function(BenchmarkId::new("restore", name), |b| {
        b.iter(|| {
            let entries = <(K, u64)>::fold(black_box(&chain)).expect("fold");
            assert_eq!(entries.len(), n);
            entries
        })
    });
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let mut g = c.benchmark_group("codec");
    for n in [1_000, 10_000] {
        key_group(
            &mut g,
            &format!("u64_{}k", n / 1000),
            keys_in_group(n, |k| k),
            |r| FullView::<u64, u64>::open(r).expect("valid").len(),
        );
    }
    key_group(
        &mut g,
        "string_10k",
        keys_in_group(10_000, |k| format!("user-{k:08}")),
        |r| FullView::<String, u64>::open(r).expect("valid").len(),
    );
    g.finish();
    c.final_summary();
}
