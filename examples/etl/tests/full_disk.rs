//! A full disk: segments are preallocated by `checkpoint.segment_preallocate_mib` (not a
//! fixed 64 MiB per core), and a job whose checkpoint directory runs out of space stops
//! with the reason instead of being restarted forever.
//!
//! The full-disk test needs a small file system: it mounts a tmpfs of 1 MiB, which takes
//! root (or CAP_SYS_ADMIN). Without it the test says so and checks nothing more; the
//! decision itself is unit-tested in `checkpoint::restart` (the classification of
//! ENOSPC, EDQUOT, EROFS, EACCES, EPERM and configuration errors).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{cpus, job_dir, rill, text, write_input};

/// An etl job on up to two CPUs over `n` input lines, with `checkpoint` as its
/// `[checkpoint]` table.
fn job(dir: &Path, n: usize, checkpoint: &str) {
    job_dir(
        dir,
        &cpus(),
        &format!("[metrics]\nlisten = \"off\"\n[checkpoint]\n{checkpoint}"),
    );
    write_input(&dir.join("input.jsonl"), n, 7);
}

/// Runs `rill run dir`; a run still going after `guard` is killed (a job restarting
/// forever) and reported as such.
fn run(dir: &Path, guard: Duration) -> (Output, bool) {
    let mut child = Command::new(rill())
        .arg("run")
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start rill");
    let until = Instant::now() + guard;
    let mut killed = false;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() >= until {
            child.kill().unwrap();
            killed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    (child.wait_with_output().unwrap(), killed)
}

fn segments(root: &Path) -> Vec<(PathBuf, u64)> {
    let mut out = Vec::new();
    for core in rill_storage::layout::list_cores(root).unwrap() {
        for base in rill_storage::layout::list_segments(root, core).unwrap() {
            let p = rill_storage::layout::segment_path(root, core, base);
            let len = std::fs::metadata(&p).unwrap().len();
            out.push((p, len));
        }
    }
    out
}

#[test]
fn segments_are_preallocated_by_the_configured_size() {
    for (table, mib) in [
        ("interval_ms = 20", 4u64),
        ("interval_ms = 20\nsegment_preallocate_mib = 1", 1),
    ] {
        let dir = tempfile::tempdir().unwrap();
        job(dir.path(), 20_000, table);
        let (out, killed) = run(dir.path(), Duration::from_secs(300));
        assert!(!killed && out.status.success(), "{}", text(&out));
        let segs = segments(&dir.path().join("checkpoints"));
        assert!(!segs.is_empty());
        for (p, len) in segs {
            assert!(
                len <= mib << 20,
                "{}: {len} bytes, more than the {mib} MiB configured ({table:?})",
                p.display()
            );
        }
    }
}

/// A tmpfs of `size` mounted on a fresh directory, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Result<Self, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|e| format!("mount: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        Ok(Self { dir })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

#[test]
fn a_full_checkpoint_disk_stops_the_job_with_the_reason_instead_of_restarting() {
    let fs = match Tmpfs::mount("1m") {
        Ok(fs) => fs,
        Err(e) => {
            eprintln!("skipped: cannot mount a 1 MiB tmpfs ({e}); needs root or CAP_SYS_ADMIN");
            return;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let ckpt = fs.dir.path().join("checkpoints");
    // The default restart strategy (exponential-delay, unlimited attempts) applies.
    job(
        dir.path(),
        20_000,
        &format!("interval_ms = 20\ndir = {:?}\n", ckpt.display().to_string()),
    );
    let (out, killed) = run(dir.path(), Duration::from_secs(120));
    let all = text(&out);
    assert!(!killed, "the job was still restarting after 120 s:\n{all}");
    assert_eq!(out.status.code(), Some(1), "{all}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("not restarting: No space left on device"),
        "{all}"
    );
    assert!(stderr.contains("a restart cannot fix this"), "{all}");
    assert!(
        stderr.contains(&ckpt.display().to_string()),
        "the message names the file: {all}"
    );
    assert!(
        !stderr.contains("restart 1 in"),
        "no restart was tried: {all}"
    );
}
