//! The async operator in whole jobs on (up to) 2 pinned cores: the `keyed-async`
//! pipeline in each mode, and with adaptive capacity.

use std::path::Path;
use std::sync::Mutex;

use rill_engine::config::{available_cpus, CoreConfig, JobConfig, JobSpec};
use rill_engine::pipelines;
use rill_engine::runtime::Job;

/// Jobs pin executors to the same CPUs; run them one at a time.
fn cpus() -> Vec<usize> {
    available_cpus().into_iter().take(2).collect()
}

static SERIAL: Mutex<()> = Mutex::new(());

fn run(dir: &Path, toml: &str) -> rill_engine::metrics::JobReport {
    let job: JobConfig = toml::from_str(toml).unwrap();
    job.validate(Path::new("job.toml")).unwrap();
    let spec = JobSpec::with_cores(dir, job, &cpus(), CoreConfig::default());
    let graph = pipelines::build(&spec).unwrap();
    Job::new(spec, graph).run().unwrap()
}

const JOB: &str = r#"
pipeline = "keyed-async"
[generator]
rate_eps = 20000
duration_ms = 300
warmup_ms = 50
[source]
keys = 100
[async]
mode = "MODE"
capacity = CAP
timeout_ms = 10000
[lookup]
kind = "simulated"
delay_us = 500
distribution = "DIST"
"#;

fn job(mode: &str, cap: &str, dist: &str) -> String {
    JOB.replace("MODE", mode)
        .replace("CAP", cap)
        .replace("DIST", dist)
}

#[test]
fn keyed_async_ordered_delivers_every_event_once_within_capacity() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let r = run(dir.path(), &job("ordered", "8", "fixed"));
    assert_eq!(r.counter("source_records"), 6_000);
    assert_eq!(r.counter("sink_records"), 6_000);
    assert_eq!(r.counter("async_attempts"), 6_000);
    assert_eq!(r.counter("async_timeouts"), 0);
    let cores = available_cpus().len().min(2) as u64;
    assert!(r.counter("async_in_flight_max") <= 8 * cores);
}

#[test]
fn keyed_async_unordered_with_lognormal_delays_delivers_every_event_once() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let r = run(dir.path(), &job("unordered", "100", "lognormal"));
    assert_eq!(r.counter("sink_records"), 6_000);
    assert_eq!(r.latency.len(), 5_000);
}

#[test]
fn keyed_async_with_auto_capacity_reports_the_size_it_chose() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let r = run(dir.path(), &job("ordered", "\"auto\"", "uniform"));
    assert_eq!(r.counter("sink_records"), 6_000);
    assert!(r.counter("async_capacity_auto_max") >= 1);
}

#[test]
fn keyed_async_on_a_thread_pool_delivers_every_event_once() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let toml = job("ordered", "16", "fixed") + "executor = \"thread-pool\"\npool_threads = 16\n";
    let r = run(dir.path(), &toml);
    assert_eq!(r.counter("sink_records"), 6_000);
}

#[test]
fn a_full_async_operator_backpressures_its_input_and_never_exceeds_capacity() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    // Capacity 2 at 500 µs per request: at most 4000 events/s per partition, well below
    // the offered 20000.
    let r = run(dir.path(), &job("ordered", "2", "fixed"));
    assert_eq!(r.counter("sink_records"), 6_000);
    let cores = available_cpus().len().min(2) as u64;
    assert!(r.counter("async_in_flight_max") <= 2 * cores);
    assert!(r.counter("backpressure_steps") > 0);
}
