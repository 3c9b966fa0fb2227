//! The `rill` binary: exit codes and messages a user or a script relies on.

use std::process::Command;

fn rill() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rill"))
}

#[test]
fn bad_config_exits_2_naming_the_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("job.toml"),
        "pipeline = \"latency\"\nbogus = 1\n",
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("cores")).unwrap();
    std::fs::write(dir.path().join("cores/0.toml"), "").unwrap();
    for sub in ["validate", "run"] {
        let out = rill().arg(sub).arg(dir.path()).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{sub}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("job.toml") && err.contains("bogus"),
            "{sub}: {err}"
        );
    }
}

/// A job directory in `dir` with `job` as its job.toml and one empty core file.
fn job_dir(dir: &std::path::Path, job: &str) {
    std::fs::write(dir.join("job.toml"), job).unwrap();
    std::fs::create_dir_all(dir.join("cores")).unwrap();
    let cpu = rill_engine::config::available_cpus()[0];
    std::fs::write(dir.join(format!("cores/{cpu}.toml")), "").unwrap();
}

/// `--process i/N`: a bad value exits 2 saying what is wrong, before anything runs; a
/// process of several with a local checkpoint directory exits 2 naming `checkpoint.dir`.
#[test]
fn run_with_a_bad_process_exits_2_saying_why() {
    let dir = tempfile::tempdir().unwrap();
    job_dir(
        dir.path(),
        "pipeline = \"latency\"\n[checkpoint]\ninterval_ms = 100\n",
    );
    for (value, says) in [
        ("3/3", "below the count"),
        ("0/0", "at least 1"),
        ("two", "of the form i/N"),
        ("1/3", "checkpoint.dir"),
    ] {
        let out = rill()
            .args(["run", "--process", value])
            .arg(dir.path())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{value}: {err}");
        assert!(err.contains(says), "{value}: {err}");
    }
}

/// Issue 15: a job directory that names no pipeline used to run the latency benchmark,
/// exit 0. Now it, and a name the binary does not have, exit 2 listing what it has.
#[test]
fn a_job_directory_without_a_pipeline_or_with_an_unknown_one_exits_2_listing_them() {
    for (job, says) in [
        ("", "not set"),
        ("[checkpoint]\ninterval_ms = 1000\n", "not set"),
        (
            "pipeline = \"etl\"\n",
            "\"etl\" is not a pipeline of `rill`",
        ),
        (
            "pipeline = \"risk-control\"\n",
            "\"risk-control\" is not a pipeline of `rill`",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        job_dir(dir.path(), job);
        for sub in ["run", "validate", "doctor"] {
            let out = rill().arg(sub).arg(dir.path()).output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{sub} {job:?}: {err}");
            assert!(
                err.contains("job.toml") && err.contains("`pipeline`") && err.contains(says),
                "{sub} {job:?}: {err}"
            );
            for name in [
                "\"latency\"",
                "\"keyed-async\"",
                "\"nexmark-q0\"",
                "\"nexmark-q8\"",
            ] {
                assert!(err.contains(name), "{sub} {job:?} lists {name}: {err}");
            }
            assert!(out.stdout.is_empty(), "{sub} {job:?} ran nothing");
        }
    }
}

/// Built-in pipelines read no `[params]`; a job that sets it is refused, not ignored.
#[test]
fn params_for_a_built_in_pipeline_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    job_dir(dir.path(), "pipeline = \"latency\"\n[params]\nx = 1\n");
    let out = rill().arg("validate").arg(dir.path()).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("`params`") && err.contains("does not read it"),
        "{err}"
    );
}

#[test]
fn validate_accepts_the_shipped_latency_job() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/latency");
    let out = rill().arg("validate").arg(&dir).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok"));
}

#[test]
fn run_prints_a_latency_report_and_sigint_stops_cleanly() {
    // A short built-in run: exits 0 with the report.
    let out = rill()
        .args([
            "run",
            "--set",
            "generator.rate_eps=20000",
            "--set",
            "generator.duration_ms=300",
        ])
        .args(["--set", "generator.warmup_ms=100", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["counters"]["sink_records"], 6000);
    assert!(report["latency_us"]["p99"].as_f64().unwrap() > 0.0);

    // A long run stopped by SIGINT drains and exits 130 with its report.
    let child = rill()
        .args([
            "run",
            "--set",
            "generator.rate_eps=20000",
            "--set",
            "generator.duration_ms=600000",
        ])
        .args(["--set", "generator.warmup_ms=0", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(700));
    let pid = i32::try_from(child.id()).unwrap();
    assert_eq!(
        Command::new("kill")
            .args(["-INT", &pid.to_string()])
            .status()
            .unwrap()
            .code(),
        Some(0)
    );
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["stopped"], true);
    let c = &report["counters"];
    assert!(c["source_records"].as_u64().unwrap() > 0);
    assert_eq!(
        c["source_records"], c["sink_records"],
        "nothing emitted was lost"
    );
}

fn wait_for(mut f: impl FnMut() -> bool, what: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !f() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn savepoint_checkpoints_and_stop_on_a_running_job() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("cores")).unwrap();
    std::fs::write(dir.path().join("cores/0.toml"), "").unwrap();
    // A long latency job with periodic checkpoints; only one complete one is kept.
    std::fs::write(
        dir.path().join("job.toml"),
        "pipeline = \"latency\"\n[generator]\nrate_eps = 20000\nduration_ms = 600000\nwarmup_ms = 0\n\
         [checkpoint]\ninterval_ms = 50\nretained = 1\n",
    )
    .unwrap();
    let job = rill()
        .arg("run")
        .arg(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let ckpts = dir.path().join("checkpoints");
    wait_for(
        || {
            rill_engine::checkpoint::history::read(&ckpts)
                .unwrap_or_default()
                .len()
                >= 2
        },
        "periodic checkpoints",
    );
    let out = rill().arg("savepoint").arg(dir.path()).output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id: u64 = said
        .strip_prefix("savepoint ")
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("unexpected answer: {said}"));
    // Later periodic checkpoints complete; retention keeps the savepoint anyway.
    wait_for(
        || {
            rill_engine::checkpoint::history::read(&ckpts)
                .unwrap_or_default()
                .iter()
                .filter(|e| {
                    e.id > id && e.state == rill_engine::checkpoint::history::State::Complete
                })
                .count()
                >= 3
        },
        "checkpoints after the savepoint",
    );
    let listed = rill().arg("checkpoints").arg(dir.path()).output().unwrap();
    let table = String::from_utf8_lossy(&listed.stdout).to_string();
    assert!(listed.status.success());
    let row = table
        .lines()
        .find(|l| l.split_whitespace().next() == Some(&id.to_string()))
        .unwrap_or_else(|| panic!("savepoint {id} not listed:\n{table}"));
    assert!(
        row.contains("savepoint") && row.contains("complete") && !row.contains("deleted"),
        "{row}"
    );
    assert!(
        table.contains("deleted by retention"),
        "older periodic ones are deleted:\n{table}"
    );
    assert!(ckpts.join("manifests").exists() || ckpts.exists());
    let manifests = rill_storage::layout::list_manifests(&ckpts).unwrap();
    assert!(
        manifests.iter().any(|m| m.0 == id),
        "the savepoint's manifest is kept"
    );
    // SIGINT: the sources stop, a final checkpoint is taken, exit 130.
    let pid = job.id().to_string();
    assert!(Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    let out = job.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let history = rill_engine::checkpoint::history::read(&ckpts).unwrap();
    let last = history.last().unwrap();
    assert_eq!(
        last.kind,
        rill_engine::checkpoint::protocol::TriggerKind::Final
    );
    assert_eq!(
        last.state,
        rill_engine::checkpoint::history::State::Complete
    );
    // And a savepoint request with no running job says so.
    let out = rill().arg("savepoint").arg(dir.path()).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no running job"));
}

/// A keyed-async job whose capacity is too small for its rate: λ = 4000/s, t = 2 ms,
/// 2 partitions need N ≥ 4 each, and it has 2.
fn capacity_bound_job(dir: &std::path::Path) {
    std::fs::write(
        dir.join("job.toml"),
        r#"pipeline = "keyed-async"
parallelism = 2
[generator]
rate_eps = 4000
duration_ms = 2500
warmup_ms = 0
[source]
keys = 100
[async]
capacity = 2
[lookup]
kind = "simulated"
delay_us = 2000
[checkpoint]
interval_ms = 300
dir = "ckpt"
[metrics]
listen = "off"
"#,
    )
    .unwrap();
    std::fs::create_dir(dir.join("cores")).unwrap();
    for cpu in rill_engine::config::available_cpus().into_iter().take(2) {
        std::fs::write(dir.join(format!("cores/{cpu}.toml")), "").unwrap();
    }
}

#[test]
fn doctor_answers_the_faq_with_the_numbers_of_the_last_run() {
    let dir = tempfile::tempdir().unwrap();
    capacity_bound_job(dir.path());
    let out = rill().arg("doctor").arg(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("run the job first"));

    let out = rill().arg("run").arg(dir.path()).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The run report's doctor section names the problem.
    assert!(stdout.contains("doctor:"), "{stdout}");
    assert!(stdout.contains("raise [async] capacity"), "{stdout}");

    let out = rill().arg("doctor").arg(dir.path()).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for needle in [
        "Checkpoints fail or are slow",
        "Async IO is slow",
        "Is an operator blocking its core, or is the CPU taken?",
        "checkpoints completed in the last run",
        "state backend",
        "N = 2 per partition × 2 partitions",
        "IO time: p50 ",
        "memory: resident",
    ] {
        assert!(text.contains(needle), "{needle:?} missing:\n{text}");
    }
    // The IO time is the 2 ms simulated delay or more (a loaded machine adds to it; no
    // upper bound is asserted).
    let io_p50: f64 = text
        .split("IO time: p50 ")
        .nth(1)
        .and_then(|r| r.split(|c: char| !(c.is_ascii_digit() || c == '.')).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no IO time figure:\n{text}"));
    assert!(
        io_p50 >= 2.0,
        "IO time p50 {io_p50} ms below the 2 ms delay:\n{text}"
    );
    let out = rill()
        .args(["doctor", "--json"])
        .arg(dir.path())
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["answers"][1]["verdict"], "problem", "{v:#}");
    assert_eq!(v["run"]["counters"]["async_partitions"], 2);
}
