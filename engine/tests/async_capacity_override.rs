//! A core file's `async_capacity` overrides `[async] capacity` of job.toml for the async
//! partitions on that core (what `rill-perf tune` writes).

use std::path::Path;
use std::sync::Mutex;

use rill_engine::config::{available_cpus, CoreConfig, JobConfig, JobSpec};
use rill_engine::pipelines;
use rill_engine::runtime::Job;

static SERIAL: Mutex<()> = Mutex::new(());

/// 20000 events/s at 500 µs per request: about 5 requests in flight per partition on 2
/// cores (10 on one), far above 2.
const JOB: &str = r#"
pipeline = "keyed-async"
[generator]
rate_eps = 20000
duration_ms = 300
warmup_ms = 50
[source]
keys = 100
[async]
mode = "ordered"
capacity = CAP
[lookup]
kind = "simulated"
delay_us = 500
"#;

fn run(dir: &Path, capacity: &str, core: CoreConfig) -> rill_engine::metrics::JobReport {
    let job: JobConfig = toml::from_str(&JOB.replace("CAP", capacity)).unwrap();
    job.validate(Path::new("job.toml")).unwrap();
    let cpus: Vec<usize> = available_cpus().into_iter().take(2).collect();
    let spec = JobSpec::with_cores(dir, job, &cpus, core);
    let graph = pipelines::build(&spec).unwrap();
    Job::new(spec, graph).run().unwrap()
}

#[test]
fn the_core_files_async_capacity_bounds_in_flight_requests_instead_of_the_jobs() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let cores = available_cpus().len().min(2) as u64;
    let dir = tempfile::tempdir().unwrap();
    let free = run(dir.path(), "100", CoreConfig::default());
    assert_eq!(free.counter("sink_records"), 6_000);
    assert!(
        free.counter("async_in_flight_max") > 2 * cores,
        "without the override more than 2 per partition are in flight: {}",
        free.counter("async_in_flight_max")
    );

    for capacity in ["100", "\"auto\""] {
        let dir = tempfile::tempdir().unwrap();
        let core = CoreConfig {
            async_capacity: Some(2),
            ..CoreConfig::default()
        };
        let r = run(dir.path(), capacity, core);
        assert_eq!(r.counter("sink_records"), 6_000, "capacity {capacity}");
        assert!(
            r.counter("async_in_flight_max") <= 2 * cores,
            "capacity {capacity}: in flight {} with async_capacity = 2 on {cores} cores",
            r.counter("async_in_flight_max")
        );
        assert_eq!(r.counter("async_capacity_auto_max"), 0, "not sized by auto");
    }
}
