//! `hop`: one-way cross-core latency percentiles of a raw cache line versus the rill ring,
//! the ring's batched throughput, and glommio's `shared_channel` round trip, in one run.
//!
//! Owns: its measurement loops and the printed report. Must not: run with fewer than two
//! cores (it exits with a message), or be used in tests (it busy-spins two cores).
//!
//! ```text
//! CARGO_TARGET_DIR=/tmp/target-ring cargo run --release -p rill-perf --bin hop
//! ```
//!
//! Method: the main thread is pinned to the first core from `core_affinity::get_core_ids()`,
//! an echo thread to the second. Each sample is one ping-pong round trip timed with two
//! `Instant::now()` reads (clock_gettime via the vDSO; the clocksource here is the invariant
//! TSC); the median cost of one back-to-back `Instant::now()` pair is measured first and
//! subtracted, and the one-way figure is the round trip / 2. Warm-up samples are run and
//! discarded before the recorded ones. Throughput is messages consumed per second on the
//! second core, median over several runs; the consumer drains with `pop_batch` and, when
//! the ring is empty, either re-polls at once or first executes 32 `spin_loop` hints (both
//! are reported: re-polling at once costs the producer a `tail` line transfer per push).

use anyhow::{anyhow, bail};
use clap::Parser;
use crossbeam_utils::CachePadded;
use hdrhistogram::Histogram;
use rill_engine::ring::channel;
use rill_perf::{echo, Pinned};
use std::hint::spin_loop;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
#[command(about = "Cross-core hop latency: raw cache line vs rill ring")]
struct Args {
    /// Recorded round trips per latency measurement.
    #[arg(long, default_value_t = 2_000_000)]
    samples: u64,
    /// Discarded round trips before recording.
    #[arg(long, default_value_t = 200_000)]
    warmup: u64,
    /// Messages per throughput run.
    #[arg(long, default_value_t = 100_000_000)]
    messages: u64,
    /// Throughput runs (the median is reported).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Round trips for the glommio shared_channel comparison (0 skips it).
    #[arg(long, default_value_t = 100_000)]
    glommio_samples: u64,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 10_000_000_000, 3).expect("valid histogram bounds")
}

/// Median nanoseconds between two back-to-back `Instant::now()` calls.
fn timer_overhead_ns() -> u64 {
    let mut h = histogram();
    for _ in 0..1_000_000 {
        let a = Instant::now();
        let b = Instant::now();
        h.saturating_record((b - a).as_nanos() as u64);
    }
    h.value_at_quantile(0.5)
}

/// Runs `warmup + samples` round trips through `round_trip` and returns one-way times.
fn one_way(args: &Args, overhead_ns: u64, mut round_trip: impl FnMut(u64)) -> Histogram<u64> {
    let mut h = histogram();
    for i in 0..args.warmup {
        round_trip(i);
    }
    for i in args.warmup..args.warmup + args.samples {
        let start = Instant::now();
        round_trip(i);
        let rtt = start.elapsed().as_nanos() as u64;
        h.saturating_record((rtt.saturating_sub(overhead_ns) / 2).max(1));
    }
    h
}

fn raw_cache_line(args: &Args, echo_core: core_affinity::CoreId, overhead: u64) -> Histogram<u64> {
    let line = Arc::new(CachePadded::new(AtomicU64::new(0)));
    let echo_line = Arc::clone(&line);
    let _echo = Pinned::spawn(echo_core, move |stop| {
        rill_perf::echo_line(&echo_line, stop)
    });
    one_way(args, overhead, |i| {
        let ping = 2 * i + 1;
        line.store(ping, Ordering::Release);
        while line.load(Ordering::Acquire) != ping + 1 {
            spin_loop();
        }
    })
}

fn ring(args: &Args, echo_core: core_affinity::CoreId, overhead: u64) -> Histogram<u64> {
    let (mut ping_tx, ping_rx) = channel::<u64>(64);
    let (pong_tx, mut pong_rx) = channel::<u64>(64);
    let _echo = Pinned::spawn(echo_core, move |stop| echo(ping_rx, pong_tx, stop));
    one_way(args, overhead, |i| {
        rill_perf::round_trip(&mut ping_tx, &mut pong_rx, i)
    })
}

/// Messages per second core 0 → core 1 through a 4096-slot ring, busy consumer. With
/// `batch == 1` the producer calls `try_push` per message, otherwise `push_iter` of up to
/// `batch`; the consumer always drains with `pop_batch`.
/// When the ring is empty the consumer executes `pauses` `spin_loop` hints before polling
/// again (0: re-poll at once).
fn throughput(
    messages: u64,
    batch: u64,
    pauses: usize,
    consumer_core: core_affinity::CoreId,
) -> f64 {
    let (mut tx, mut rx) = channel::<u64>(4096);
    let consumer = std::thread::spawn(move || {
        core_affinity::set_for_current(consumer_core);
        let mut sum = 0u64;
        let mut count = 0u64;
        let mut first = None;
        while count < messages {
            let n = rx.pop_batch(usize::MAX, |v| sum = sum.wrapping_add(v));
            if n > 0 {
                first.get_or_insert_with(Instant::now);
                count += n as u64;
            } else {
                // Empty: pause before re-reading `tail`, so a consumer that outruns the
                // producer does not pull the `tail` line away after every single push.
                spin_loop();
                for _ in 1..pauses {
                    spin_loop();
                }
            }
        }
        let elapsed = first.map_or(Duration::ZERO, |t| t.elapsed());
        assert_eq!(
            sum,
            messages * (messages - 1) / 2,
            "lost or duplicated messages"
        );
        elapsed
    });
    let mut sent = 0u64;
    while sent < messages {
        if batch == 1 {
            if tx.try_push(sent).is_ok() {
                sent += 1;
            } else {
                spin_loop();
            }
        } else {
            let mut items = sent..(sent + batch).min(messages);
            let n = tx.push_iter(&mut items) as u64;
            if n == 0 {
                spin_loop();
            }
            sent += n;
        }
    }
    let elapsed = consumer.join().expect("consumer panicked");
    messages as f64 / elapsed.as_secs_f64()
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    xs[xs.len() / 2]
}

/// Round-trip times over glommio's `shared_channel` between executors on the two cores.
fn glommio_rtt(samples: u64, cores: [core_affinity::CoreId; 2]) -> anyhow::Result<Histogram<u64>> {
    use glommio::channels::shared_channel;
    use glommio::{LocalExecutorBuilder, Placement};

    let (ping_tx, ping_rx) = shared_channel::new_bounded::<u64>(64);
    let (pong_tx, pong_rx) = shared_channel::new_bounded::<u64>(64);
    let echo = LocalExecutorBuilder::new(Placement::Fixed(cores[1].id))
        .spawn(move || async move {
            let rx = ping_rx.connect().await;
            let tx = pong_tx.connect().await;
            while let Some(v) = rx.recv().await {
                if tx.send(v).await.is_err() {
                    break;
                }
            }
        })
        .map_err(|e| anyhow!("spawn glommio echo executor: {e}"))?;
    let ping = LocalExecutorBuilder::new(Placement::Fixed(cores[0].id))
        .spawn(move || async move {
            let tx = ping_tx.connect().await;
            let rx = pong_rx.connect().await;
            let mut h = histogram();
            for i in 0..samples + samples / 10 {
                let start = Instant::now();
                tx.send(i).await.expect("echo alive");
                rx.recv().await.expect("echo alive");
                if i >= samples / 10 {
                    h.saturating_record(start.elapsed().as_nanos() as u64);
                }
            }
            h
        })
        .map_err(|e| anyhow!("spawn glommio ping executor: {e}"))?;
    let h = ping
        .join()
        .map_err(|e| anyhow!("glommio ping executor: {e}"))?;
    echo.join()
        .map_err(|e| anyhow!("glommio echo executor: {e}"))?;
    Ok(h)
}

fn pct(h: &Histogram<u64>) -> String {
    format!(
        "p50 {:>6} ns  p99 {:>6} ns  p99.9 {:>6} ns  (n={})",
        h.value_at_quantile(0.5),
        h.value_at_quantile(0.99),
        h.value_at_quantile(0.999),
        h.len()
    )
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    if cores.len() < 2 {
        bail!("hop needs at least 2 cores; found {}", cores.len());
    }
    let (main_core, echo_core) = (cores[0], cores[1]);
    if !core_affinity::set_for_current(main_core) {
        bail!("could not pin the main thread to core {}", main_core.id);
    }
    println!(
        "hop: main on core {}, echo/consumer on core {}",
        main_core.id, echo_core.id
    );
    let overhead = timer_overhead_ns();
    println!("timer: Instant::now() pair median {overhead} ns (subtracted from each RTT)");
    println!(
        "one-way latency = ping-pong RTT / 2; {} samples after {} warm-up",
        args.samples, args.warmup
    );

    let raw = raw_cache_line(&args, echo_core, overhead);
    println!("raw cache line  one-way: {}", pct(&raw));
    let ring = ring(&args, echo_core, overhead);
    println!("rill ring       one-way: {}", pct(&ring));
    let ratio = |q: f64| ring.value_at_quantile(q) as f64 / raw.value_at_quantile(q) as f64;
    println!(
        "ratio ring/raw: p50 {:.2}  p99 {:.2}  p99.9 {:.2}",
        ratio(0.5),
        ratio(0.99),
        ratio(0.999)
    );

    for (how, batch, pauses) in [
        ("try_push, consumer re-polls at once ", 1u64, 0usize),
        ("try_push, consumer pauses 32 if empty", 1, 32),
        ("push_iter(64), pauses 32 if empty    ", 64, 32),
    ] {
        let runs: Vec<f64> = (0..args.runs)
            .map(|_| throughput(args.messages, batch, pauses, echo_core))
            .collect();
        println!(
            "throughput {how}: median {:.1} M msgs/s ({} runs of {} msgs, min {:.1}, max {:.1})",
            median(runs.clone()) / 1e6,
            args.runs,
            args.messages,
            runs.iter().copied().fold(f64::INFINITY, f64::min) / 1e6,
            runs.iter().copied().fold(0.0, f64::max) / 1e6,
        );
    }

    if args.glommio_samples > 0 {
        let h = glommio_rtt(args.glommio_samples, [main_core, echo_core])?;
        println!("glommio shared_channel RTT: {}", pct(&h));
        println!(
            "  vs ring RTT p50 {} ns: glommio/ring = {:.1}x",
            2 * ring.value_at_quantile(0.5),
            h.value_at_quantile(0.5) as f64 / (2 * ring.value_at_quantile(0.5)) as f64
        );
    }
    Ok(())
}
