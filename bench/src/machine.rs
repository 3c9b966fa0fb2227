//! The machine a run was measured on, and CPU time from the OS: per executor thread from
//! `/proc/self/task/<tid>/stat` (utime + stime of the threads named `rill-cpuN`), for the
//! whole process from `getrusage(RUSAGE_SELF)`, and for the calling thread from
//! `getrusage(RUSAGE_THREAD)`. Linux only; elsewhere the values are absent.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What the report says about the machine.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    /// `model name` from /proc/cpuinfo.
    pub cpu_model: String,
    /// CPUs online.
    pub cpus_online: usize,
    /// CPUs this process may run on (its affinity mask).
    pub cpus_available: Vec<usize>,
    /// Kernel release.
    pub kernel: String,
    /// Host name.
    pub hostname: String,
    /// Memory, MiB.
    pub memory_mib: u64,
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

impl Machine {
    /// Reads the machine's description.
    pub fn detect() -> Self {
        let cpuinfo = read("/proc/cpuinfo");
        let cpu_model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        let cpus_online = std::thread::available_parallelism().map_or(1, |n| n.get());
        let memory_mib = read("/proc/meminfo")
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map_or(0, |kb| kb / 1024);
        Self {
            cpu_model,
            cpus_online,
            cpus_available: rill_engine::config::available_cpus(),
            kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
            hostname: read("/proc/sys/kernel/hostname").trim().to_string(),
            memory_mib,
        }
    }
}

fn ticks_per_s() -> f64 {
    // SAFETY: sysconf has no preconditions.
    #[allow(unsafe_code)]
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// CPU seconds (user + system) of every thread of this process whose name starts with
/// `prefix`, by thread id: `(tid, name, seconds)`.
pub fn thread_cpu_s(prefix: &str) -> Vec<(u64, String, f64)> {
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    let tck = ticks_per_s();
    for t in tasks.flatten() {
        let dir = t.path();
        let tid = t
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0);
        let name = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        let name = name.trim();
        if !name.starts_with(prefix) {
            continue;
        }
        let stat = std::fs::read_to_string(dir.join("stat")).unwrap_or_default();
        // Fields after the parenthesised name: state is field 3, utime 14, stime 15.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        let (Some(u), Some(s)) = (f.get(11), f.get(12)) else {
            continue;
        };
        let ticks = u.parse::<u64>().unwrap_or(0) + s.parse::<u64>().unwrap_or(0);
        out.push((tid, name.to_string(), ticks as f64 / tck));
    }
    out
}

fn rusage(who: libc::c_int) -> f64 {
    // SAFETY: getrusage writes only into the zeroed struct it is given.
    #[allow(unsafe_code)]
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        if libc::getrusage(who, &mut ru) != 0 {
            return 0.0;
        }
        ru
    };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// CPU seconds of the whole process so far (threads that exited included).
pub fn process_cpu_s() -> f64 {
    rusage(libc::RUSAGE_SELF)
}

/// CPU seconds of the calling thread so far.
pub fn this_thread_cpu_s() -> f64 {
    rusage(libc::RUSAGE_THREAD)
}

/// Keeps the highest CPU time seen per executor thread while a job runs: the threads
/// exist only during `Job::run`, so the harness samples them while it waits (once a
/// second) and the end of each thread's life is missing from its samples; the runner
/// completes them from the exact process total (`runner::complete_per_core`).
#[derive(Debug, Default)]
pub struct CpuSampler {
    seen: BTreeMap<u64, (String, f64)>,
}

impl CpuSampler {
    /// Samples the threads named `prefix…` now.
    pub fn sample(&mut self, prefix: &str) {
        for (tid, name, s) in thread_cpu_s(prefix) {
            let e = self.seen.entry(tid).or_insert((name, 0.0));
            e.1 = e.1.max(s);
        }
    }

    /// CPU seconds by thread name (threads of one name summed: glommio names an
    /// executor's helper threads like the executor, `rill-cpu0-1`, which is trimmed to
    /// `rill-cpu0`).
    pub fn per_thread(&self) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        for (name, s) in self.seen.values() {
            let name = match name.rsplit_once('-') {
                Some((head, tail)) if head.contains("cpu") && tail.parse::<u32>().is_ok() => head,
                _ => name.as_str(),
            };
            *out.entry(name.to_string()).or_insert(0.0) += s;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sees_a_named_thread_and_its_cpu_time() {
        let h = std::thread::Builder::new()
            .name("benchtest-spin".into())
            .spawn(|| {
                let t = std::time::Instant::now();
                let mut x = 0u64;
                while t.elapsed() < std::time::Duration::from_millis(50) {
                    x = x.wrapping_add(1);
                }
                let mut s = CpuSampler::default();
                s.sample("benchtest-");
                (x, s.per_thread(), this_thread_cpu_s())
            })
            .unwrap();
        let (_, seen, own) = h.join().unwrap();
        assert!(seen.contains_key("benchtest-spin"), "{seen:?}");
        assert!(own > 0.0);
        assert!(process_cpu_s() > 0.0);
        let m = Machine::detect();
        assert!(m.cpus_online >= 1 && !m.cpus_available.is_empty());
    }
}
