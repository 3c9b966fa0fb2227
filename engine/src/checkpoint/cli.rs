//! What `rill checkpoints` and `rill savepoint` do, and the pid file that lets
//! `rill savepoint` find the running job: listing a job's checkpoints from its history
//! and manifests, and asking the running job (by SIGUSR1) for a savepoint.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::history::{self, Entry, State};
use super::protocol::TriggerKind;
use crate::config::JobSpec;
use crate::error::{ConfigError, EngineError, Result};

fn checkpoint_dir(spec: &JobSpec) -> Result<PathBuf> {
    spec.checkpoint_log_dir().ok_or_else(|| {
        EngineError::Config(ConfigError::Invalid {
            file: spec.dir.join("job.toml"),
            key: "checkpoint".into(),
            problem: "the job has no [checkpoint] table".into(),
            valid: "a [checkpoint] table (e.g. interval_ms = 1000) to take checkpoints".into(),
        })
    })
}

fn pid_path(dir: &Path) -> PathBuf {
    dir.join("rill.pid")
}

/// Writes the running job's pid into its checkpoint directory (jobs with checkpoints);
/// returns the file to remove at exit.
pub fn write_pid(spec: &JobSpec) -> Result<Option<PathBuf>> {
    let Ok(dir) = checkpoint_dir(spec) else {
        return Ok(None);
    };
    std::fs::create_dir_all(&dir).map_err(|e| EngineError::io("create directory", &dir, e))?;
    let p = pid_path(&dir);
    std::fs::write(&p, std::process::id().to_string())
        .map_err(|e| EngineError::io("write", &p, e))?;
    Ok(Some(p))
}

fn running_pid(dir: &Path) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(pid_path(dir))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Path::new(&format!("/proc/{pid}")).exists().then_some(pid)
}

fn time(ms: u64) -> String {
    let secs = ms / 1000;
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    format!("{h:02}:{m:02}:{s:02}.{:03}", ms % 1000)
}

fn size(b: u64) -> String {
    match b {
        b if b >= 1 << 30 => format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}

fn state_of(e: &Entry, running: bool, on_disk: bool) -> String {
    match e.state {
        State::Complete if on_disk => "complete".into(),
        State::Complete => "complete (deleted by retention)".into(),
        State::Failed => "failed".into(),
        State::InProgress if running => "in progress".into(),
        State::InProgress => "abandoned (the job stopped)".into(),
    }
}

/// Prints the job's checkpoints, oldest first (a closed pipe, as with `| head`, ends the
/// listing quietly).
pub fn checkpoints(job_dir: &Path, partitions: bool) -> Result<()> {
    match list(job_dir, partitions, &mut std::io::stdout().lock()) {
        Err(EngineError::Io { source, .. }) if source.kind() == std::io::ErrorKind::BrokenPipe => {
            Ok(())
        }
        r => r,
    }
}

fn list(job_dir: &Path, partitions: bool, out: &mut impl std::io::Write) -> Result<()> {
    let w = |e: std::io::Error| EngineError::io("write", "(standard output)", e);
    let spec = JobSpec::load(job_dir)?;
    let dir = checkpoint_dir(&spec)?;
    let entries =
        history::read(&dir).map_err(|e| EngineError::io("read", history::path(&dir), e))?;
    // Complete means the manifest is in the store: with an s3:// dir, in the bucket.
    let remote = spec.checkpoint_url();
    let manifests: Vec<u64> = match &remote {
        Some(url) => super::remote::complete_in_store(url)?,
        None => rill_storage::layout::list_manifests(&dir)
            .unwrap_or_default()
            .into_iter()
            .map(|c| c.0)
            .collect(),
    };
    let running = running_pid(&dir).is_some();
    if entries.is_empty() {
        writeln!(out, "{}: no checkpoints yet", dir.display()).map_err(w)?;
        return Ok(());
    }
    if let Some(url) = &remote {
        writeln!(
            out,
            "checkpoints in {url} (log and history in {})",
            dir.display()
        )
        .map_err(w)?;
    }
    writeln!(
        out,
        "{:>5}  {:<9}  {:<12}  {:<12}  {:>9}  {:>8}  {:>9}  {:>8}  {:>8}  {:>8}  {:>10}  {:>10}",
        "id",
        "kind",
        "time (UTC)",
        "state",
        "duration",
        "delay",
        "alignment",
        "sync",
        "archive",
        "async",
        "full",
        "incr"
    )
    .map_err(w)?;
    for e in &entries {
        let on_disk = manifests.contains(&e.id);
        let kind = match e.kind {
            TriggerKind::Periodic => "periodic",
            TriggerKind::Savepoint => "savepoint",
            TriggerKind::Final => "final",
        };
        writeln!(
            out,
            "{:>5}  {:<9}  {:<12}  {:<12}  {:>7.1}ms  {:>6.2}ms  {:>7.2}ms  {:>6.2}ms  {:>6.2}ms  {:>6.2}ms  {:>10}  {:>10}",
            e.id,
            kind,
            time(e.triggered_unix_ms),
            state_of(e, running, on_disk),
            e.duration_ms,
            e.start_delay_ms,
            e.alignment_ms,
            e.sync_ms,
            e.archive_ms,
            e.async_ms,
            size(e.bytes_full),
            size(e.bytes_incremental),
        ).map_err(w)?;
        if let Some(f) = &e.failure {
            writeln!(out, "       why: {f}").map_err(w)?;
        }
        if partitions {
            for (core, p) in &e.partitions {
                writeln!(
            out,
                    "         core {core}  {:<32} barrier after {:>8.2} ms  sync {:>7.2} ms  archive {:>7.2} ms  {:>10}  {} keys",
                    p.name,
                    p.barrier_us as f64 / 1e3,
                    p.sync_us as f64 / 1e3,
                    p.archive_us as f64 / 1e3,
                    size(p.bytes),
                    p.keys
                ).map_err(w)?;
            }
        }
    }
    Ok(())
}

/// Asks the running job for a savepoint and waits until it completes or fails.
pub fn savepoint(job_dir: &Path, timeout_s: u64) -> Result<()> {
    let spec = JobSpec::load(job_dir)?;
    let dir = checkpoint_dir(&spec)?;
    let pid = running_pid(&dir).ok_or_else(|| EngineError::Executor {
        core: crate::ids::CoreId(0),
        reason: format!(
            "no running job found for {} (no live pid in {}); start it with `rill run`",
            job_dir.display(),
            pid_path(&dir).display()
        ),
    })?;
    let before = history::next_id(&dir);
    let status = std::process::Command::new("kill")
        .args(["-USR1", &pid.to_string()])
        .status()
        .map_err(|e| EngineError::io("run", "kill", e))?;
    if !status.success() {
        return Err(EngineError::Executor {
            core: crate::ids::CoreId(0),
            reason: format!("could not signal the running job (pid {pid})"),
        });
    }
    let deadline = Instant::now() + Duration::from_secs(timeout_s);
    while Instant::now() < deadline {
        let entries = history::read(&dir).unwrap_or_default();
        if let Some(e) = entries.iter().find(|e| {
            e.id >= before && e.kind == TriggerKind::Savepoint && e.state != State::InProgress
        }) {
            return match e.state {
                State::Complete => {
                    println!(
                        "savepoint {} complete ({} in {:.1} ms)",
                        e.id,
                        size(e.bytes_full),
                        e.duration_ms
                    );
                    Ok(())
                }
                _ => Err(EngineError::CheckpointsFailing {
                    checkpoint: crate::ids::CheckpointId(e.id),
                    consecutive: 1,
                    reason: e.failure.clone().unwrap_or_default(),
                    unfixable: None,
                }),
            };
        }
        if running_pid(&dir).is_none() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(EngineError::Executor {
        core: crate::ids::CoreId(0),
        reason: format!("no savepoint completed within {timeout_s} s (is the job stuck? see `rill checkpoints`)"),
    })
}
