//! Cross-core hop benchmarks: what one record costs to move from core 0 to core 1.
//!
//! Owns: four criterion groups, run with
//! `CARGO_TARGET_DIR=/tmp/target-ring cargo bench -p rill-perf --bench ring`:
//!
//! * `hop/raw_cache_line` — two threads pinned to the first two cores bounce one cache
//!   line; reported time is one way (round trip / 2). The floor for any cross-core queue.
//! * `hop/ring` — one 8-byte message ping-pong over two `rill_engine::ring` rings with
//!   both sides busy-polling; one way (round trip / 2).
//! * `throughput/*` — 8-byte messages core 0 → core 1 with a busy consumer; criterion's
//!   element throughput is messages/s. Variants show the cost of batching and of
//!   `Doorbell::notify` (a SeqCst fence) per item versus per batch.
//! * `glommio_shared_channel/rtt` — the round trip over glommio's `shared_channel`
//!   between two executors pinned to the same two cores, for comparison.
//!
//! Must not: run on fewer than two cores (it prints a message and skips), or leave a
//! spinning thread behind after its group.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use crossbeam_utils::CachePadded;
use rill_engine::ring::{channel, Doorbell};
use rill_perf::{echo, Pinned};
use std::hint::spin_loop;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The first two cores, or `None` (with a message) if there are fewer.
fn two_cores() -> Option<(core_affinity::CoreId, core_affinity::CoreId)> {
    match core_affinity::get_core_ids() {
        Some(ids) if ids.len() >= 2 => Some((ids[0], ids[1])),
        _ => {
            eprintln!("ring bench: fewer than 2 cores available; skipping");
            None
        }
    }
}

fn raw_cache_line(c: &mut Criterion, echo_core: core_affinity::CoreId) {
    let line = Arc::new(CachePadded::new(AtomicU64::new(0)));
    let echo_line = Arc::clone(&line);
    let _echo = Pinned::spawn(echo_core, move |stop| {
        rill_perf::echo_line(&echo_line, stop)
    });
    let mut next = 1u64;
    c.benchmark_group("hop")
        .bench_function("raw_cache_line", |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    line.store(next, Ordering::Release);
                    while line.load(Ordering::Acquire) != next + 1 {
                        spin_loop();
                    }
                    next += 2;
                }
                start.elapsed() / 2
            })
        });
}

fn ring_ping_pong(c: &mut Criterion, echo_core: core_affinity::CoreId) {
    let (mut ping_tx, ping_rx) = channel::<u64>(64);
    let (pong_tx, mut pong_rx) = channel::<u64>(64);
    let _echo = Pinned::spawn(echo_core, move |stop| {
        echo(ping_rx, pong_tx, stop);
    });
    c.benchmark_group("hop").bench_function("ring", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for i in 0..iters {
                rill_perf::round_trip(&mut ping_tx, &mut pong_rx, i);
            }
            start.elapsed() / 2
        })
    });
}

/// How the producer in the throughput group publishes.
#[derive(Clone, Copy)]
enum Publish {
    /// `try_push` per message.
    PerItem,
    /// `try_push` + `Doorbell::notify` per message.
    NotifyPerItem,
    /// `push_iter` of up to 64 messages.
    Batch64,
    /// `push_iter` of up to 64 messages + one `notify` per batch.
    NotifyPerBatch,
}

fn throughput(c: &mut Criterion, consumer_core: core_affinity::CoreId) {
    let mut group = c.benchmark_group("throughput");
    group.throughput(Throughput::Elements(1));
    group.measurement_time(Duration::from_secs(3));
    for (name, publish) in [
        ("try_push", Publish::PerItem),
        ("notify_per_item", Publish::NotifyPerItem),
        ("push_iter_64", Publish::Batch64),
        ("notify_per_batch", Publish::NotifyPerBatch),
    ] {
        let (mut tx, mut rx) = channel::<u64>(4096);
        let bell = Arc::new(Doorbell::new());
        let received = Arc::new(CachePadded::new(AtomicU64::new(0)));
        let consumer_received = Arc::clone(&received);
        let _consumer = Pinned::spawn(consumer_core, move |stop| {
            let mut sum = 0u64;
            let mut count = 0u64;
            let mut idle = 0u32;
            loop {
                let n = rx.pop_batch(usize::MAX, |v| sum = sum.wrapping_add(v));
                if n > 0 {
                    count += n as u64;
                    consumer_received.store(count, Ordering::Release);
                } else {
                    idle = idle.wrapping_add(1);
                    if idle % 1024 == 0 && stop.load(Ordering::Relaxed) {
                        std::hint::black_box(sum);
                        return;
                    }
                    // Pause before re-reading `tail`: a consumer that outruns the producer
                    // and re-polls at once pulls the `tail` line away after every push
                    // (measured by `hop`: ~130 vs ~200 M msgs/s per-item on Zen 3).
                    for _ in 0..32 {
                        spin_loop();
                    }
                }
            }
        });
        let mut sent = 0u64;
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                let target = sent + iters;
                while sent < target {
                    match publish {
                        Publish::PerItem | Publish::NotifyPerItem => {
                            if tx.try_push(sent).is_ok() {
                                sent += 1;
                                if matches!(publish, Publish::NotifyPerItem) {
                                    bell.notify();
                                }
                            } else {
                                spin_loop();
                            }
                        }
                        Publish::Batch64 | Publish::NotifyPerBatch => {
                            let mut items = sent..(sent + 64).min(target);
                            let n = tx.push_iter(&mut items) as u64;
                            sent += n;
                            if n == 0 {
                                spin_loop();
                            } else if matches!(publish, Publish::NotifyPerBatch) {
                                bell.notify();
                            }
                        }
                    }
                }
                while received.load(Ordering::Acquire) < target {
                    spin_loop();
                }
                start.elapsed()
            })
        });
    }
    group.finish();
}

fn glommio_shared_channel(
    c: &mut Criterion,
    cores: (core_affinity::CoreId, core_affinity::CoreId),
) {
    use glommio::channels::shared_channel;
    use glommio::{LocalExecutorBuilder, Placement};

    let mut group = c.benchmark_group("glommio_shared_channel");
    group.sample_size(20);
    group.bench_function("rtt", |b| {
        b.iter_custom(|iters| {
            let (ping_tx, ping_rx) = shared_channel::new_bounded::<u64>(64);
            let (pong_tx, pong_rx) = shared_channel::new_bounded::<u64>(64);
            let echo = LocalExecutorBuilder::new(Placement::Fixed(cores.1.id))
                .spawn(move || async move {
                    let rx = ping_rx.connect().await;
                    let tx = pong_tx.connect().await;
                    while let Some(v) = rx.recv().await {
                        if tx.send(v).await.is_err() {
                            break;
                        }
                    }
                })
                .expect("spawn echo executor");
            let ping = LocalExecutorBuilder::new(Placement::Fixed(cores.0.id))
                .spawn(move || async move {
                    let tx = ping_tx.connect().await;
                    let rx = pong_rx.connect().await;
                    // One untimed round trip so both sides are connected and warm.
                    tx.send(u64::MAX).await.expect("echo alive");
                    rx.recv().await.expect("echo alive");
                    let start = Instant::now();
                    for i in 0..iters {
                        tx.send(i).await.expect("echo alive");
                        rx.recv().await.expect("echo alive");
                    }
                    start.elapsed()
                })
                .expect("spawn ping executor");
            let elapsed = ping.join().expect("ping executor");
            echo.join().expect("echo executor");
            elapsed
        })
    });
    group.finish();
}

fn benches(c: &mut Criterion) {
    let Some(cores) = two_cores() else { return };
    core_affinity::set_for_current(cores.0);
    raw_cache_line(c, cores.1);
    ring_ping_pong(c, cores.1);
    throughput(c, cores.1);
    glommio_shared_channel(c, cores);
}

criterion_group!(ring, benches);
criterion_main!(ring);
