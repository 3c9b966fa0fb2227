//! The exactly-once crash test: the risk-control job, run by its real binary, SIGKILLed
//! at seeded random moments (at least 5 times) and restarted until it finishes on its
//! own; then its committed alerts must equal those of an uninterrupted run of the same
//! job on the same input (nothing lost, nothing duplicated), `check.py` must agree with
//! them, and every malformed line must be in the dead letters once.
//!
//! Every run draws a new seed and prints it; set `RILL_CRASH_SEED` to replay one. A run
//! is given up on only when it stops making progress (no checkpoint completes for
//! `STUCK`), never after a fixed wall-clock budget: a loaded machine makes the work
//! slower, not different.
//!
//! The kill harness (`run_with_kills`, `STUCK`, the seed) is `rill_testkit::crash`.

use std::path::Path;
use std::process::Command;

use rand::SeedableRng;
use rill_testkit::crash::{run_with_kills, seed};

mod common;
use common::{assert_checked, binary, committed, cpus, generate, job_dir, text};
use rill_testkit::dead_letters;

/// Transactions of the input: about 21,000 alerts, small enough for a short test.
const LINES: usize = 150_000;

/// The lookup bounds the job's speed whatever the CPUs: 8 requests in flight per
/// partition, 2 ms each, so the ~21,000 alerts take at least about 2.6 s on any machine,
/// while 6 kills after 1–3 checkpoints of 50 ms each use well under half of that. (With a
/// fast lookup a quiet machine finished the job before the fifth kill.)
const JOB: &str = "[params]\nwindow_ms = 20000\n\
     [async]\ncapacity = 8\n[lookup]\ndelay_us = 2000\n\
     [checkpoint]\ninterval_ms = 50\n";

#[test]
fn killed_at_random_moments_commits_exactly_the_uninterrupted_alerts() {
    let seed = seed();
    eprintln!("RILL_CRASH_SEED={seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);

    // The reference: the same job and input, never killed.
    let reference = tempfile::tempdir().unwrap();
    generate(
        &reference.path().join("input.jsonl"),
        LINES,
        seed % 1000,
        &[],
    );
    job_dir(reference.path(), &cpus(), JOB);
    let out = Command::new(binary())
        .arg("run")
        .arg(reference.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let want = committed(reference.path());
    assert!(!want.is_empty());

    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        reference.path().join("input.jsonl"),
        dir.path().join("input.jsonl"),
    )
    .unwrap();
    job_dir(dir.path(), &cpus(), JOB);
    let killed = run_with_kills(Path::new(binary()), dir.path(), 6, &mut rng);
    eprintln!("killed {killed} times");
    assert!(
        killed >= 5,
        "only {killed} runs were killed mid-way (seed {seed}): make the input larger"
    );
    let got = committed(dir.path());
    assert_eq!(got.len(), want.len(), "alerts (seed {seed})");
    assert!(got == want, "committed alerts differ (seed {seed})");
    assert_eq!(
        dead_letters(dir.path()),
        dead_letters(reference.path()),
        "dead letters (seed {seed})"
    );
    eprintln!("{}", assert_checked(dir.path(), None));
    for e in std::fs::read_dir(dir.path().join("out")).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().to_string();
        assert!(
            name.ends_with(".csv") && !name.starts_with('.'),
            "in-progress or pending file left in the output: {name}"
        );
    }
}
