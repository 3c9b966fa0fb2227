//! `message`: aligning one checkpoint barrier over N inputs in `message::InputSet`, the
//! decision every multi-input point (union, exchange receiver) makes per barrier.
//!
//! Isolates `InputSet::on_barrier` called once per input for one barrier id, the last call
//! completing it (asserted). Excludes rings, holding inputs back and the checkpoint
//! bookkeeping around it (see `exchange` for the receiver that does all of that).
//! Element throughput is barriers/s. Ids: `message/input_set_barrier/{2,8,64}`.
//!
//! Run: `cargo bench -p rill-perf --bench message -- --warm-up-time 1 --measurement-time 3`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rill_engine::ids::CheckpointId;
use rill_engine::message::{Barrier, InputSet};
use std::hint::black_box;

fn input_set_barrier(c: &mut Criterion) {
    let mut g = c.benchmark_group("message/input_set_barrier");
    g.throughput(Throughput::Elements(1));
    for inputs in [2usize, 8, 64] {
        g.bench_with_input(BenchmarkId::from_parameter(inputs), &inputs, |b, &n| {
            let mut set = InputSet::new(n);
            let mut id = 0u64;
            b.iter(|| {
                id += 1;
                let bar = Barrier::new(CheckpointId(id));
                let mut done = None;
                for i in 0..black_box(n) {
                    done = set.on_barrier(i, bar);
                }
                assert_eq!(done, Some(bar));
            });
        });
    }
    g.finish();
}

criterion_group!(message, input_set_barrier);
criterion_main!(message);
