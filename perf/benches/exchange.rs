//! `exchange`: a barrier aligned by an exchange `Receiver` (`dataflow::exchange`) over N
//! ring inputs, as the shard loop's receiver driver does it.
//!
//! Isolates the receiver's per-barrier work: popping the barrier from each input's ring,
//! `InputSet` alignment, holding each input that delivered it until all have
//! (`exactly_once`; `at_least_once` holds nothing), the alignment statistics it notes on
//! the core's checkpoint state, and forwarding the completed barrier to the partition
//! (counted and checked). The barriers are pushed onto the rings before the clock starts,
//! 32 per input at a time; the core's checkpoint table is cleared between those runs,
//! untimed (in a job the coordinator completes them). Excludes the producing cores, data
//! records and the snapshot a barrier triggers (see `codec`). Element throughput is
//! barriers/s. Ids: `exchange/receiver_barrier/{exactly_once,at_least_once}/{2,8,64}`.
//!
//! Driven through `rill_engine::dataflow::bench::ReceiverDriver`, which builds the real
//! `Receiver` (doc-hidden, for benchmarks only).
//!
//! Run: `cargo bench -p rill-perf --bench exchange -- --warm-up-time 1 --measurement-time 3`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rill_engine::dataflow::bench::ReceiverDriver;
use std::time::{Duration, Instant};

/// Barriers queued per input before each timed run (the rings hold this many).
const CHUNK: u64 = 32;

fn receiver_barrier(c: &mut Criterion) {
    let mut g = c.benchmark_group("exchange/receiver_barrier");
    g.throughput(Throughput::Elements(1));
    for (mode, exactly_once) in [("exactly_once", true), ("at_least_once", false)] {
        for inputs in [2usize, 8, 64] {
            let id = BenchmarkId::new(mode, inputs);
            g.bench_with_input(id, &inputs, |b, &n| {
                let mut d = ReceiverDriver::new(n, CHUNK as usize * 4, exactly_once);
                let mut last = 0u64;
                b.iter_custom(|iters| {
                    let mut elapsed = Duration::ZERO;
                    let mut left = iters;
                    while left > 0 {
                        let k = left.min(CHUNK);
                        for id in last + 1..=last + k {
                            for i in 0..n {
                                assert!(d.push_barrier(i, id), "ring {i} full");
                            }
                        }
                        let target = d.barriers().0 + k;
                        // A receiver that stopped forwarding would spin here for ever.
                        let mut polls = 0u64;
                        let start = Instant::now();
                        while d.barriers().0 < target {
                            d.poll();
                            polls += 1;
                            assert!(polls <= 4 * k * n as u64, "receiver stalled");
                        }
                        elapsed += start.elapsed();
                        last += k;
                        assert_eq!(d.barriers(), (target, Some(last)));
                        d.forget_checkpoints(last);
                        left -= k;
                    }
                    elapsed
                })
            });
        }
    }
    g.finish();
}

criterion_group!(exchange, receiver_barrier);
criterion_main!(exchange);
