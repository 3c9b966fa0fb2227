//! `log`: appending one record to a core's checkpoint log (`rill_storage::LogWriter`), with
//! and without waiting for it to be durable, next to plain `write` + `fdatasync`.
//!
//! Every variant appends records of 4 KiB, 64 KiB or 1 MiB one after another, each
//! awaited before the next, to a fresh log in a temp directory (opening and closing the
//! log are untimed); byte throughput is payload bytes/s. Each append returns a record
//! reference, kept from the optimizer with `black_box`; the writer's record count is
//! checked afterwards.
//!
//! * `log/append_durable/uring/*` — the engine's backend (`UringFs`: buffered writes and
//!   fdatasync on the core's own io_uring): an append resolves once written and synced.
//! * `log/append_durable/dma/*` — the same through glommio DMA files (O_DIRECT).
//! * `log/append_durable/raw_write_fdatasync/*` — the baseline: `write` + `fdatasync` of
//!   the same bytes to one file on the same disk, no framing. The ratio to it is the
//!   writer's overhead.
//! * `log/append_durable/dma_16_concurrent/*` — 16 appends in flight at once (group
//!   commit: they share writes and one fdatasync); throughput counts all 16.
//! * `log/append_no_sync/uring/*` — the engine's backend with `sync_data` answered at
//!   once: an append waits for its write to complete, not for durability.
//! * `log/append_no_io/*` — a file backend that completes every write and sync at once
//!   and keeps nothing: the writer's own work per append (framing, CRC32C, batching,
//!   padding to 4 KiB, the flush leader's bookkeeping).
//!
//! After the criterion groups it prints durable-append latency p50/p99/p99.9/max for
//! 64 KiB (uring backend and raw), 2800 appends each after 200 of warm-up.
//!
//! `RILL_BENCH_DIR=/path` puts the files on another disk (default: the system temp dir).
//! Run: `cargo bench -p rill-perf --bench log -- --warm-up-time 1 --measurement-time 3`.

use criterion::{BenchmarkId, Criterion, Throughput};
use hdrhistogram::Histogram;
use rill_storage::io::{LogFile, LogFs};
use rill_storage::{
    CheckpointId, CoreId, KeyGroupRange, LogConfig, LogWriter, OperatorId, Owner, PartitionId,
    RecordSpec, Uring, UringFs,
};
use std::hint::black_box;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

const SIZES: [(usize, &str); 3] = [(4 << 10, "4KiB"), (64 << 10, "64KiB"), (1 << 20, "1MiB")];

fn bench_dir() -> PathBuf {
    std::env::var_os("RILL_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
}

fn owner() -> Owner {
    Owner::new(OperatorId(1), PartitionId(0), KeyGroupRange::new(0, 128))
}

fn spec(i: u64) -> RecordSpec {
    RecordSpec::blob(CheckpointId(i), owner())
}

/// A file backend that forwards writes but answers `sync_data` at once.
struct NoSync<F>(F);
/// A segment of [`NoSync`].
struct NoSyncFile<FF>(FF);

impl<F: LogFs> LogFs for NoSync<F> {
    type File = NoSyncFile<F::File>;
    async fn create_segment(&self, path: &Path, capacity: u64) -> std::io::Result<Self::File> {
        Ok(NoSyncFile(self.0.create_segment(path, capacity).await?))
    }
}

impl<FF: LogFile> LogFile for NoSyncFile<FF> {
    async fn write_at(&self, data: &[u8], pos: u64) -> std::io::Result<usize> {
        self.0.write_at(data, pos).await
    }
    async fn sync_data(&self) -> std::io::Result<()> {
        Ok(())
    }
    async fn close(self) -> std::io::Result<()> {
        self.0.close().await
    }
}

/// A file backend whose writes and syncs complete at once and keep nothing.
struct NoIo;
/// A segment of [`NoIo`].
struct NoIoFile;

impl LogFs for NoIo {
    type File = NoIoFile;
    async fn create_segment(&self, _path: &Path, _capacity: u64) -> std::io::Result<NoIoFile> {
        Ok(NoIoFile)
    }
}

impl LogFile for NoIoFile {
    async fn write_at(&self, data: &[u8], _pos: u64) -> std::io::Result<usize> {
        Ok(black_box(data).len())
    }
    async fn sync_data(&self) -> std::io::Result<()> {
        Ok(())
    }
    async fn close(self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `iters` appends of `size` bytes, each awaited, on a fresh log with backend `fs`; the
/// futures are driven by `uring` (polled, blocking in the kernel while IO is in flight).
fn appends<F: LogFs>(uring: &Uring, fs: F, size: usize, iters: u64) -> Duration {
    let dir = tempfile::tempdir_in(bench_dir()).unwrap();
    let payload = vec![0xA5u8; size];
    let log = LogWriter::open_with(fs, dir.path(), CoreId(0), LogConfig::default()).unwrap();
    let elapsed = uring.block_on(async {
        let start = Instant::now();
        for i in 0..iters {
            black_box(log.append(spec(i), &payload).await.unwrap());
        }
        start.elapsed()
    });
    assert_eq!(log.stats().records, iters);
    uring.block_on(log.close()).unwrap();
    elapsed
}

fn executor() -> glommio::LocalExecutor {
    glommio::LocalExecutorBuilder::default()
        .make()
        .expect("glommio executor")
}

/// `iters` durable appends through glommio DMA files, one after another.
fn dma_appends(ex: &glommio::LocalExecutor, size: usize, iters: u64) -> Duration {
    let dir = tempfile::tempdir_in(bench_dir()).unwrap();
    let payload = vec![0xA5u8; size];
    ex.run(async {
        let log = LogWriter::open(dir.path(), CoreId(0), LogConfig::default())
            .await
            .unwrap();
        let start = Instant::now();
        for i in 0..iters {
            black_box(log.append(spec(i), &payload).await.unwrap());
        }
        let elapsed = start.elapsed();
        assert_eq!(log.stats().records, iters);
        log.close().await.unwrap();
        elapsed
    })
}

/// `iters` rounds of 16 concurrent durable appends through glommio DMA files.
fn dma_grouped_appends(ex: &glommio::LocalExecutor, size: usize, iters: u64) -> Duration {
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
                    glommio::spawn_local(
                        async move { log.append(spec(i), &payload).await.unwrap() },
                    )
                })
                .collect();
            for t in tasks {
                black_box(t.await);
            }
        }
        let elapsed = start.elapsed();
        assert_eq!(log.stats().records, 16 * iters);
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
    let uring = Rc::new(Uring::new(256).expect("io_uring"));
    let ex = executor();
    let mut g = c.benchmark_group("log/append_durable");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for (size, name) in SIZES {
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_function(BenchmarkId::new("uring", name), |b| {
            b.iter_custom(|n| appends(&uring, UringFs::new(uring.clone()), size, n))
        });
        g.bench_function(BenchmarkId::new("dma", name), |b| {
            b.iter_custom(|n| dma_appends(&ex, size, n))
        });
        g.bench_function(BenchmarkId::new("raw_write_fdatasync", name), |b| {
            b.iter_custom(|n| raw_write_fdatasync(size, n))
        });
        g.throughput(Throughput::Bytes(16 * size as u64));
        g.bench_function(BenchmarkId::new("dma_16_concurrent", name), |b| {
            b.iter_custom(|n| dma_grouped_appends(&ex, size, n))
        });
    }
    g.finish();

    let mut g = c.benchmark_group("log/append_no_sync");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for (size, name) in SIZES {
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_function(BenchmarkId::new("uring", name), |b| {
            b.iter_custom(|n| appends(&uring, NoSync(UringFs::new(uring.clone())), size, n))
        });
    }
    g.finish();

    let mut g = c.benchmark_group("log/append_no_io");
    g.sample_size(20).measurement_time(Duration::from_secs(3));
    for (size, name) in SIZES {
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter_custom(|n| appends(&uring, NoIo, size, n))
        });
    }
    g.finish();
}

fn percentile_report() {
    let uring = Rc::new(Uring::new(256).expect("io_uring"));
    let dir = tempfile::tempdir_in(bench_dir()).unwrap();
    let payload = vec![0x5Au8; 64 << 10];
    let log = LogWriter::open_with(
        UringFs::new(uring.clone()),
        dir.path(),
        CoreId(0),
        LogConfig::default(),
    )
    .unwrap();
    let mut rill = Histogram::<u64>::new(3).unwrap();
    uring.block_on(async {
        for i in 0..3000u64 {
            let t = Instant::now();
            black_box(log.append(spec(i), &payload).await.unwrap());
            if i >= 200 {
                rill.record(t.elapsed().as_nanos() as u64).unwrap();
            }
        }
    });
    uring.block_on(log.close()).unwrap();
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
    let us = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    for (name, h) in [
        ("rill durable append (uring)", &rill),
        ("raw write+fdatasync", &raw),
    ] {
        println!(
            "latency 64KiB {name:<28} n={} p50={:.1}us p99={:.1}us p99.9={:.1}us max={:.1}us",
            h.len(),
            us(h, 0.5),
            us(h, 0.99),
            us(h, 0.999),
            h.max() as f64 / 1000.0
        );
    }
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench_append(&mut c);
    c.final_summary();
    percentile_report();
}
