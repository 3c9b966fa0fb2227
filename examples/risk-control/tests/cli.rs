//! The job's binary has the `rill` command line: `validate` on the example's own job
//! directory prints its graph; a bad `[params]` value, in job.toml or through `--set`,
//! exits 2 and names `params.<key>`.

use std::process::Command;

mod common;
use common::{binary, example, text};

#[test]
fn validate_accepts_the_example_job_and_prints_its_graph() {
    let out = Command::new(binary())
        .arg("validate")
        .arg(example().join("job"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for op in ["by-account", "window", "event-rules", "profile", "alerts"] {
        assert!(all.contains(op), "the graph names `{op}`:\n{all}");
    }
}

/// A copy of the example's job.toml with `from` replaced by `to`, in a new directory.
fn job_with(from: &str, to: &str) -> tempfile::TempDir {
    job_of("job", from, to)
}

/// A copy of the job.toml of the example's directory `job` with `from` replaced by `to`.
fn job_of(job: &str, from: &str, to: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let toml = std::fs::read_to_string(example().join(job).join("job.toml")).unwrap();
    assert!(toml.contains(from), "job.toml has `{from}`");
    std::fs::write(dir.path().join("job.toml"), toml.replace(from, to)).unwrap();
    std::fs::create_dir(dir.path().join("cores")).unwrap();
    for c in common::cpus() {
        std::fs::write(dir.path().join("cores").join(format!("{c}.toml")), "").unwrap();
    }
    dir
}

fn assert_exit_2_naming(args: &[&str], dir: &std::path::Path, key: &str) {
    let out = Command::new(binary()).args(args).arg(dir).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(key), "names {key}: {}", text(&out));
}

#[test]
fn a_bad_params_value_exits_2_naming_the_key() {
    // A value the type allows but the job does not.
    let dir = job_with("window_ms = 60000", "window_ms = 0");
    assert_exit_2_naming(&["validate"], dir.path(), "params.window_ms");
    // A value of the wrong type.
    let dir = job_with("max_count = 5 ", "max_count = \"five\" ");
    assert_exit_2_naming(&["validate"], dir.path(), "params.max_count");
    // A parameter the job does not have.
    let dir = job_with("max_count = 5 ", "max_cuont = 5 ");
    assert_exit_2_naming(&["validate"], dir.path(), "params.max_cuont");
    // Through --set on `run`: refused before anything runs.
    let dir = job_with("max_count = 5 ", "max_count = 5 ");
    assert_exit_2_naming(
        &["run", "--set", "params.partitions=0"],
        dir.path(),
        "params.partitions",
    );
    assert!(!dir.path().join("out").exists(), "nothing ran");
}

#[test]
fn the_kafka_job_validates_and_its_bad_kafka_params_exit_2_naming_the_key() {
    let out = Command::new(binary())
        .arg("validate")
        .arg(example().join("job-kafka"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("risk-control-kafka"),
        "{}",
        text(&out)
    );
    let dir = job_of(
        "job-kafka",
        "delivery = \"exactly-once\"",
        "delivery = \"twice\"",
    );
    assert_exit_2_naming(&["validate"], dir.path(), "params.kafka.delivery");
    let dir = job_of("job-kafka", "start = \"earliest\"", "start = \"soon\"");
    assert_exit_2_naming(&["validate"], dir.path(), "params.kafka.start");
    let dir = job_of(
        "job-kafka",
        "brokers = \"127.0.0.1:9092\"",
        "brokers = \"\"",
    );
    assert_exit_2_naming(&["validate"], dir.path(), "params.kafka.brokers");
    // The file job refuses a [params.kafka] table, the Kafka job needs one.
    let dir = job_of(
        "job-kafka",
        "pipeline = \"risk-control-kafka\"",
        "pipeline = \"risk-control\"",
    );
    assert_exit_2_naming(&["validate"], dir.path(), "params.kafka");
    let dir = job_of(
        "job",
        "pipeline = \"risk-control\"",
        "pipeline = \"risk-control-kafka\"",
    );
    assert_exit_2_naming(&["validate"], dir.path(), "params.kafka");
}
