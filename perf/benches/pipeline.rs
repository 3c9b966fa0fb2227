//! Hot paths of the engine, each isolated:
//! - `input_set/barrier`: aligning one barrier over N inputs (`message::InputSet`), the
//!   bookkeeping every multi-input node does per barrier;
//! - `keyed_state/update`: one `ValueState::update` on a warm table of 100k keys, the
//!   per-record cost of keyed state;
//! - `pipeline/one_core`: one record through generator → map → key_by → keyed count →
//!   latency sink on a single core (no ring), amortised over a run of 2M records.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rill_engine::config::{available_cpus, JobSpec};
use rill_engine::ids::CheckpointId;
use rill_engine::keys::key_group_of;
use rill_engine::message::{Barrier, InputSet};
use rill_engine::pipelines;
use rill_engine::runtime::Job;
use rill_engine::state::{KeyCtx, StateInit};

fn input_set(c: &mut Criterion) {
    let mut g = c.benchmark_group("input_set/barrier");
    for inputs in [2usize, 8, 64] {
        g.throughput(Throughput::Elements(1));
        g.bench_with_input(BenchmarkId::from_parameter(inputs), &inputs, |b, &n| {
            let mut set = InputSet::new(n);
            let mut id = 0u64;
            b.iter(|| {
                id += 1;
                let bar = Barrier {
                    id: CheckpointId(id),
                };
                let mut done = None;
                for i in 0..n {
                    done = set.on_barrier(i, bar);
                }
                assert_eq!(done, Some(bar));
            });
        });
    }
    g.finish();
}

fn keyed_state(c: &mut Criterion) {
    let mut init = StateInit::<u64>::new(128);
    let count = init.value::<u64>("count");
    let keys: Vec<(u64, _)> = (0..100_000u64)
        .map(|k| (k, key_group_of(&k, 128)))
        .collect();
    for (k, kg) in &keys {
        count.set(&KeyCtx::new(k, *kg), 0);
    }
    let mut i = 0usize;
    c.bench_function("keyed_state/update", |b| {
        b.iter(|| {
            let (k, kg) = &keys[i % keys.len()];
            i = i.wrapping_add(7919);
            count.update(&KeyCtx::new(k, *kg), || 0, |c| *c += 1);
        });
    });
}

fn pipeline_one_core(c: &mut Criterion) {
    let cpu = available_cpus()[0];
    let mut g = c.benchmark_group("pipeline/one_core");
    g.sample_size(10);
    let events = 2_000_000u64;
    g.throughput(Throughput::Elements(events));
    g.bench_function("generator_keyby_count_sink", |b| {
        b.iter(|| {
            let spec = JobSpec::builtin_default(
                &[cpu],
                &[
                    // Far above what one core does: the generator runs flat out.
                    "generator.rate_eps=1000000000".into(),
                    format!("generator.duration_ms={}", events / 1_000_000),
                    "generator.warmup_ms=0".into(),
                ],
            )
            .unwrap();
            let graph = pipelines::build(&spec).unwrap();
            let report = Job::new(spec, graph).run().unwrap();
            assert_eq!(report.counter("sink_records"), events);
        });
    });
    g.finish();
}

criterion_group!(benches, input_set, keyed_state, pipeline_one_core);
criterion_main!(benches);
