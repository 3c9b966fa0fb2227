//! Fixtures shared by the risk-control integration tests: the job's binary, the CPUs a
//! test may use, an input made by `gen.py`, a job directory, the committed output, and
//! `check.py` (the independent Python reference) run on a finished job directory.
// Each test binary uses its own subset of these.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The job's binary (the command line every job gets from `rill_engine::app`).
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_risk-control")
}

/// The example's directory (gen.py, check.py, job/).
pub fn example() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// At most 2 of the CPUs this process may run on.
pub fn cpus() -> Vec<usize> {
    let mut v = rill_engine::config::available_cpus();
    v.truncate(2);
    v
}

/// Writes `n` transactions from `gen.py` (seeded) to `path`, with gen.py's `options`.
pub fn generate(path: &Path, n: usize, seed: u64, options: &[&str]) {
    let out = Command::new("python3")
        .arg(example().join("gen.py"))
        .arg(n.to_string())
        .arg(seed.to_string())
        .args(options)
        .output()
        .expect("python3 runs gen.py (python3 is required for the example's scripts)");
    assert!(out.status.success(), "gen.py: {}", text(&out));
    std::fs::write(path, out.stdout).unwrap();
}

/// A job directory for the risk-control job on `cores` (empty core files), with `extra`
/// after `pipeline = "risk-control"` in its job.toml.
pub fn job_dir(dir: &Path, cores: &[usize], extra: &str) {
    job_dir_for("risk-control", dir, cores, extra)
}

/// A job directory for `pipeline` on `cores` (empty core files), with `extra` after
/// `pipeline = "<pipeline>"` in its job.toml.
pub fn job_dir_for(pipeline: &str, dir: &Path, cores: &[usize], extra: &str) {
    std::fs::create_dir_all(dir.join("cores")).unwrap();
    for e in std::fs::read_dir(dir.join("cores")).unwrap() {
        std::fs::remove_file(e.unwrap().path()).unwrap();
    }
    for c in cores {
        std::fs::write(dir.join("cores").join(format!("{c}.toml")), "").unwrap();
    }
    std::fs::write(
        dir.join("job.toml"),
        format!("pipeline = \"{pipeline}\"\n{extra}\n"),
    )
    .unwrap();
}

/// The committed alert rows (every committed file of `dir/out`), sorted: the output as
/// a multiset.
pub fn committed(dir: &Path) -> Vec<String> {
    let mut rows = Vec::new();
    for f in rill_engine::connectors::committed_files(&dir.join("out")).unwrap() {
        rows.extend(
            std::fs::read_to_string(&f)
                .unwrap()
                .lines()
                .map(str::to_string),
        );
    }
    rows.sort();
    rows
}

/// Runs `check.py` on the finished job directory `dir` (with `--profiles` when given).
pub fn check(dir: &Path, profiles: Option<&Path>) -> Output {
    let mut cmd = Command::new("python3");
    cmd.arg(example().join("check.py")).arg(dir);
    if let Some(p) = profiles {
        cmd.arg("--profiles").arg(p);
    }
    cmd.output().expect("python3 runs check.py")
}

/// `check.py` must report exact agreement.
pub fn assert_checked(dir: &Path, profiles: Option<&Path>) -> String {
    let out = check(dir, profiles);
    let t = text(&out);
    assert!(out.status.success(), "check.py disagrees:\n{t}");
    t
}

/// A run's exit status, stderr and stdout, for assertion messages.
pub fn text(out: &Output) -> String {
    format!(
        "exit {}\n--- stderr\n{}\n--- stdout\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    )
}
