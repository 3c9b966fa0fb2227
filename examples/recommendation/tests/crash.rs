//! The exactly-once crash test: the recommendation job, run by its real binary with
//! checkpoints every 50 ms, SIGKILLed at seeded random moments (at least 5 times) and
//! restarted until it finishes on its own; then the committed output must equal the
//! reference of an uninterrupted run row for row (0 lost, 0 duplicated) and the dead
//! letters must be the malformed lines, once each. Kills land while lookups are in
//! flight: their inputs are in the async operator's snapshot and re-issued on restore.
//!
//! Every run draws a new seed and prints it; `RILL_CRASH_SEED=<seed>` replays it. A run
//! is given up on only when it stops making progress (no checkpoint completes for
//! `STUCK`), never after a fixed wall-clock budget: a loaded machine makes the work
//! slower, not different.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};

mod common;
use common::{assert_rows_eq, bin, committed, cpus, dead_letters, job_dir, reference, simulated};

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

/// Runs the job on `dir` and SIGKILLs it at a seeded random moment once it has completed
/// 1–2 more checkpoints (plus 0–40 ms, so kills land in every phase: mid-checkpoint,
/// mid-commit, between), `kills` times; then lets it finish. Returns how many runs were
/// really killed (a resumed run may finish first).
fn run_with_kills(dir: &Path, kills: usize, rng: &mut rand::rngs::StdRng) -> usize {
    let mut killed = 0;
    for attempt in 0..=kills {
        let before = completed_checkpoints(dir);
        let more = rng.gen_range(1..=2);
        let jitter = Duration::from_millis(rng.gen_range(0..40));
        // stderr to a file, not a pipe: an unread pipe can fill up and block the job.
        let log = dir.join("stderr.log");
        let mut child = Command::new(bin())
            .arg("run")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start the job");
        let stderr = || std::fs::read_to_string(&log).unwrap_or_default();
        let mut progress = (before, Instant::now());
        let mut kill_at: Option<Instant> = None;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(status.success(), "the run failed ({status}):\n{}", stderr());
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

fn no_leftovers(dir: &Path) {
    for e in std::fs::read_dir(dir.join("out")).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().to_string();
        assert!(
            name.ends_with(".csv") && !name.starts_with('.'),
            "in-progress or pending file left in the output: {name}"
        );
    }
}

/// Enough input that the job completes a few dozen 50 ms checkpoints in a debug build,
/// so that six kills land before its end.
const LINES: usize = 120_000;

#[test]
fn killed_at_random_moments_the_job_commits_exactly_the_uninterrupted_output() {
    let seed = seed();
    eprintln!("RILL_CRASH_SEED={seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let input = common::write_input(
        &dir.path().join("input.jsonl"),
        LINES,
        seed,
        2_000,
        3_000,
        1,
        false,
    );
    let k = common::Knobs::default();
    // Lookups of 100–900 µs, up to 128 in flight per partition: every barrier finds
    // requests in flight, which go into the checkpoint. The timeout is far above any
    // delay: the shared test machine has stalled whole processes for 8 s, and a timed-out
    // lookup (default 10 s) fails the run.
    job_dir(
        dir.path(),
        &cpus(),
        &k.params(),
        "[checkpoint]\ninterval_ms = 50\n[async]\ncapacity = 128\ntimeout_ms = 120000\n\
         [lookup]\ndelay_us = 100\ndistribution = \"uniform\"\ndelay_max_us = 900\n",
    );
    let killed = run_with_kills(dir.path(), 6, &mut rng);
    eprintln!("killed {killed} times");
    assert!(
        killed >= 5,
        "only {killed} runs were killed mid-way (seed {seed}): make the input larger"
    );
    let want = reference(&input.events, &k, &|i| simulated(i, k.categories));
    assert_rows_eq(&committed(dir.path()), &want, &format!("seed {seed}"));
    assert_eq!(
        dead_letters(dir.path()),
        input.bad,
        "dead letters (seed {seed})"
    );
    no_leftovers(dir.path());
    let history = rill_engine::checkpoint::history::read(&dir.path().join("checkpoints")).unwrap();
    assert!(history.len() >= 6, "checkpoints: {}", history.len());
}
