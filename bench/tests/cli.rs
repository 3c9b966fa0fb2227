//! The `rill-bench` binary end to end: a short run writes a JSON report with the required
//! keys and plot files; a tiny sweep writes its table, JSON and plot; compare flags a
//! regression; bad scenarios and overrides fail with errors that name the problem.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Mutex;

/// Runs pin executors to the same CPUs; one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rill-bench"))
        .args(args)
        .output()
        .expect("run rill-bench")
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Tests use at most 2 CPUs.
fn two_or_fewer() -> String {
    rill_engine::config::available_cpus()
        .len()
        .min(2)
        .to_string()
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn at<'a>(v: &'a serde_json::Value, path: &str) -> &'a serde_json::Value {
    path.split('.')
        .try_fold(v, |v, k| v.get(k))
        .unwrap_or_else(|| panic!("report has no `{path}`"))
}

#[test]
fn a_short_run_writes_a_report_and_plots_and_compare_reads_it() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("run.json");
    let plots = dir.path().join("plots");
    let o = bench(&[
        "run",
        "latency",
        "--rate",
        "20000",
        "--duration",
        "1",
        "--warmup",
        "0.5",
        "--cores",
        &two_or_fewer(),
        "--set",
        "generator.keys=500",
        "--json",
        report.to_str().unwrap(),
        "--plot",
        plots.to_str().unwrap(),
        "--peer",
        "timely",
        "--quiet",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("p99.9") && stdout.contains("timely (peer)"),
        "{stdout}"
    );
    let r = json(&report);
    for key in [
        "throughput_eps",
        "latency_us.p50",
        "latency_us.p90",
        "latency_us.p99",
        "latency_us.p999",
        "latency_us.p9999",
        "latency_us.max",
        "latency_samples.total",
        "latency_samples.p9999",
        "checkpoints.completed",
        "checkpoints.failed",
        "checkpoints.bytes",
        "async.in_flight_max",
        "async.timeouts",
        "async.retries",
        "cpu.process_s",
        "config.job.generator.rate_eps",
        "config.cores",
        "config.overrides",
        "load.offered_eps",
        "load.cpus",
        "machine.cpu_model",
        "machine.kernel",
        "peer.p999_ratio",
        "peer.throughput_ratio",
        "timeline",
    ] {
        at(&r, key);
    }
    assert_eq!(at(&r, "config.job.generator.rate_eps"), 20_000);
    assert_eq!(at(&r, "config.job.generator.keys"), 500);
    // 1 s measured at 20k/s after a 0.5 s warm-up: exactly 20,000 measured events, and
    // the engine's schedule is warm-up + duration.
    assert_eq!(at(&r, "latency_samples.total"), 20_000);
    assert_eq!(at(&r, "load.duration_s"), 1.0);
    assert_eq!(at(&r, "load.warmup_s"), 0.5);
    assert_eq!(at(&r, "config.job.generator.duration_ms"), 1_500);
    assert_eq!(at(&r, "expected_samples"), 20_000);
    assert!(at(&r, "throughput_eps").as_f64().unwrap() > 0.0);
    for f in [
        "latency-spectrum.svg",
        "latency-over-time.svg",
        "rate-over-time.svg",
    ] {
        let svg = std::fs::read_to_string(plots.join(f)).unwrap();
        assert!(svg.starts_with("<svg"), "{f}");
    }

    // Comparing a report with itself finds nothing; with a worse copy, a regression.
    let o = bench(&[
        "compare",
        report.to_str().unwrap(),
        report.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("±10%"));
    let mut worse = r.clone();
    worse["latency_us"]["p999"] =
        serde_json::json!(r["latency_us"]["p999"].as_f64().unwrap() * 3.0 + 10.0);
    let worse_path = dir.path().join("worse.json");
    std::fs::write(&worse_path, worse.to_string()).unwrap();
    let o = bench(&[
        "compare",
        report.to_str().unwrap(),
        worse_path.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("REGRESSION"));
}

#[test]
fn a_small_sweep_prints_the_table_and_writes_json_and_plots() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("sweep.json");
    let plots = dir.path().join("plots");
    let o = bench(&[
        "sweep",
        "latency",
        "--param",
        "generator.rate_eps",
        "--values",
        "5000,10000",
        "--duration",
        "0.8",
        "--warmup",
        "0.2",
        "--target-p999-us",
        "1000000",
        "--json",
        report.to_str().unwrap(),
        "--plot",
        plots.to_str().unwrap(),
        "--quiet",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("rate_eps") && stdout.contains("10000"),
        "{stdout}"
    );
    let r = json(&report);
    assert_eq!(r["runs"].as_array().unwrap().len(), 2);
    assert_eq!(r["runs"][1]["report"]["load"]["offered_eps"], 10_000);
    assert_eq!(r["kind"], "Rate");
    assert!(std::fs::read_to_string(plots.join("sweep-latency.svg"))
        .unwrap()
        .starts_with("<svg"));
}

#[test]
fn rate_max_runs_flat_out_for_the_duration_and_reports_throughput() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("q0.json");
    // The old meaning (--duration × 10⁹ events) never ended; now the harness ends the
    // sources after warm-up + duration. No time is asserted, only that it ends.
    let o = bench(&[
        "run",
        "nexmark-q0",
        "--rate",
        "max",
        "--duration",
        "0.5",
        "--warmup",
        "0.3",
        "--cores",
        &two_or_fewer(),
        "--json",
        report.to_str().unwrap(),
        "--quiet",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("flat out"), "{stdout}");
    assert!(!stdout.contains("DID NOT KEEP UP"), "{stdout}");
    let r = json(&report);
    assert_eq!(at(&r, "load.flat_out"), true);
    assert_eq!(at(&r, "load.duration_s"), 0.5);
    assert_eq!(at(&r, "load.warmup_s"), 0.3);
    assert_eq!(at(&r, "kept_up"), true);
    assert!(at(&r, "throughput_eps").as_f64().unwrap() > 0.0, "{stdout}");
    assert!(at(&r, "window.events").as_u64().unwrap() > 0, "{stdout}");
    assert!(at(&r, "window.throughput_per_core_eps").as_f64().unwrap() > 0.0);
    let cpus = at(&r, "load.cpus").as_array().unwrap().len();
    assert_eq!(
        at(&r, "window.per_core_eps").as_object().unwrap().len(),
        cpus
    );
    assert!(!at(&r, "window.cpu_per_core_s")
        .as_object()
        .unwrap()
        .is_empty());
}

#[test]
fn an_open_loop_nexmark_run_reports_its_source_rate() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("q1.json");
    let o = bench(&[
        "run",
        "nexmark-q1",
        "--rate",
        "20000",
        "--duration",
        "0.6",
        "--warmup",
        "0.3",
        "--cores",
        &two_or_fewer(),
        "--json",
        report.to_str().unwrap(),
        "--quiet",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let r = json(&report);
    // Results are discarded: no latency samples, yet the run has a throughput and is
    // not judged by samples it cannot have.
    assert_eq!(at(&r, "latency_samples.total"), 0);
    assert!(at(&r, "throughput_eps").as_f64().unwrap() > 0.0);
    assert!(at(&r, "window.events").as_u64().unwrap() > 0);
    let problems = at(&r, "keep_up_problems").to_string();
    assert!(!problems.contains("reached the sink"), "{problems}");
}

#[test]
fn help_says_duration_is_after_the_warm_up() {
    let o = bench(&["run", "--help"]);
    assert!(o.status.success(), "{}", text(&o));
    let help = String::from_utf8_lossy(&o.stdout);
    assert!(help.contains("AFTER the warm-up"), "{help}");
}

fn fails_with(args: &[&str], needle: &str) {
    let o = bench(args);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(needle), "expected {needle:?} in:\n{err}");
}

#[test]
fn bad_scenarios_and_overrides_fail_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // No job.toml.
    fails_with(&["run", d.to_str().unwrap()], "job.toml: missing");
    // An unknown key in load.toml.
    std::fs::write(d.join("job.toml"), "pipeline = \"latency\"\n").unwrap();
    std::fs::write(d.join("load.toml"), "rate = 5\n").unwrap();
    fails_with(&["run", d.to_str().unwrap()], "unknown field `rate`");
    // An unknown key in job.toml, naming the scenario's file.
    std::fs::write(d.join("load.toml"), "duration_s = 0.5\nwarmup_s = 0.1\n").unwrap();
    std::fs::write(d.join("job.toml"), "pipeline = \"latency\"\nspeed = 3\n").unwrap();
    let shown = d.join("job.toml").display().to_string();
    fails_with(&["run", d.to_str().unwrap()], &shown);
    fails_with(&["run", d.to_str().unwrap()], "unknown field `speed`");
    // Bad overrides.
    std::fs::write(d.join("job.toml"), "pipeline = \"latency\"\n").unwrap();
    fails_with(
        &["run", d.to_str().unwrap(), "--set", "generator.rate_eps"],
        "expected table.key=value",
    );
    fails_with(
        &["run", d.to_str().unwrap(), "--set", "generator.nope=1"],
        "unknown field `nope`",
    );
    fails_with(
        &["run", d.to_str().unwrap(), "--set", "generator.rate_eps=0"],
        "generator.rate_eps",
    );
    fails_with(
        &["run", d.to_str().unwrap(), "--set", "core.ring_capacity=3"],
        "ring_capacity",
    );
    fails_with(
        &["run", d.to_str().unwrap(), "--cores", "4096"],
        "available CPUs",
    );
    // A core template with an unknown key.
    std::fs::write(d.join("core.toml"), "ring_size = 8\n").unwrap();
    fails_with(&["run", d.to_str().unwrap()], "core.toml (the template");
    // A scenario that does not exist.
    fails_with(&["run", "no-such-scenario"], "shipped scenarios");
    fails_with(&["run", "etl", "--peer", "timely"], "not one");
    fails_with(
        &["run", "latency", "--rate", "max", "--peer", "timely"],
        "no flat-out",
    );
    fails_with(
        &["run", "etl", "--rate", "max"],
        "apply to jobs with a generator",
    );
}
