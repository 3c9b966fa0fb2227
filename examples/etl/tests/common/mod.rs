//! Fixtures shared by the integration tests that run the etl job through its real
//! binary: the binary, the CPUs a test may use, a generated input with the output it
//! must give, the job directory, and the committed output read back.
// Each test binary uses its own subset of these.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};

/// The etl job's binary (the command line every job gets from `rill_engine::app`).
pub fn rill() -> &'static str {
    env!("CARGO_BIN_EXE_etl")
}

pub fn cpus() -> Vec<usize> {
    let mut v = rill_engine::config::available_cpus();
    v.truncate(2);
    v
}

/// What a user's rows must be: (count, running total) per accepted event, in order.
pub type Reference = BTreeMap<String, Vec<(u64, i128)>>;

/// Writes `n` input lines (about 1% malformed); returns the reference and the byte
/// offsets of the malformed lines.
pub fn write_input(path: &Path, n: usize, seed: u64) -> (Reference, Vec<u64>) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut reference: Reference = BTreeMap::new();
    let mut state: BTreeMap<String, (u64, i128)> = BTreeMap::new();
    let mut bad = Vec::new();
    let mut offset = 0u64;
    for i in 0..n {
        let line = if rng.gen_ratio(1, 100) {
            bad.push(offset);
            format!("{{\"ts\": {i}, \"user\": broken")
        } else {
            let user = format!("u{}", rng.gen_range(0..2_000));
            let amount: i64 = rng.gen_range(-50..1_000);
            if amount > 0 {
                let s = state.entry(user.clone()).or_default();
                s.0 += 1;
                s.1 += i128::from(amount);
                reference.entry(user.clone()).or_default().push(*s);
            }
            format!("{{\"ts\": {i}, \"user\": \"{user}\", \"amount_cents\": {amount}}}")
        };
        writeln!(f, "{line}").unwrap();
        offset += line.len() as u64 + 1;
    }
    f.flush().unwrap();
    (reference, bad)
}

/// A job directory for the etl job on `cores` (empty core files), with `extra` after
/// `pipeline = "etl"` in its job.toml.
pub fn job_dir(dir: &Path, cores: &[usize], extra: &str) {
    std::fs::create_dir_all(dir.join("cores")).unwrap();
    for e in std::fs::read_dir(dir.join("cores")).unwrap() {
        std::fs::remove_file(e.unwrap().path()).unwrap();
    }
    for c in cores {
        std::fs::write(dir.join("cores").join(format!("{c}.toml")), "").unwrap();
    }
    std::fs::write(
        dir.join("job.toml"),
        format!("pipeline = \"etl\"\n{extra}\n"),
    )
    .unwrap();
}

/// The committed output: each user's rows in the order their partition wrote them.
pub fn committed(dir: &Path) -> Reference {
    let mut got: Reference = BTreeMap::new();
    for f in rill_engine::connectors::committed_files(&dir.join("out")).unwrap() {
        for line in std::fs::read_to_string(&f).unwrap().lines() {
            let (rest, total) = line.rsplit_once(',').unwrap();
            let (user, count) = rest.rsplit_once(',').unwrap();
            got.entry(user.to_string())
                .or_default()
                .push((count.parse().unwrap(), total.parse().unwrap()));
        }
    }
    got
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

/// How long a run may go without completing a checkpoint before it counts as stuck.
const STUCK: Duration = Duration::from_secs(180);

/// Checkpoints `history.jsonl` in `log_dir` lists as complete.
pub fn completed_in(log_dir: &Path) -> usize {
    rill_engine::checkpoint::history::read(log_dir)
        .unwrap_or_default()
        .iter()
        .filter(|e| e.state == rill_engine::checkpoint::history::State::Complete)
        .count()
}

/// Complete checkpoints of the job in `dir` (its log in `dir/checkpoints`).
pub fn completed_checkpoints(dir: &Path) -> usize {
    completed_in(&dir.join("checkpoints"))
}

/// How [`run_with_kills_in`] runs the job.
pub struct KillRuns<'a> {
    /// The directory of the job's checkpoint log and `history.jsonl`.
    pub log_dir: PathBuf,
    /// Environment variables of every run.
    pub env: Vec<(&'static str, String)>,
    /// Called after each kill, before the next run.
    pub after_kill: &'a dyn Fn(),
}

/// [`run_with_kills_in`] for a job whose log is in `dir/checkpoints`.
pub fn run_with_kills(dir: &Path, kills: usize, rng: &mut rand::rngs::StdRng) -> usize {
    let runs = KillRuns {
        log_dir: dir.join("checkpoints"),
        env: Vec::new(),
        after_kill: &|| {},
    };
    run_with_kills_in(dir, kills, rng, &runs)
}

/// Runs `rill run dir` and SIGKILLs it at a seeded random moment once it has completed
/// 1–3 more checkpoints (plus 0–40 ms, so kills land in every phase: mid-checkpoint,
/// mid-commit, between), `kills` times; then lets it finish. Returns how many runs were
/// really killed (a resumed run may finish first). Run i's stderr is in
/// `dir/rill-stderr.log` while it runs, then in `dir/rill-stderr-<i>.log`.
pub fn run_with_kills_in(
    dir: &Path,
    kills: usize,
    rng: &mut rand::rngs::StdRng,
    runs: &KillRuns,
) -> usize {
    let completed = || completed_in(&runs.log_dir);
    let mut killed = 0;
    for attempt in 0..=kills {
        let before = completed();
        let more = rng.gen_range(1..=3);
        let jitter = Duration::from_millis(rng.gen_range(0..40));
        // stderr goes to a file, not a pipe: on a loaded machine the stall warnings
        // filled an unread pipe, and the job blocked writing its log (a test that
        // timed out, not an engine hang).
        let log = dir.join("rill-stderr.log");
        let keep = || {
            let _ = std::fs::copy(&log, dir.join(format!("rill-stderr-{attempt}.log")));
        };
        let mut child = Command::new(rill())
            .arg("run")
            .arg(dir)
            .envs(runs.env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start rill");
        let stderr = || std::fs::read_to_string(&log).unwrap_or_default();
        let mut progress = (completed(), Instant::now());
        let mut kill_at: Option<Instant> = None;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                keep();
                assert!(
                    status.success(),
                    "rill run failed ({status}):\n{}",
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
                    "rill run completed no checkpoint for {} s (stuck at {done} complete):\n{}",
                    STUCK.as_secs(),
                    stderr()
                );
            }
            if attempt < kills {
                if kill_at.is_none() && completed() >= before + more {
                    kill_at = Some(Instant::now() + jitter);
                }
                if kill_at.is_some_and(|t| Instant::now() >= t) {
                    child.kill().unwrap(); // SIGKILL
                    child.wait().unwrap();
                    keep();
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

/// The byte offsets of the input lines in the dead-letter files, sorted.
pub fn dead_letters(dir: &Path) -> Vec<u64> {
    let mut offsets = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        if name.starts_with("dead-letter") && name.ends_with(".jsonl") {
            for l in std::fs::read_to_string(&p).unwrap().lines() {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                offsets.push(v["offset"].as_u64().unwrap());
            }
        }
    }
    offsets.sort_unstable();
    offsets
}
