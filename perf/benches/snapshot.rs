//! `snapshot`: a 1M-entry keyed-state snapshot in `rill_storage::snapshot`: archiving it,
//! opening it cold from the log, and looking keys up in place.
//!
//! Isolates, for 1M sorted `u64 -> u64` entries (one large key-group range):
//!
//! * `snapshot/1M_u64/archive` — `archive_full` (sort + rkyv) of entries made untimed.
//! * `snapshot/1M_u64/cold_open_validate_first_key` — with the segment dropped from the
//!   page cache (`posix_fadvise(DONTNEED)`, untimed): load the checkpoint (manifest, mmap,
//!   header and CRC32C), rkyv-validate the archive and read the first key.
//! * `snapshot/1M_u64/lookup_1M_random_keys` — 1M lookups in a shuffled order on the
//!   mapped archive (binary search in place); element throughput is lookups/s.
//!
//! After the groups it prints the archive size, and with `RILL_BENCH_1G=1` a one-shot
//! restore-start time for a 1 GB snapshot (writes ~1 GB). Per key group archive and
//! validate as the checkpoint path does them are in `codec`; appends in `log`.
//!
//! `RILL_BENCH_DIR=/path` puts the files on another disk (default: the system temp dir).
//! Run: `cargo bench -p rill-perf --bench snapshot -- --warm-up-time 1 --measurement-time 3`.
#![allow(unsafe_code)] // posix_fadvise(DONTNEED) to make reads cold; see the SAFETY note.

use criterion::{Criterion, Throughput};
use rill_storage::*;
use std::hint::black_box;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn bench_dir() -> PathBuf {
    std::env::var_os("RILL_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
}

fn executor() -> glommio::LocalExecutor {
    glommio::LocalExecutorBuilder::default()
        .make()
        .expect("glommio executor")
}

fn owner() -> Owner {
    Owner::new(OperatorId(1), PartitionId(0), KeyGroupRange::new(0, 128))
}

/// Drops `path` from the page cache so the next read comes from the disk.
fn make_cold(path: &Path) {
    let f = std::fs::File::open(path).expect("open for fadvise");
    f.sync_all().ok();
    // SAFETY: posix_fadvise only takes an fd we own for the duration of the call and plain
    // integers; it has no memory-safety preconditions.
    let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(rc, 0, "posix_fadvise failed");
}

fn sorted_entries(n: u64) -> Vec<(u64, u64)> {
    (0..n).map(|k| (k * 2, k ^ 0xDEAD_BEEF)).collect()
}

/// Writes a full snapshot of `entries` through the log and publishes it as checkpoint 1.
fn write_snapshot(root: &Path, bytes: &[u8]) -> RecordRef {
    let ex = executor();
    let r = ex.run(async {
        let log = LogWriter::open(root, CoreId(0), LogConfig::default())
            .await
            .unwrap();
        let r = log
            .append_full(CheckpointId(1), owner(), bytes)
            .await
            .unwrap();
        log.close().await.unwrap();
        r
    });
    CheckpointStore::new(root)
        .publish(&Manifest::new(CheckpointId(1), vec![r], Vec::new()))
        .unwrap();
    r
}

/// Open + validate from a cold page cache until the first key is read; returns the time.
fn cold_restore_start(root: &Path, r: &RecordRef, first_key: u64) -> Duration {
    make_cold(&layout::segment_path(root, r.core, r.segment));
    let start = Instant::now();
    let store = CheckpointStore::new(root);
    let cp = store.load(CheckpointId(1)).unwrap(); // maps, checks header and CRC
    let view = FullView::<u64, u64>::open(&cp.chain(&owner()).unwrap()[0]).unwrap(); // bytecheck
    black_box(view.get(&first_key).unwrap());
    start.elapsed()
}

fn bench_snapshot(c: &mut Criterion) {
    const N: u64 = 1_000_000;
    let mut g = c.benchmark_group("snapshot/1M_u64");
    g.sample_size(10).measurement_time(Duration::from_secs(3));
    let bytes = archive_full(&mut sorted_entries(N)).unwrap();
    g.bench_function("archive", |b| {
        b.iter_batched(
            || sorted_entries(N),
            |mut e| {
                let a = archive_full(&mut e).unwrap();
                assert_eq!(a.len(), bytes.len());
                a
            },
            criterion::BatchSize::LargeInput,
        )
    });
    let dir = tempfile::tempdir_in(bench_dir()).unwrap();
    let r = write_snapshot(dir.path(), &bytes);
    g.bench_function("cold_open_validate_first_key", |b| {
        b.iter_custom(|n| (0..n).map(|_| cold_restore_start(dir.path(), &r, 0)).sum())
    });
    let store = CheckpointStore::new(dir.path());
    let cp = store.load(CheckpointId(1)).unwrap();
    let view = FullView::<u64, u64>::open(&cp.chain(&owner()).unwrap()[0]).unwrap();
    let keys: Vec<u64> = {
        use rand::seq::SliceRandom;
        let mut k: Vec<u64> = (0..N).map(|k| k * 2).collect();
        k.shuffle(&mut <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(1));
        k
    };
    let expected = sorted_entries(N)
        .iter()
        .fold(0u64, |s, (_, v)| s.wrapping_add(*v));
    g.throughput(Throughput::Elements(N));
    g.bench_function("lookup_1M_random_keys", |b| {
        b.iter(|| {
            let sum = keys
                .iter()
                .map(|k| view.get(k).map_or(0, |v| v.to_native()))
                .fold(0u64, u64::wrapping_add);
            assert_eq!(sum, expected, "a lookup missed");
        })
    });
    g.finish();
}

fn snapshot_size_report() {
    let bytes = archive_full(&mut sorted_entries(1_000_000)).unwrap();
    println!(
        "snapshot 1M u64->u64: archive {} bytes ({:.2} MiB, {:.1} bytes/entry), framed record {} bytes",
        bytes.len(),
        bytes.len() as f64 / (1 << 20) as f64,
        bytes.len() as f64 / 1e6,
        bytes.len() + 64
    );
}

fn one_gigabyte_report() {
    if std::env::var_os("RILL_BENCH_1G").is_none() {
        println!("restore-start 1 GB: skipped (set RILL_BENCH_1G=1)");
        return;
    }
    let n = (1u64 << 30) / 16; // 16 bytes per archived (u64, u64)
    let dir = tempfile::tempdir_in(bench_dir()).unwrap();
    let t = Instant::now();
    let bytes = archive_full(&mut sorted_entries(n)).unwrap();
    let archive = t.elapsed();
    let t = Instant::now();
    let r = write_snapshot(dir.path(), &bytes);
    let write = t.elapsed();
    drop(bytes);
    let mut cold: Vec<Duration> = (0..3)
        .map(|_| cold_restore_start(dir.path(), &r, 0))
        .collect();
    cold.sort();
    let warm = {
        let t = Instant::now();
        let store = CheckpointStore::new(dir.path());
        let cp = store.load(CheckpointId(1)).unwrap();
        let view = FullView::<u64, u64>::open(&cp.chain(&owner()).unwrap()[0]).unwrap();
        black_box(view.get(&0).unwrap());
        t.elapsed()
    };
    println!(
        "restore-start 1 GB ({} entries, record {} bytes): cold open+CRC+validate+first key median {:?} (runs {:?}), warm page cache {:?}; archive {:?}, durable append {:?}",
        n, r.len, cold[1], cold, warm, archive, write
    );
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench_snapshot(&mut c);
    c.final_summary();
    snapshot_size_report();
    one_gigabyte_report();
}
