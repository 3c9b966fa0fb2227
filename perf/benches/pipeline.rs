//! `pipeline`: one record through a whole job on one core, for scale next to the hot paths
//! measured one at a time in the other benches.
//!
//! Isolates nothing: the built-in `latency` pipeline (generator → map → key_by → keyed
//! count → latency sink) runs on the first CPU with no ring, 2M records flat out; the job
//! start and stop are inside the time, amortised over the run. The sink's record count is
//! checked. Ids: `pipeline/one_core/generator_keyby_count_sink` (defaults: the stall
//! detector notes every operator call on the core's probe, the monitor thread samples it
//! and serves the metrics endpoint) and `…/monitor_off` (`[diagnostics]
//! stall_threshold_ms = 0`, `[metrics] listen = "off"`): the difference is what the
//! diagnostics cost on the record path.
//!
//! Run: `cargo bench -p rill-perf --bench pipeline -- --warm-up-time 1 --measurement-time 3`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rill_engine::config::{available_cpus, JobSpec};
use rill_engine::pipelines;
use rill_engine::runtime::Job;

fn pipeline_one_core(c: &mut Criterion) {
    let cpu = available_cpus()[0];
    let mut g = c.benchmark_group("pipeline/one_core");
    g.sample_size(10);
    let events = 2_000_000u64;
    g.throughput(Throughput::Elements(events));
    for (id, extra) in [
        ("generator_keyby_count_sink", &[][..]),
        (
            "generator_keyby_count_sink/monitor_off",
            &["diagnostics.stall_threshold_ms=0", "metrics.listen=\"off\""][..],
        ),
    ] {
        g.bench_function(id, |b| {
            b.iter(|| {
                let mut sets = vec![
                    // Far above what one core does: the generator runs flat out.
                    "generator.rate_eps=1000000000".to_string(),
                    format!("generator.duration_ms={}", events / 1_000_000),
                    "generator.warmup_ms=0".into(),
                ];
                sets.extend(extra.iter().map(|s| s.to_string()));
                let spec = JobSpec::builtin_default(&[cpu], &sets).unwrap();
                let graph = pipelines::build(&spec).unwrap();
                let report = Job::new(spec, graph).run().unwrap();
                assert_eq!(report.counter("sink_records"), events);
            });
        });
    }
    g.finish();
}

criterion_group!(pipeline, pipeline_one_core);
criterion_main!(pipeline);
