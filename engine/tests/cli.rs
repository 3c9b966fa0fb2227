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
        "pipeline = \"etl\"\nbogus = 1\n",
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

#[test]
fn validate_accepts_the_shipped_examples() {
    for example in ["etl", "latency"] {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../examples")
            .join(example);
        let out = rill().arg("validate").arg(&dir).output().unwrap();
        assert!(
            out.status.success(),
            "{example}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("ok"));
    }
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
