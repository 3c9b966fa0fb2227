//! The tuning advisor end to end: the keyed-async scenario with a known IO delay and a
//! capacity deliberately too small for the offered rate. The advisor must see the job
//! fall behind, choose a capacity in the range Little's law gives for the test's own rate
//! and delay, write it into core.toml without losing the file's comments, and its
//! verification run must keep up. No wall-clock latency is asserted: only throughput at
//! a modest rate.

use std::path::Path;
use std::sync::Mutex;

use rill_bench::scenario::Settings;
use rill_perf::tune::{tune, Options, Targets};

/// Offered events per second over all partitions.
const RATE: u64 = 10_000;
/// The simulated lookup's fixed delay, µs.
const DELAY_US: u64 = 2_000;
/// Requests in flight per partition in the scenario as shipped to the advisor: at 2 ms
/// that is 2000 per second per partition, far below RATE over any 2 partitions.
const CAPACITY: usize = 4;

/// Jobs pin executors to the same CPUs; run them one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn shipped(file: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../bench/scenarios/keyed-async")
        .join(file);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// A copy of bench/scenarios/keyed-async with the test's delay, capacity and load.
fn scenario(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let job = shipped("job.toml");
    let job = job
        .replace("capacity = 100 ", &format!("capacity = {CAPACITY} "))
        .replace("delay_us = 1000", &format!("delay_us = {DELAY_US}"));
    assert!(job.contains(&format!("capacity = {CAPACITY} ")), "{job}");
    assert!(job.contains(&format!("delay_us = {DELAY_US}")), "{job}");
    std::fs::write(dir.join("job.toml"), job).unwrap();
    std::fs::write(dir.join("core.toml"), shipped("core.toml")).unwrap();
    std::fs::write(
        dir.join("load.toml"),
        format!("# The test's load.\nrate_eps = {RATE}\nduration_s = 1.5\nwarmup_s = 0.5\n"),
    )
    .unwrap();
}

fn options(dir: &Path) -> Options {
    Options {
        job_dir: dir.display().to_string(),
        targets: Targets::default(),
        settings: Settings::default(),
        dry_run: false,
        verify: true,
        progress: false,
    }
}

#[test]
fn a_capacity_bound_async_job_gets_little_s_law_capacity_and_then_keeps_up() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("keyed-async");
    scenario(&dir);
    let core_before = std::fs::read_to_string(dir.join("core.toml")).unwrap();
    let job_before = std::fs::read_to_string(dir.join("job.toml")).unwrap();

    let o = tune(&options(&dir)).unwrap();
    println!("{}", o.render());

    // The first run was bound by the capacity (that is what makes the test able to fail).
    let a = o
        .before
        .async_io
        .as_ref()
        .expect("keyed-async has an async operator");
    let partitions = f64::from(a.partitions);
    let t_ms = a.io_time_ms.expect("the engine reports the IO time");
    assert!(
        t_ms >= DELAY_US as f64 / 1e3,
        "IO time {t_ms} ms below the delay"
    );
    let bound = partitions * CAPACITY as f64 * 1e6 / DELAY_US as f64;
    assert!(bound < 0.7 * RATE as f64, "the test's own setup: {bound}");
    assert!(
        o.before.sink_throughput_eps < 0.7 * RATE as f64,
        "capacity {CAPACITY} at {DELAY_US} µs should hold the job to about {bound}/s, \
         measured {}",
        o.before.sink_throughput_eps
    );

    // The chosen capacity: at least λ·t per partition, at most λ·t·headroom·1.5.
    let lambda_t = RATE as f64 / partitions * DELAY_US as f64 / 1e6;
    let hi = lambda_t * Targets::default().headroom * 1.5;
    let plan = o.plan.capacity.as_ref().expect("a capacity decision");
    for c in &plan.cores {
        assert!(
            (c.after as f64) >= lambda_t && (c.after as f64) <= hi,
            "CPU {}: capacity {} outside [{lambda_t}, {hi}]",
            c.cpu,
            c.after
        );
    }
    let chosen = plan.cores[0].after;

    // Written into core.toml (the template), comments kept; job.toml untouched.
    let core_after = std::fs::read_to_string(dir.join("core.toml")).unwrap();
    assert!(core_after.starts_with(&core_before), "{core_after}");
    assert!(
        core_after.contains(&format!("\nasync_capacity = {chosen}\n")),
        "{core_after}"
    );
    assert!(
        core_after.contains("# rill-perf tune: N = "),
        "{core_after}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("job.toml")).unwrap(),
        job_before
    );
    assert_eq!(o.written, vec![dir.join("core.toml")]);

    // The verification run used it and kept up with the offered rate.
    let (after, _) = o.after.as_ref().expect("a verification run");
    assert!(after
        .cores
        .iter()
        .filter(|c| c.async_partitions > 0)
        .all(|c| c.capacity.and_then(|k| k.fixed()) == Some(chosen)));
    assert!(
        after.sink_throughput_eps >= 0.9 * RATE as f64,
        "the tuned run reached {}/s of {RATE}",
        after.sink_throughput_eps
    );
    let row = o
        .rows
        .iter()
        .find(|r| r.figure.starts_with("throughput"))
        .expect("a throughput row");
    assert_eq!(row.predicted, RATE.to_string());
}

#[test]
fn a_dry_run_writes_nothing() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("keyed-async");
    scenario(&dir);
    let core_before = std::fs::read_to_string(dir.join("core.toml")).unwrap();
    let mut opts = options(&dir);
    opts.dry_run = true;
    opts.verify = false;
    opts.settings.duration_s = Some(0.5);
    let o = tune(&opts).unwrap();
    assert!(o.written.is_empty());
    assert!(!o.plan.settings.is_empty());
    assert_eq!(
        std::fs::read_to_string(dir.join("core.toml")).unwrap(),
        core_before
    );
    assert!(o.render().contains("dry run: not written"));
}

#[test]
fn bad_directories_and_targets_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let e = tune(&options(&tmp.path().join("nowhere")))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("nowhere"), "{e}");
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let e = format!("{:#}", tune(&options(&empty)).err().unwrap());
    assert!(e.contains("job.toml") && e.contains("missing"), "{e}");

    let dir = tmp.path().join("keyed-async");
    scenario(&dir);
    for (targets, flag) in [
        (
            Targets {
                max_overhead: 0.0,
                ..Targets::default()
            },
            "--overhead",
        ),
        (
            Targets {
                recovery_s: -1.0,
                ..Targets::default()
            },
            "--recovery-s",
        ),
        (
            Targets {
                headroom: 0.5,
                ..Targets::default()
            },
            "--headroom",
        ),
        (
            Targets {
                p99_us: Some(0.0),
                ..Targets::default()
            },
            "--p99-us",
        ),
    ] {
        let mut o = options(&dir);
        o.targets = targets;
        let e = tune(&o).err().unwrap().to_string();
        assert!(e.starts_with(flag), "{e}");
    }
    // An etl job directory without its input says which file and how to make it.
    let etl = tmp.path().join("etl");
    std::fs::create_dir_all(etl.join("cores")).unwrap();
    std::fs::write(etl.join("job.toml"), "pipeline = \"etl\"\n").unwrap();
    std::fs::write(etl.join("cores/0.toml"), "").unwrap();
    let e = tune(&options(&etl)).err().unwrap().to_string();
    assert!(
        e.contains("input.jsonl") && e.contains("examples/etl/gen.py"),
        "{e}"
    );
}
