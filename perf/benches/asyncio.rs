//! `asyncio`: the async operator's own cost per request (`asyncio::op`), in ordered and
//! unordered mode, with IO that costs next to nothing so the figure is the bookkeeping.
//!
//! Isolates one operator partition (capacity 100, timeout 10 s, no retry, no breaker, no
//! checkpoint participant) driven as the chain and the shard loop drive it: records are
//! handed in until the operator reports itself blocked (at capacity), then one `flush`
//! round runs, until every result is out. Per request that is: admit, issue (sequence
//! number, waker, timeout entry), call the function (one boxed future), poll it, complete,
//! emit in order (ordered) or at once (unordered), plus the per-request counters. The IO:
//!
//! * `ready` — the future is ready when first polled (`std::future::ready`): nothing but
//!   the operator's bookkeeping.
//! * `timer` — the future awaits a 1 ns `Sleep` on the core's timers under a manual clock
//!   moved by 1 ns per round, so every request parks, is woken by the timer at the next
//!   `flush` and is polled again: adds the timer heap, the waker and the woken list.
//!
//! Every result is counted and checked (ordered: each in input order; both: the sum of
//! all values); the operator must not have failed. Driver construction is untimed.
//! Excludes real IO (sockets, io_uring) and the rest of the shard loop. Element
//! throughput is requests/s. Ids: `asyncio/per_request/{ordered,unordered}/{ready,timer}`.
//!
//! Driven through `rill_engine::asyncio::bench::AsyncDriver`, which builds the real
//! operator (doc-hidden, for benchmarks only).
//!
//! Run: `cargo bench -p rill-perf --bench asyncio -- --warm-up-time 1 --measurement-time 3`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rill_engine::asyncio::bench::AsyncDriver;
use rill_engine::asyncio::{AsyncMode, AsyncOptions, BoxFuture, Capacity, ManualClock, Timers};
use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Flink's default capacity, as in the seed.
const CAPACITY: usize = 100;

#[derive(Clone, Copy)]
enum Io {
    Ready,
    Timer,
}

/// Runs `n` requests through a fresh operator; returns the time from the first record
/// handed in to the last result out.
fn run(mode: AsyncMode, io: Io, n: u64) -> Duration {
    let clock = ManualClock::default();
    let timers = Timers::new(Rc::new(clock.clone()));
    let t = timers.clone();
    let call = move |x: u64| -> BoxFuture<u64> {
        match io {
            Io::Ready => Box::pin(std::future::ready(Ok(vec![x]))),
            Io::Timer => {
                let sleep = t.sleep_ns(1);
                Box::pin(async move {
                    sleep.await;
                    Ok(vec![x])
                })
            }
        }
    };
    let (count, sum) = (Rc::new(Cell::new(0u64)), Rc::new(Cell::new(0u64)));
    let (c, s) = (count.clone(), sum.clone());
    let ordered = mode == AsyncMode::Ordered;
    let sink = move |x: u64| {
        if ordered {
            assert_eq!(x, c.get(), "ordered result out of order");
        }
        c.set(c.get() + 1);
        s.set(s.get().wrapping_add(x));
    };
    let opts = AsyncOptions::new()
        .mode(mode)
        .capacity(Capacity::Fixed(CAPACITY));
    let mut op = AsyncDriver::new(opts, timers, call, sink);
    let mut now = 0u64;
    let mut sent = 0u64;
    let start = Instant::now();
    while sent < n {
        while sent < n && !op.is_blocked() {
            op.data(sent);
            sent += 1;
        }
        now += 1;
        clock.set(now);
        op.flush(now);
    }
    while !op.is_drained() {
        now += 1;
        clock.set(now);
        op.flush(now);
        assert!(now < 2 * n + 10, "async operator does not drain");
    }
    let elapsed = start.elapsed();
    if let Some(e) = op.take_failure() {
        panic!("async operator failed: {e}");
    }
    assert_eq!(count.get(), n, "results lost or duplicated");
    assert_eq!(sum.get(), (0..n).fold(0u64, u64::wrapping_add));
    elapsed
}

fn per_request(c: &mut Criterion) {
    let mut g = c.benchmark_group("asyncio/per_request");
    g.throughput(Throughput::Elements(1));
    for (mode_name, mode) in [
        ("ordered", AsyncMode::Ordered),
        ("unordered", AsyncMode::Unordered),
    ] {
        for (io_name, io) in [("ready", Io::Ready), ("timer", Io::Timer)] {
            g.bench_function(BenchmarkId::new(mode_name, io_name), |b| {
                b.iter_custom(|iters| run(mode, io, iters))
            });
        }
    }
    g.finish();
}

criterion_group!(asyncio, per_request);
criterion_main!(asyncio);
