//! The job's binary and scripts as a user runs them: `recommendation validate` on the
//! shipped job directory, bad `[params]` values refused with exit 2 naming the key, and
//! gen.py → `recommendation run` → check.py on a copy of the shipped job.toml (with the
//! checker shown to fail on a committed output missing one row).

use std::path::{Path, PathBuf};
use std::process::Command;

mod common;
use common::{bin, cpus, text};

fn here() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A copy of the shipped job.toml in `dir` with its `[params]` lines changed by `edit`,
/// and a core file per CPU this test may use.
fn shipped_job(dir: &Path, edit: impl Fn(&str) -> String) {
    let text = std::fs::read_to_string(here().join("job/job.toml")).unwrap();
    let edited: String = text.lines().map(|l| edit(l) + "\n").collect();
    std::fs::write(dir.join("job.toml"), edited).unwrap();
    std::fs::create_dir_all(dir.join("cores")).unwrap();
    for c in cpus() {
        std::fs::write(dir.join("cores").join(format!("{c}.toml")), "").unwrap();
    }
}

#[test]
fn validate_accepts_the_shipped_job_directory_and_prints_the_graph() {
    let out = Command::new(bin())
        .arg("validate")
        .arg(here().join("job"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("pipeline \"recommendation\""), "{stdout}");
    for op in [
        "read",
        "parse",
        "by-user",
        "interest",
        "recommend",
        "csv",
        "dead-letter",
    ] {
        assert!(stdout.contains(op), "operator {op} in:\n{stdout}");
    }
}

#[test]
fn a_bad_param_exits_2_naming_params_key() {
    let cases: [(&str, &str, &str); 5] = [
        ("top_n = 3", "top_n = 0", "params.top_n"),
        (
            "decay_permille = 800",
            "decay_permille = 1001",
            "params.decay_permille",
        ),
        ("history = 10", "history = \"ten\"", "params.history"),
        ("every = 1", "evry = 2", "params.evry"),
        ("partitions = 1", "partitions = 0", "params.partitions"),
    ];
    for (from, to, key) in cases {
        let dir = tempfile::tempdir().unwrap();
        shipped_job(dir.path(), |l| {
            if l.starts_with(from) {
                l.replacen(from, to, 1)
            } else {
                l.to_string()
            }
        });
        let out = Command::new(bin())
            .arg("validate")
            .arg(dir.path())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{to}: {}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(key), "{to}: names {key}: {stderr}");
        assert!(
            stderr.contains("job.toml"),
            "{to}: names the file: {stderr}"
        );
    }
    // `--set` goes through the same checks, before anything runs.
    let dir = tempfile::tempdir().unwrap();
    shipped_job(dir.path(), str::to_string);
    let out = Command::new(bin())
        .arg("run")
        .arg(dir.path())
        .args(["--set", "params.view_weight=5000"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("params.view_weight"), "{stderr}");
    assert!(stderr.contains("0 to 1000"), "says what is valid: {stderr}");
    assert!(!dir.path().join("out").exists(), "nothing ran");
}

fn python(script: &str, args: &[&std::ffi::OsStr]) -> Command {
    let mut c = Command::new("python3");
    c.arg(here().join(script)).args(args);
    c
}

#[test]
fn gen_run_check_on_the_shipped_job_agrees_and_the_checker_sees_a_lost_row() {
    let dir = tempfile::tempdir().unwrap();
    // The shipped job, checkpoints every 100 ms so that the output spans several
    // committed files.
    shipped_job(dir.path(), |l| {
        if l.starts_with("interval_ms") {
            "interval_ms = 100".into()
        } else {
            l.to_string()
        }
    });
    let input = std::fs::File::create(dir.path().join("input.jsonl")).unwrap();
    let status = python("gen.py", &["30000".as_ref(), "5".as_ref()])
        .stdout(input)
        .status()
        .expect("python3 runs gen.py (python3 is required by the examples' scripts)");
    assert!(status.success());

    let out = Command::new(bin())
        .arg("run")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));

    let check = python("check.py", &[dir.path().as_os_str()])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "{}", text(&check));
    assert!(report.contains("users wrong: 0"), "{report}");
    assert!(report.contains("dead letters match: True"), "{report}");

    // Drop one committed row: the checker must notice.
    let files = rill_engine::connectors::committed_files(&dir.path().join("out")).unwrap();
    assert!(files.len() > 1, "several checkpoints committed output");
    let f = files
        .iter()
        .find(|f| std::fs::metadata(f).unwrap().len() > 0)
        .unwrap();
    let body = std::fs::read_to_string(f).unwrap();
    let (_, rest) = body.split_once('\n').unwrap();
    std::fs::write(f, rest).unwrap();
    let check = python("check.py", &[dir.path().as_os_str()])
        .output()
        .unwrap();
    assert_eq!(check.status.code(), Some(1), "{}", text(&check));
    assert!(
        String::from_utf8_lossy(&check.stdout).contains("users wrong: 1"),
        "{}",
        text(&check)
    );
}
