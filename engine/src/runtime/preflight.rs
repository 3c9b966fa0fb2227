//! Start-up checks: is io_uring usable, is the locked-memory limit enough for the
//! executors, do the configured CPUs exist. Each failure says what is wrong and how to
//! fix it, before any executor starts. The two raw syscalls live here.
#![allow(unsafe_code)]

use std::io;

use crate::config::{available_cpus, JobSpec};
use crate::error::{EngineError, Result};

/// glommio refuses to start an executor below this locked-memory limit.
const MIN_MEMLOCK_BYTES: u64 = 512 * 1024;

/// Runs every check for `spec`; may raise the soft locked-memory limit up to the hard one.
pub fn check(spec: &JobSpec) -> Result<()> {
    check_io_uring()?;
    check_memlock(spec)?;
    check_cpus(spec)
}

fn check_io_uring() -> Result<()> {
    if let Ok(v) = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled") {
        if v.trim() == "2" {
            return Err(EngineError::Preflight {
                problem: "io_uring is disabled on this machine (kernel.io_uring_disabled = 2)"
                    .into(),
                fix: "run `sysctl -w kernel.io_uring_disabled=0` as root".into(),
            });
        }
    }
    probe_io_uring().map_err(|e| {
        let fix = match e.raw_os_error() {
            Some(libc::ENOSYS) => "use a Linux kernel with io_uring (5.8 or newer)",
            Some(libc::EPERM) | Some(libc::EACCES) => {
                "io_uring is blocked: check `sysctl kernel.io_uring_disabled` (0 allows everyone) \
                 and, in a container, a seccomp profile that allows io_uring_setup \
                 (e.g. docker --security-opt seccomp=unconfined)"
            }
            Some(libc::ENOMEM) => "raise the locked-memory limit (`ulimit -l unlimited`)",
            _ => "check that this kernel supports io_uring",
        };
        EngineError::Preflight {
            problem: format!("cannot create an io_uring: {e}"),
            fix: fix.into(),
        }
    })
}

/// Sets up and tears down a small io_uring.
fn probe_io_uring() -> io::Result<()> {
    // struct io_uring_params is 120 bytes in every kernel ABI so far.
    let mut params = [0u64; 15];
    // SAFETY: io_uring_setup(2) reads and writes `struct io_uring_params` (120 bytes) at
    // the pointer; `params` is a live, zeroed, 8-aligned buffer of exactly that size.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_io_uring_setup,
            4u32,
            params.as_mut_ptr().cast::<libc::c_void>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is the descriptor io_uring_setup just returned and nothing else uses it.
    unsafe { libc::close(fd as libc::c_int) };
    Ok(())
}

fn memlock_limits() -> io::Result<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `struct rlimit` to a valid, exclusive pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((lim.rlim_cur, lim.rlim_max))
}

fn set_memlock_soft(soft: u64, hard: u64) -> io::Result<()> {
    let lim = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: setrlimit reads one `struct rlimit` from a valid pointer.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn check_memlock(spec: &JobSpec) -> Result<()> {
    let wanted: u64 = MIN_MEMLOCK_BYTES
        + spec
            .cores
            .iter()
            .map(|c| c.config.io_memory_kib as u64 * 1024)
            .sum::<u64>();
    let (soft, hard) = memlock_limits().map_err(|e| EngineError::Preflight {
        problem: format!("cannot read the locked-memory limit: {e}"),
        fix: "check `ulimit -l`".into(),
    })?;
    if soft != libc::RLIM_INFINITY && soft < wanted {
        let target = if hard == libc::RLIM_INFINITY {
            wanted
        } else {
            wanted.min(hard)
        };
        if target > soft {
            // Raising the soft limit up to the hard one needs no privilege.
            let _ = set_memlock_soft(target, hard);
        }
    }
    let (soft, _) = memlock_limits().unwrap_or((0, 0));
    if soft != libc::RLIM_INFINITY && soft < MIN_MEMLOCK_BYTES {
        return Err(EngineError::Preflight {
            problem: format!(
                "the locked-memory limit is {} KiB; each executor needs at least {} KiB",
                soft / 1024,
                MIN_MEMLOCK_BYTES / 1024
            ),
            fix: "raise it: `ulimit -l unlimited` in the shell, or `memlock` in \
                  /etc/security/limits.conf, or LimitMEMLOCK= in a systemd unit"
                .into(),
        });
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    // Root has CAP_IPC_LOCK, so registration ignores the limit.
    if !root && soft != libc::RLIM_INFINITY && soft < wanted {
        tracing::warn!(
            limit_kib = soft / 1024,
            wanted_kib = wanted / 1024,
            "locked-memory limit below io_memory_kib of all cores: io_uring buffer \
             registration will be skipped (slower IO); raise `ulimit -l` or lower io_memory_kib"
        );
    }
    Ok(())
}

fn check_cpus(spec: &JobSpec) -> Result<()> {
    let available = available_cpus();
    for c in &spec.cores {
        if !available.contains(&c.cpu.0) {
            return Err(EngineError::Preflight {
                problem: format!(
                    "{} pins an executor to CPU {}, which this process may not use",
                    c.file.display(),
                    c.cpu.0
                ),
                fix: format!("use one of the available CPUs {available:?}"),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_uring_probe_succeeds_where_the_kernel_allows_io_uring() {
        let disabled = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled");
        match disabled.as_deref().map(str::trim) {
            // Allowed for everyone (the CI machine): the probe and the check must pass.
            Ok("0") => {
                probe_io_uring().unwrap();
                check_io_uring().unwrap();
            }
            // Disabled outright: the check must say so, with the sysctl to change.
            Ok("2") => {
                let e = check_io_uring().unwrap_err().to_string();
                assert!(e.contains("io_uring_disabled"), "{e}");
            }
            // Restricted to a group, or an older kernel without the sysctl: either
            // outcome is possible, but a failure must carry the OS error.
            _ => {
                if let Err(e) = probe_io_uring() {
                    assert!(e.raw_os_error().is_some(), "{e}");
                }
            }
        }
    }

    #[test]
    fn memlock_limits_are_readable() {
        let (soft, hard) = memlock_limits().unwrap();
        assert!(hard == libc::RLIM_INFINITY || soft <= hard);
    }
}
