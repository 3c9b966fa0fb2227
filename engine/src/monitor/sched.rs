//! What the kernel's scheduler says about a thread: its time on a CPU, its time spent
//! runnable but waiting for a CPU (the run-queue delay), and its voluntary and
//! involuntary context switches. Read from `/proc/self/task/<tid>/schedstat` and
//! `.../status`; the parsers are pure and tested on fixed text. The monitor reads other
//! threads (each core's) by tid; a core reads its own through [`OwnSchedStat`], which
//! keeps the file open and costs one `pread` per sample. Nothing here keeps state
//! between calls or decides anything.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;

use serde::{Deserialize, Serialize};

/// One reading of a thread's scheduler counters (cumulative since the thread started).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchedCounters {
    /// Time on a CPU, ns (`schedstat` field 1).
    pub runtime_ns: u64,
    /// Time runnable but waiting for a CPU, ns (`schedstat` field 2).
    pub run_delay_ns: u64,
    /// Context switches the thread asked for: it slept (a system call that blocked, a
    /// park) (`voluntary_ctxt_switches`).
    pub voluntary: u64,
    /// Context switches forced on it: the scheduler gave its CPU to another thread
    /// (`nonvoluntary_ctxt_switches`).
    pub involuntary: u64,
}

impl SchedCounters {
    /// `self - earlier`, field by field (0 where a counter went backwards: another
    /// thread with a reused tid).
    pub fn since(&self, earlier: &SchedCounters) -> SchedCounters {
        SchedCounters {
            runtime_ns: self.runtime_ns.saturating_sub(earlier.runtime_ns),
            run_delay_ns: self.run_delay_ns.saturating_sub(earlier.run_delay_ns),
            voluntary: self.voluntary.saturating_sub(earlier.voluntary),
            involuntary: self.involuntary.saturating_sub(earlier.involuntary),
        }
    }
}

/// `(runtime ns, run delay ns)` from the text of a `schedstat` file
/// (`"<runtime> <run delay> <timeslices>"`).
pub fn parse_schedstat(text: &str) -> Option<(u64, u64)> {
    let mut f = text.split_ascii_whitespace();
    let runtime = f.next()?.parse().ok()?;
    let delay = f.next()?.parse().ok()?;
    Some((runtime, delay))
}

/// `(voluntary, involuntary)` context switches from the text of a `status` file.
pub fn parse_switches(text: &str) -> Option<(u64, u64)> {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.trim_start_matches(':').trim().parse().ok())
    };
    Some((
        field("voluntary_ctxt_switches")?,
        field("nonvoluntary_ctxt_switches")?,
    ))
}

/// The scheduler counters of thread `tid` of this process (`None`: not Linux, the
/// kernel lacks `CONFIG_SCHED_INFO`, or the thread is gone).
pub fn thread_counters(tid: i32) -> Option<SchedCounters> {
    if tid <= 0 {
        return None;
    }
    let base = format!("/proc/self/task/{tid}");
    let (runtime_ns, run_delay_ns) =
        parse_schedstat(&std::fs::read_to_string(format!("{base}/schedstat")).ok()?)?;
    let (voluntary, involuntary) =
        parse_switches(&std::fs::read_to_string(format!("{base}/status")).ok()?)?;
    Some(SchedCounters {
        runtime_ns,
        run_delay_ns,
        voluntary,
        involuntary,
    })
}

/// The calling thread's `schedstat`, kept open: one `pread` per reading (a few
/// microseconds), cheap enough for a core to read every few milliseconds.
#[derive(Debug)]
pub struct OwnSchedStat {
    file: File,
    buf: [u8; 96],
}

impl OwnSchedStat {
    /// Opens the calling thread's `schedstat` (`None` where the kernel has none).
    pub fn open() -> Option<Self> {
        let mut file = File::open("/proc/thread-self/schedstat").ok()?;
        let mut probe = String::new();
        file.read_to_string(&mut probe).ok()?;
        parse_schedstat(&probe)?;
        Some(Self { file, buf: [0; 96] })
    }

    /// `(runtime ns, run delay ns)` now.
    pub fn read(&mut self) -> Option<(u64, u64)> {
        let n = self.file.read_at(&mut self.buf, 0).ok()?;
        parse_schedstat(std::str::from_utf8(&self.buf[..n]).ok()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedstat_and_status_parse() {
        assert_eq!(parse_schedstat("123456 7890 42\n"), Some((123_456, 7_890)));
        assert_eq!(parse_schedstat("garbage"), None);
        assert_eq!(parse_schedstat(""), None);
        let status = "Name:\trill-0\nState:\tR (running)\nvoluntary_ctxt_switches:\t17\n\
                      nonvoluntary_ctxt_switches:\t4242\n";
        assert_eq!(parse_switches(status), Some((17, 4242)));
        assert_eq!(parse_switches("Name:\tx\n"), None);
    }

    #[test]
    fn differences_never_go_negative() {
        let a = SchedCounters {
            runtime_ns: 10,
            run_delay_ns: 5,
            voluntary: 3,
            involuntary: 1,
        };
        let b = SchedCounters {
            runtime_ns: 30,
            run_delay_ns: 4,
            voluntary: 7,
            involuntary: 1,
        };
        let d = b.since(&a);
        assert_eq!(
            (d.runtime_ns, d.run_delay_ns, d.voluntary, d.involuntary),
            (20, 0, 4, 0)
        );
    }

    #[test]
    fn this_thread_has_counters_and_they_grow_with_work() {
        // SAFETY: gettid has no preconditions.
        #[allow(unsafe_code)]
        let tid = unsafe { libc::syscall(libc::SYS_gettid) } as i32;
        let Some(before) = thread_counters(tid) else {
            eprintln!("no schedstat on this kernel; skipping");
            return;
        };
        let mut own = OwnSchedStat::open().expect("own schedstat");
        let (r0, _) = own.read().unwrap();
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = std::hint::black_box(x.wrapping_add(i));
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
        let after = thread_counters(tid).unwrap();
        let (r1, _) = own.read().unwrap();
        assert!(after.runtime_ns > before.runtime_ns);
        assert!(r1 > r0);
        assert!(
            after.voluntary > before.voluntary,
            "the sleep is a voluntary switch"
        );
    }
}
