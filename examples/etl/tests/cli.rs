//! The etl job's binary: the command line `rill_engine::app` gives it, with its own
//! `[params]` and the engine's exit codes.

mod common;

use std::process::Command;

use common::{cpus, job_dir, rill as etl, text, write_input};

#[test]
fn validate_accepts_the_shipped_job_directory_and_prints_the_graph() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("job");
    let out = Command::new(etl())
        .arg("validate")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("pipeline \"etl\""), "{said}");
    for op in ["read", "parse", "by-user", "totals", "csv", "dead-letter"] {
        assert!(said.contains(op), "the graph names {op}: {said}");
    }
}

/// A bad parameter, in the file or through `--set`, exits 2 naming `params.<key>` and
/// what is valid; a parameter the job does not have is refused with the ones it has.
#[test]
fn a_bad_parameter_exits_2_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    for (job, sets, key, valid) in [
        (
            "[params]\npartitions = \"two\"\n",
            vec![],
            "params.partitions",
            "u32",
        ),
        (
            "[params]\npartitions = 0\n",
            vec![],
            "params.partitions",
            "1 or more",
        ),
        (
            "",
            vec!["params.partitions=0"],
            "params.partitions",
            "1 or more",
        ),
        (
            "[params]\nimput = \"x\"\n",
            vec![],
            "params.imput",
            "`input`",
        ),
        (
            "[params.enrich]\nsegments = 0\n",
            vec![],
            "params.enrich.segments",
            "1 or more",
        ),
    ] {
        job_dir(dir.path(), &cpus(), job);
        for sub in ["run", "validate"] {
            let mut cmd = Command::new(etl());
            cmd.arg(sub).arg(dir.path());
            if sub == "run" {
                for s in &sets {
                    cmd.args(["--set", s]);
                }
            } else if !sets.is_empty() {
                continue;
            }
            let out = cmd.output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(
                out.status.code(),
                Some(2),
                "{sub} {job:?} {sets:?}: {}",
                text(&out)
            );
            assert!(
                err.contains("job.toml")
                    && err.contains(&format!("`{key}`"))
                    && err.contains(valid),
                "{sub} {job:?} {sets:?}: {err}"
            );
        }
    }
}

/// `--set params.x=…` reaches the pipeline: the run reads the input the override names.
#[test]
fn set_overrides_a_parameter_for_one_run() {
    let dir = tempfile::tempdir().unwrap();
    job_dir(dir.path(), &cpus(), "[metrics]\nlisten = \"off\"\n");
    let (reference, _) = write_input(&dir.path().join("other.jsonl"), 2_000, 5);
    let out = Command::new(etl())
        .arg("run")
        .arg(dir.path())
        .args(["--set", "params.input=\"other.jsonl\"", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows: usize = reference.values().map(Vec::len).sum();
    assert_eq!(report["counters"]["sink_records"], rows as u64);
}

/// The etl binary has one pipeline: a job directory naming another, or none, exits 2
/// saying which it has.
#[test]
fn a_job_directory_for_another_pipeline_exits_2_naming_etl() {
    let dir = tempfile::tempdir().unwrap();
    for job in ["", "pipeline = \"latency\"\n"] {
        std::fs::create_dir_all(dir.path().join("cores")).unwrap();
        std::fs::write(dir.path().join(format!("cores/{}.toml", cpus()[0])), "").unwrap();
        std::fs::write(dir.path().join("job.toml"), job).unwrap();
        let out = Command::new(etl())
            .arg("run")
            .arg(dir.path())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{job:?}: {}", text(&out));
        assert!(
            err.contains("`pipeline`") && err.contains("\"etl\""),
            "{job:?}: {err}"
        );
    }
    // Without a directory there is no default job to run.
    let out = Command::new(etl()).arg("run").output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("job directory"));
}
