//! One `rill run` per job directory. The run holds an exclusive `flock` on
//! `JOB_DIR/.rill/lock` for the whole life of the process (restarts included) and writes
//! its pid into it; a second `rill run` on the same directory finds the lock taken and
//! is refused, naming the holder's pid and command line. The kernel drops the lock when
//! the holder exits, however it exits. Commands that only read the directory (`rill
//! validate`, `checkpoints`, `doctor`, `savepoint`) never take it.
#![allow(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use crate::error::{EngineError, Result};

/// The lock file of the job directory `dir`.
pub fn lock_path(dir: &Path) -> PathBuf {
    dir.join(".rill").join("lock")
}

/// The held lock of a job directory; released when dropped (or when the process ends).
#[derive(Debug)]
pub struct JobLock {
    _file: File,
    path: PathBuf,
}

impl JobLock {
    /// Takes the lock of the job directory `dir` without waiting, and writes this
    /// process's pid into it. `EngineError::Locked` names the process holding it.
    pub fn acquire(dir: &Path) -> Result<Self> {
        let path = lock_path(dir);
        let parent = dir.join(".rill");
        std::fs::create_dir_all(&parent)
            .map_err(|e| EngineError::io("create directory", &parent, e))?;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| EngineError::io("open", &path, e))?;
        // SAFETY: flock(2) on a descriptor `file` owns and keeps open; no memory involved.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(EngineError::io("lock", &path, e));
            }
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            return Err(EngineError::Locked {
                lock: path,
                holder: holder(text.trim()),
            });
        }
        let written = file
            .set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| writeln!(file, "{}", std::process::id()))
            .and_then(|()| file.flush());
        written.map_err(|e| EngineError::io("write", &path, e))?;
        Ok(Self { _file: file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// "pid N (its command line)" for the pid written in a lock file.
fn holder(pid: &str) -> String {
    let Ok(pid) = pid.parse::<u32>() else {
        return "a process that has not written its pid yet".into();
    };
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
        .ok()
        .map(|raw| {
            raw.split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .filter(|c| !c.is_empty());
    match cmdline {
        Some(c) => format!("pid {pid}: {c}"),
        None => format!("pid {pid}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_one_directory_is_refused_naming_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let held = JobLock::acquire(dir.path()).unwrap();
        let text = std::fs::read_to_string(held.path()).unwrap();
        assert_eq!(text.trim(), std::process::id().to_string());
        // flock locks belong to the open file description: a second open in the same
        // process conflicts just as another process would.
        let e = JobLock::acquire(dir.path()).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        let m = e.to_string();
        assert!(m.contains(&format!("pid {}", std::process::id())), "{m}");
        assert!(m.contains(".rill/lock"), "{m}");
        drop(held);
        JobLock::acquire(dir.path()).unwrap();
    }
}
