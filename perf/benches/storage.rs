//! Criterion benchmarks of the checkpoint log (rill-storage), plus one-shot reports criterion
//! cannot give (latency percentiles, snapshot sizes, the 1 GB restore-start time).
//!
//! `cargo bench -p rill-perf --bench storage` runs the default set in a few minutes.
//! `RILL_BENCH_1G=1` adds the 1 GB snapshot restore-start measurement (writes ~1 GB).
//! `RILL_BENCH_DIR=/path` puts the files on another disk (default: the system temp dir).
//!
//! Figures: durable append throughput for 4 KiB / 64 KiB / 1 MiB records next to plain
//! `write` + `fdatasync` of the same sizes to the same disk (the ratio is the figure), group
//! commit with 16 concurrent appenders, durable-append latency p50/p99 for 64 KiB, and a
//! 1M-entry u64 -> u64 snapshot: bytes, archive time, cold open + validate, 1M lookups.
#![allow(unsafe_code)] // posix_fadvise(DONTNEED) to make reads cold; see the SAFETY note.

use criterion::{BenchmarkId, Criterion, Throughput};
use hdrhistogram::Histogram;
use rill_storage::*;
use std::hint::black_box;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

const SIZES: [(usize, &str); 3] = [(4 << 10, "4KiB"), (64 << 10, "64KiB"), (1 << 20, "1MiB")];

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

/// `iters` durable appends of `size` bytes, one after another (each waits for its fsync).
fn durable_appends(ex: &glommio::LocalExecutor, size: usize, iters: u64) -> Duration {
    let dir = tempfile::tempdir_in(bench_dir()).unwrap();
    let payload = vec![0xA5u8; size];
    ex.run(async {
        let log = LogWriter::open(dir.path(), CoreId(0), LogConfig::default())
            .await
            .unwrap();
        let start = Instant::now();
        for i in 0..iters {
            black_box(
                log.append(RecordSpec::blob(CheckpointId(i), owner()), &payload)
                    .await
                    .unwrap(),
            );
        }
        let elapsed = start.elapsed();
        log.close().await.unwrap();
        elapsed
    })
}

/// `iters` rounds of 16 concurrent durable appends (group commit shares writes and fsyncs).
fn grouped_appends(ex: &glommio::LocalExecutor, size: usize, iters: u64) -> Duration {
    let dir = tempfile::tempdir_in(bench_dir()).unwrap();
    let payload = Rc::new(vec![0xA5u8; size]);
    ex.run(async {
        let log = Rc::new(
            LogWriter::open(dir.path(), CoreId(0), LogConfig::default())
                .await
                .unwrap(),
        );
        let start = Instant::now();
        for i in 0..iters {
            let tasks: Vec<_> = (0..16)
                .map(|_| {
                    let (log, payload) = (log.clone(), payload.clone());
                    glommio::spawn_local(async move {
                        log.append(RecordSpec::blob(CheckpointId(i), owner()), &payload)
                            .await
                            .unwrap()
                    })
                })
                .collect();
            for t in tasks {
                black_box(t.await);
            }
        }
        let elapsed = start.elapsed();
        Rc::try_unwrap(log).ok().unwrap().close().await.unwrap();
        elapsed
    })
}

/// The baseline: plain buffered `write` + `fdatasync` of `size` bytes, appended to one file.
fn raw_write_fdatasync(size: usize, iters: u64) -> Duration {
    let dir = tempfile::tempdir_in(bench_dir()).unwrap();
    let mut f = std::fs::File::create(dir.path().join("raw")).unwrap();
    let payload = vec![0xA5u8; size];
    let start = Instant::now();
    for _ in 0..iters {
        f.write_all(&payload).unwrap();
        f.sync_data().unwrap();
    }
    start.elapsed()
}

fn bench_append(c: &mut Criterion) {
    let ex = executor();
    let mut g = c.benchmark_group("append_durable");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for (size, name) in SIZES {
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_function(BenchmarkId::new("rill_log", name), |b| {
            b.iter_custom(|n| durable_appends(&ex, size, n))
        });
        g.bench_function(BenchmarkId::new("raw_write_fdatasync", name), |b| {
            b.iter_custom(|n| raw_write_fdatasync(size, n))
        });
        g.throughput(Throughput::Bytes(16 * size as u64));
        g.bench_function(BenchmarkId::new("rill_log_16_concurrent", name), |b| {
            b.iter_custom(|n| grouped_appends(&ex, size, n))
        });
    }
    g.finish();
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
    let mut g = c.benchmark_group("snapshot_1M_u64");
    g.sample_size(10).measurement_time(Duration::from_secs(3));
    g.bench_function("archive", |b| {
        b.iter_batched(
            || sorted_entries(N),
            |mut e| archive_full(&mut e).unwrap(),
            criterion::BatchSize::LargeInput,
        )
    });
    let dir = tempfile::tempdir_in(bench_dir()).unwrap();
    let bytes = archive_full(&mut sorted_entries(N)).unwrap();
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
    g.throughput(Throughput::Elements(N));
    g.bench_function("lookup_1M_random_keys", |b| {
        b.iter(|| {
            keys.iter()
                .map(|k| view.get(k).map_or(0, |v| v.to_native()))
                .fold(0u64, u64::wrapping_add)
        })
    });
    g.finish();
}

fn percentile_report() {
    let ex = executor();
    let dir = tempfile::tempdir_in(bench_dir()).unwrap();
    let payload = vec![0x5Au8; 64 << 10];
    let (rill, raw) = ex.run(async {
        let log = LogWriter::open(dir.path(), CoreId(0), LogConfig::default())
            .await
            .unwrap();
        let mut h = Histogram::<u64>::new(3).unwrap();
        for i in 0..3000u64 {
            let t = Instant::now();
            black_box(
                log.append(RecordSpec::blob(CheckpointId(i), owner()), &payload)
                    .await
                    .unwrap(),
            );
            if i >= 200 {
                h.record(t.elapsed().as_nanos() as u64).unwrap();
            }
        }
        log.close().await.unwrap();
        let mut raw = Histogram::<u64>::new(3).unwrap();
        let mut f = std::fs::File::create(dir.path().join("raw")).unwrap();
        for i in 0..3000u64 {
            let t = Instant::now();
            f.write_all(&payload).unwrap();
            f.sync_data().unwrap();
            if i >= 200 {
                raw.record(t.elapsed().as_nanos() as u64).unwrap();
            }
        }
        (h, raw)
    });
    let us = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    for (name, h) in [
        ("rill durable append", &rill),
        ("raw write+fdatasync", &raw),
    ] {
        println!(
            "latency 64KiB {name:<22} n={} p50={:.1}us p99={:.1}us p99.9={:.1}us max={:.1}us",
            h.len(),
            us(h, 0.5),
            us(h, 0.99),
            us(h, 0.999),
            h.max() as f64 / 1000.0
        );
    }
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
    bench_append(&mut c);
    bench_snapshot(&mut c);
    c.final_summary();
    percentile_report();
    snapshot_size_report();
    one_gigabyte_report();
}
