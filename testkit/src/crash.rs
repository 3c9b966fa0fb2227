//! The kill harness of the exactly-once crash tests: runs a job binary (`BIN run DIR`),
//! SIGKILLs it at seeded random moments and restarts it until it finishes on its own.
//!
//! Every test run draws a new seed (so that CI explores new kill schedules) unless
//! `RILL_CRASH_SEED` replays one; the caller prints it. A run is given up on only when it
//! stops making progress (no checkpoint completes for [`STUCK`]), never after a fixed
//! wall-clock budget: a loaded machine makes the work slower, not different.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::Rng;

/// The seed of this test process: `RILL_CRASH_SEED`, or a random one drawn once.
pub fn seed() -> u64 {
    static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *SEED.get_or_init(|| {
        std::env::var("RILL_CRASH_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(rand::random)
    })
}

/// How long a run may go without completing a checkpoint before it counts as stuck.
pub const STUCK: Duration = Duration::from_secs(180);

/// Checkpoints completed so far in the job directory `dir` (its `checkpoints/` history).
pub fn completed_checkpoints(dir: &Path) -> usize {
    rill_engine::checkpoint::history::read(&dir.join("checkpoints"))
        .unwrap_or_default()
        .iter()
        .filter(|e| e.state == rill_engine::checkpoint::history::State::Complete)
        .count()
}

/// Runs `bin run dir` and SIGKILLs it at a seeded random moment once it has completed
/// 1–2 more checkpoints (plus 0–40 ms, so kills land in every phase: mid-checkpoint,
/// mid-commit, between), `kills` times; then lets it finish. Returns how many runs were
/// really killed (a resumed run may finish first). Panics when a run fails or is stuck.
pub fn run_with_kills(bin: &Path, dir: &Path, kills: usize, rng: &mut StdRng) -> usize {
    let name = bin.file_name().map_or_else(
        || bin.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let mut killed = 0;
    for attempt in 0..=kills {
        let before = completed_checkpoints(dir);
        let more = rng.gen_range(1..=2);
        let jitter = Duration::from_millis(rng.gen_range(0..40));
        // stderr goes to a file, not a pipe: on a loaded machine the stall warnings
        // filled an unread pipe, and the job blocked writing its log (a test that timed
        // out, not an engine hang). One file per attempt, kept for a look after a failure.
        let log = dir.join(format!("stderr-{attempt}.log"));
        let mut child = Command::new(bin)
            .arg("run")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("creating the job's stderr log"))
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
        let stderr = || std::fs::read_to_string(&log).unwrap_or_default();
        let mut progress = (completed_checkpoints(dir), Instant::now());
        let mut kill_at: Option<Instant> = None;
        loop {
            if let Some(status) = child.try_wait().expect("waiting for the job") {
                assert!(
                    status.success(),
                    "{name} run failed ({status}):\n{}",
                    stderr()
                );
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
                    "{name} run completed no checkpoint for {} s (stuck at {done} complete):\n{}",
                    STUCK.as_secs(),
                    stderr()
                );
            }
            if attempt < kills {
                if kill_at.is_none() && done >= before + more {
                    kill_at = Some(Instant::now() + jitter);
                }
                if kill_at.is_some_and(|t| Instant::now() >= t) {
                    child.kill().expect("SIGKILL"); // Child::kill sends SIGKILL
                    child.wait().expect("reaping the killed job");
                    killed += 1;
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    unreachable!("the last attempt runs to completion")
}
