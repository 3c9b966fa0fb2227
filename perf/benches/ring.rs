//! `ring`: what one message costs on `rill_engine::ring` from core 0 to core 1, and the
//! cross-core floor it sits on.
//!
//! Isolates the SPSC ring and its `Doorbell`: 8-byte `u64` messages, both sides pinned to
//! the first two CPUs and busy-polling. Excludes `Message` framing, batching policy and the
//! shard loop (see `exchange` for the receiver, `bench/` for end to end). Groups:
//!
//! * `hop/raw_cache_line` — two threads bounce one cache line; one way (round trip / 2).
//!   The floor for any cross-core queue.
//! * `hop/ring` — one message ping-pong over two rings; one way (round trip / 2).
//! * `ring/core_to_core/{single,single_notify,batched_64,batched_64_notify}` — a stream
//!   core 0 → core 1 with a busy consumer that checks every message is the next in
//!   sequence; element throughput is messages/s. `single`: `try_push` / `try_pop` per
//!   message; `batched_64`: `push_iter` / `pop_batch` of up to 64; `_notify` adds
//!   `Doorbell::notify` (a SeqCst fence) per message or per batch.
//! * `glommio_shared_channel/rtt` — the round trip over glommio's `shared_channel`
//!   between two executors pinned to the same two cores, for comparison.
//!
//! Run: `cargo bench -p rill-perf --bench ring -- --warm-up-time 1 --measurement-time 3`.
//! Must not: run on fewer than two cores (it prints a message and skips), or leave a
//! spinning thread behind after its group.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use crossbeam_utils::CachePadded;
use rill_engine::ring::{channel, Doorbell};
use rill_perf::{echo, Pinned};
use std::hint::spin_loop;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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

/// How the two ends of the `ring/core_to_core` group move messages.
#[derive(Clone, Copy)]
enum Mode {
    /// `try_push` per message, `try_pop` per message.
    Single,
    /// `try_push` + `Doorbell::notify` per message, `try_pop` per message.
    SingleNotify,
    /// `push_iter` of up to 64 messages, `pop_batch` of up to 64.
    Batch64,
    /// `push_iter` of up to 64 messages + one `notify` per batch, `pop_batch` of up to 64.
    Batch64Notify,
}

impl Mode {
    fn batched(self) -> bool {
        matches!(self, Mode::Batch64 | Mode::Batch64Notify)
    }

    fn notifies(self) -> bool {
        matches!(self, Mode::SingleNotify | Mode::Batch64Notify)
    }
}

/// The consumer of `ring/core_to_core`: pops on its own core until stopped, checks that
/// every message is the next in sequence, and publishes how many it has taken.
fn consume(
    mut rx: rill_engine::ring::Consumer<u64>,
    mode: Mode,
    received: &AtomicU64,
    stop: &AtomicBool,
) {
    let mut count = 0u64;
    let mut idle = 0u32;
    loop {
        let before = count;
        if mode.batched() {
            rx.pop_batch(64, |v| {
                assert_eq!(v, count, "ring delivered {v} where {count} was next");
                count += 1;
            });
        } else {
            while let Some(v) = rx.try_pop() {
                assert_eq!(v, count, "ring delivered {v} where {count} was next");
                count += 1;
            }
        }
        if count > before {
            received.store(count, Ordering::Release);
        } else {
            idle = idle.wrapping_add(1);
            if idle % 1024 == 0 && stop.load(Ordering::Relaxed) {
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
}

fn core_to_core(c: &mut Criterion, consumer_core: core_affinity::CoreId) {
    let mut group = c.benchmark_group("ring/core_to_core");
    group.throughput(Throughput::Elements(1));
    group.measurement_time(Duration::from_secs(3));
    for (name, mode) in [
        ("single", Mode::Single),
        ("single_notify", Mode::SingleNotify),
        ("batched_64", Mode::Batch64),
        ("batched_64_notify", Mode::Batch64Notify),
    ] {
        let (mut tx, rx) = channel::<u64>(4096);
        let bell = Arc::new(Doorbell::new());
        let received = Arc::new(CachePadded::new(AtomicU64::new(0)));
        let consumer_received = Arc::clone(&received);
        let _consumer = Pinned::spawn(consumer_core, move |stop| {
            consume(rx, mode, &consumer_received, stop)
        });
        let mut sent = 0u64;
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                let target = sent + iters;
                while sent < target {
                    if mode.batched() {
                        let mut items = sent..(sent + 64).min(target);
                        let n = tx.push_iter(&mut items) as u64;
                        sent += n;
                        if n == 0 {
                            spin_loop();
                        } else if mode.notifies() {
                            bell.notify();
                        }
                    } else if tx.try_push(sent).is_ok() {
                        sent += 1;
                        if mode.notifies() {
                            bell.notify();
                        }
                    } else {
                        spin_loop();
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
    core_to_core(c, cores.1);
    glommio_shared_channel(c, cores);
}

criterion_group!(ring, benches);
criterion_main!(ring);
