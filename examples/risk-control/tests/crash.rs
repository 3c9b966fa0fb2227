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

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};

mod common;
use common::{assert_checked, binary, committed, cpus, dead_letters, generate, job_dir, text};

fn seed() -> u64 {
    std::env::var("RILL_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random)
}

/// How long a run may go without completing a checkpoint before it counts as stuck.
const STUCK: Duration = Duration::from_secs(180);

fn completed_checkpoints(dir: &Path) -> usize {
    rill_engine::checkpoint::history::read(&dir.join("checkpoints"))
        .unwrap_or_default()
        .iter()
        .filter(|e| e.state == rill_engine::checkpoint::history::State::Complete)
        .count()
}

/// Runs the job in `dir` and SIGKILLs it at a seeded random moment once it has completed
/// 1–3 more checkpoints (plus 0–40 ms, so kills land in every phase: mid-checkpoint,
/// mid-commit, between), `kills` times; then lets it finish. Returns how many runs were
/// really killed (a resumed run may finish first).
fn run_with_kills(dir: &Path, kills: usize, rng: &mut rand::rngs::StdRng) -> usize {
    let mut killed = 0;
    for attempt in 0..=kills {
        let before = completed_checkpoints(dir);
        let more = rng.gen_range(1..=3);
        let jitter = Duration::from_millis(rng.gen_range(0..40));
        // stderr to a file: an unread pipe can fill up with warnings and block the job.
        let log = dir.join("stderr.log");
        let mut child = Command::new(binary())
            .arg("run")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start risk-control");
        let stderr = || std::fs::read_to_string(&log).unwrap_or_default();
        let mut progress = (completed_checkpoints(dir), Instant::now());
        let mut kill_at: Option<Instant> = None;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(status.success(), "run failed ({status}):\n{}", stderr());
                return killed;
            }
            let done = completed_checkpoints(dir);
            if done != progress.0 {
                progress = (done, Instant::now());
            }
            if progress.1.elapsed() > STUCK {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "no checkpoint completed for {} s (stuck at {done} complete):\n{}",
                    STUCK.as_secs(),
                    stderr()
                );
            }
            if attempt < kills {
                if kill_at.is_none() && done >= before + more {
                    kill_at = Some(Instant::now() + jitter);
                }
                if kill_at.is_some_and(|t| Instant::now() >= t) {
                    child.kill().unwrap(); // SIGKILL
                    child.wait().unwrap();
                    killed += 1;
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    unreachable!("the last attempt runs to completion")
}

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
    let killed = run_with_kills(dir.path(), 6, &mut rng);
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
