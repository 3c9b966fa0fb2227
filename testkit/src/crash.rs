//! The kill harness of the exactly-once crash tests: runs a job binary (`BIN run DIR`),
//! SIGKILLs it at seeded random moments and restarts it until it finishes on its own.
//!
//! Every test run draws a new seed (so that CI explores new kill schedules) unless
//! `RILL_CRASH_SEED` replays one; the caller prints it. A run is given up on only when it
//! stops making progress (no checkpoint completes for [`STUCK`]), never after a fixed
//! wall-clock budget: a loaded machine makes the work slower, not different.

use std::path::{Path, PathBuf};
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

/// Checkpoints that `history.jsonl` in the checkpoint log directory `log_dir` lists as
/// complete.
pub fn completed_in(log_dir: &Path) -> usize {
    rill_engine::checkpoint::history::read(log_dir)
        .unwrap_or_default()
        .iter()
        .filter(|e| e.state == rill_engine::checkpoint::history::State::Complete)
        .count()
}

/// Checkpoints completed so far in the job directory `dir` (its log in `dir/checkpoints`).
pub fn completed_checkpoints(dir: &Path) -> usize {
    completed_in(&dir.join("checkpoints"))
}

/// How [`run_with_kills_in`] runs the job, beyond `bin run dir`.
pub struct Runs<'a> {
    /// The directory of the job's checkpoint log and `history.jsonl` (progress is read
    /// there).
    pub log_dir: PathBuf,
    /// Environment variables of every run.
    pub env: Vec<(&'static str, String)>,
    /// Called after each kill, before the next run (e.g. to delete the local log).
    pub after_kill: &'a dyn Fn(),
}

/// [`run_with_kills_in`] for a job whose log is in `dir/checkpoints`, with no extra
/// environment and nothing done between runs.
pub fn run_with_kills(bin: &Path, dir: &Path, kills: usize, rng: &mut StdRng) -> usize {
    let runs = Runs {
        log_dir: dir.join("checkpoints"),
        env: Vec::new(),
        after_kill: &|| {},
    };
    run_with_kills_in(bin, dir, kills, rng, &runs)
}

/// Runs `bin run dir` and SIGKILLs it at a seeded random moment once it has completed
/// 1–2 more checkpoints (plus 0–40 ms, so kills land in every phase: mid-checkpoint,
/// mid-commit, between), `kills` times; then lets it finish. Returns how many runs were
/// really killed (a resumed run may finish first). Panics when a run fails or is stuck.
/// Run i's stderr is kept in `dir/stderr-<i>.log`.
pub fn run_with_kills_in(
    bin: &Path,
    dir: &Path,
    kills: usize,
    rng: &mut StdRng,
    runs: &Runs<'_>,
) -> usize {
    let completed = || completed_in(&runs.log_dir);
    let name = bin.file_name().map_or_else(
        || bin.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let mut killed = 0;
    for attempt in 0..=kills {
        let before = completed();
        let more = rng.gen_range(1..=2);
        let jitter = Duration::from_millis(rng.gen_range(0..40));
        // stderr goes to a file, not a pipe: on a loaded machine the stall warnings
        // filled an unread pipe, and the job blocked writing its log (a test that timed
        // out, not an engine hang). One file per attempt, kept for a look after a failure.
        let log = dir.join(format!("stderr-{attempt}.log"));
        let mut child = Command::new(bin)
            .arg("run")
            .arg(dir)
            .envs(runs.env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("creating the job's stderr log"))
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
        let stderr = || std::fs::read_to_string(&log).unwrap_or_default();
        let mut progress = (completed(), Instant::now());
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
            let done = completed();
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
                    (runs.after_kill)();
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    unreachable!("the last attempt runs to completion")
}
