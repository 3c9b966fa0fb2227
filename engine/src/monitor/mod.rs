//! The job's monitor: one thread beside the pinned cores (not pinned, asleep between
//! ticks) that watches each core's probe for stalls — a loop round longer than the
//! threshold, reported with the operator the core was in, what its thread was doing and
//! why (the CPU taken, a blocking call, a computation) — follows how long each core's
//! thread waited for its CPU over the run, samples the process's memory, and serves the
//! Prometheus text endpoint from what the cores published. Nothing here runs on a core
//! or makes a core wait.
//!
//! Stalls the job causes (a blocking call, a long computation) are logged as they end,
//! the first few of them; stalls caused by CPU contention are logged once, when the
//! first ends, and summarised when the run ends: on a crowded machine there can be
//! hundreds, and each says the same thing.

pub mod probe;
pub mod prometheus;
pub mod sched;
pub mod stall;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use self::probe::{CoreProbe, Marker};
use self::sched::SchedCounters;
use self::stall::{Sample, Stall, StallTracker};
use crate::clock::{Clock, MonotonicClock};

/// How the process's resident memory moved during the run (the FAQ's "memory leak?").
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MemoryTrend {
    /// Samples taken (one per second).
    pub samples: u64,
    /// Resident bytes at the first sample.
    pub first_bytes: u64,
    /// At the last.
    pub last_bytes: u64,
    /// The highest.
    pub peak_bytes: u64,
    /// Least-squares slope over the run, bytes per second.
    pub slope_bytes_per_s: f64,
    /// Seconds between the first and the last sample.
    pub span_s: f64,
    #[serde(skip)]
    first_t: f64,
    #[serde(skip)]
    sums: (f64, f64, f64, f64),
}

impl MemoryTrend {
    /// Adds a sample of `bytes` at `t_s` (seconds, increasing).
    pub fn add(&mut self, t_s: f64, bytes: u64) {
        if self.samples == 0 {
            self.first_bytes = bytes;
            self.first_t = t_s;
        }
        self.samples += 1;
        self.last_bytes = bytes;
        self.peak_bytes = self.peak_bytes.max(bytes);
        let x = t_s - self.first_t;
        self.span_s = x;
        let y = bytes as f64;
        let (sx, sy, sxx, sxy) = &mut self.sums;
        *sx += x;
        *sy += y;
        *sxx += x * x;
        *sxy += x * y;
        let n = self.samples as f64;
        let den = n * *sxx - *sx * *sx;
        self.slope_bytes_per_s = if den > 0.0 {
            (n * *sxy - *sx * *sy) / den
        } else {
            0.0
        };
    }
}

/// Resident memory of this process, bytes (`/proc/self/statm`).
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    #[allow(unsafe_code)]
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok()?)
}

/// Scheduler counters read at a time on the job clock (ns).
type Reading = (u64, SchedCounters);

/// How the scheduler treated one core's thread over the run (from its first reading after
/// the start to its last, one a second).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CoreSched {
    /// The core's index in the job.
    pub core: usize,
    /// The CPU it is pinned to.
    pub cpu: usize,
    /// Wall time between the two readings, ms.
    pub span_ms: f64,
    /// Time on the CPU, ms.
    pub runtime_ms: f64,
    /// Time runnable but waiting for the CPU (run-queue delay), ms.
    pub run_delay_ms: f64,
    /// Voluntary context switches (parks, blocking calls).
    pub voluntary: u64,
    /// Involuntary context switches (the CPU given to another thread).
    pub involuntary: u64,
}

impl CoreSched {
    /// The share of the span the thread waited for its CPU.
    pub fn wait_share(&self) -> f64 {
        if self.span_ms > 0.0 {
            self.run_delay_ms / self.span_ms
        } else {
            0.0
        }
    }

    /// The share of the span the thread ran.
    pub fn run_share(&self) -> f64 {
        if self.span_ms > 0.0 {
            self.runtime_ms / self.span_ms
        } else {
            0.0
        }
    }

    fn of(core: usize, cpu: usize, first: Reading, last: Reading) -> Self {
        let d = last.1.since(&first.1);
        Self {
            core,
            cpu,
            span_ms: last.0.saturating_sub(first.0) as f64 / 1e6,
            runtime_ms: d.runtime_ns as f64 / 1e6,
            run_delay_ms: d.run_delay_ns as f64 / 1e6,
            voluntary: d.voluntary,
            involuntary: d.involuntary,
        }
    }
}

/// What the monitor saw over a run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MonitorOutcome {
    /// Loop rounds longer than the threshold, in the order they ended.
    pub stalls: Vec<Stall>,
    /// Each core's thread as the scheduler saw it (empty where the kernel does not
    /// say).
    #[serde(default)]
    pub sched: Vec<CoreSched>,
    /// The stall threshold, ms (`None`: the detector was off).
    pub stall_threshold_ms: Option<f64>,
    /// The process's memory over the run.
    pub memory: MemoryTrend,
}

/// The monitor of a job, seen from outside: the endpoint's address once bound, and the
/// outcome once the run ended (also when it failed).
#[derive(Clone, Debug, Default)]
pub struct MonitorHandle {
    addr: Arc<OnceLock<SocketAddr>>,
    outcome: Arc<Mutex<Option<MonitorOutcome>>>,
}

impl MonitorHandle {
    /// Where the metrics endpoint listens (`None` before the job started it, or off).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.addr.get().copied()
    }

    /// What the monitor saw in the last run (after it ended).
    pub fn outcome(&self) -> Option<MonitorOutcome> {
        self.outcome
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// What the monitor thread needs.
pub(crate) struct MonitorArgs {
    pub(crate) probes: Vec<Arc<CoreProbe>>,
    /// The CPU of each core.
    pub(crate) cpus: Vec<usize>,
    /// Operator names by graph node.
    pub(crate) names: Vec<String>,
    pub(crate) threshold: Option<Duration>,
    pub(crate) listener: Option<TcpListener>,
    pub(crate) clock: MonotonicClock,
    /// The job's start on the clock, once the cores set it (0 before).
    pub(crate) start_ns: Arc<std::sync::atomic::AtomicU64>,
    pub(crate) handle: MonitorHandle,
}

/// The running monitor thread.
pub(crate) struct Monitor {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<MonitorOutcome>>,
    handle: MonitorHandle,
}

impl Monitor {
    /// Starts the thread.
    pub(crate) fn start(args: MonitorArgs) -> std::io::Result<Self> {
        if let Some(l) = &args.listener {
            l.set_nonblocking(true)?;
            let _ = args.handle.addr.set(l.local_addr()?);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let handle = args.handle.clone();
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("rill-monitor".into())
            .spawn(move || run(args, &flag))?;
        Ok(Self {
            stop,
            thread: Some(thread),
            handle,
        })
    }

    /// Stops the thread and keeps what it saw in the handle.
    pub(crate) fn finish(mut self) -> MonitorOutcome {
        self.stop.store(true, Ordering::SeqCst);
        let outcome = self
            .thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default();
        *self
            .handle
            .outcome
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(outcome.clone());
        outcome
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(a: MonitorArgs, stop: &AtomicBool) -> MonitorOutcome {
    let tick = a.threshold.map_or(Duration::from_millis(50), |t| {
        (t / 4).clamp(Duration::from_millis(1), Duration::from_millis(50))
    });
    let threshold_ns = a.threshold.map(|t| t.as_nanos() as u64);
    let mut tracker = StallTracker::new(a.probes.len(), threshold_ns.unwrap_or(u64::MAX));
    let mut stalls: Vec<Stall> = Vec::new();
    let mut memory = MemoryTrend::default();
    let mut next_memory_ns = 0u64;
    // Each core's scheduler counters: the first reading after the start and the latest.
    let mut sched: Vec<Option<(Reading, Reading)>> = vec![None; a.probes.len()];
    let mut log = StallLog::default();
    let name = |m: Marker| -> (Option<String>, Option<u32>) {
        match m.decode() {
            Some((node, p)) => (a.names.get(node).cloned(), p),
            None if m == Marker::CHECKPOINT => (Some("checkpoint runtime".into()), None),
            None => (None, None),
        }
    };
    loop {
        let stopping = stop.load(Ordering::SeqCst);
        let now = a.clock.now_ns();
        let start = a.start_ns.load(Ordering::SeqCst);
        if threshold_ns.is_some() {
            for (i, p) in a.probes.iter().enumerate() {
                let (round_start, marker) = p.sample();
                let (thread, counters) = if tracker.wants_thread(i, round_start, now) {
                    (
                        probe::thread_state(p.tid()),
                        sched::thread_counters(p.tid()),
                    )
                } else {
                    (stall::ThreadState::Unknown, None)
                };
                tracker.sample(
                    i,
                    Sample {
                        round_start_ns: round_start,
                        marker,
                        thread,
                        sched: counters,
                    },
                    now,
                );
            }
            // Name the stalls that ended now, so the endpoint counts them.
            if tracker.has_closed() {
                let done = tracker.take_closed(&name, &a.cpus, start);
                for s in &done {
                    log.ended(s);
                }
                stalls.extend(done);
            }
        }
        if start != 0 && now >= next_memory_ns {
            if let Some(rss) = resident_bytes() {
                memory.add(now.saturating_sub(start) as f64 / 1e9, rss);
            }
            for (slot, p) in sched.iter_mut().zip(&a.probes) {
                if let Some(c) = sched::thread_counters(p.tid()) {
                    match slot {
                        Some((_, last)) => *last = (now, c),
                        None => *slot = Some(((now, c), (now, c))),
                    }
                }
            }
            next_memory_ns = now + 1_000_000_000;
        }
        if let Some(l) = &a.listener {
            serve(l, &a, &stalls, start);
        }
        if stopping {
            break;
        }
        std::thread::sleep(tick);
    }
    let last = tracker.finish(name, &a.cpus, a.start_ns.load(Ordering::SeqCst));
    for s in &last {
        log.ended(s);
    }
    stalls.extend(last);
    for line in stall::summarize(&stalls)
        .iter()
        .filter(|_| log.suppressed > 0)
    {
        tracing::warn!("stalls: {line}");
    }
    let sched = sched
        .iter()
        .enumerate()
        .filter_map(|(i, s)| {
            let (first, last) = (*s)?;
            (last.0 > first.0)
                .then(|| CoreSched::of(i, a.cpus.get(i).copied().unwrap_or(i), first, last))
        })
        .collect();
    MonitorOutcome {
        stalls,
        sched,
        stall_threshold_ms: a.threshold.map(|t| t.as_secs_f64() * 1e3),
        memory,
    }
}

/// Stalls the job causes logged as they end, the first `SHOWN` of them; the others
/// (contention, or a cause not seen) logged once. The rest are counted and summarised at
/// the end of the run.
#[derive(Default)]
struct StallLog {
    in_the_job: usize,
    contention: usize,
    suppressed: usize,
}

impl StallLog {
    const SHOWN: usize = 5;

    fn ended(&mut self, s: &Stall) {
        if !s.cause.is_in_the_job() {
            // Contention (or a cause not seen): the same for every stall of the run.
            self.contention += 1;
            if self.contention == 1 {
                tracing::warn!(
                    "stall: {}; further stalls not caused by the job are summarised when the \
                     run ends",
                    s.describe()
                );
            } else {
                self.suppressed += 1;
            }
        } else {
            self.in_the_job += 1;
            if self.in_the_job <= Self::SHOWN {
                tracing::warn!("stall: {}", s.describe());
            } else {
                self.suppressed += 1;
            }
        }
    }
}

/// Answers every connection waiting on the listener.
fn serve(l: &TcpListener, a: &MonitorArgs, stalls: &[Stall], start_ns: u64) {
    loop {
        match l.accept() {
            Ok((stream, _)) => {
                if let Err(e) = answer(stream, a, stalls, start_ns) {
                    tracing::debug!("metrics endpoint: {e}");
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
            Err(e) => {
                tracing::debug!("metrics endpoint: accept: {e}");
                return;
            }
        }
    }
}

fn answer(
    mut stream: TcpStream,
    a: &MonitorArgs,
    stalls: &[Stall],
    start_ns: u64,
) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_millis(500)))?;
    stream.set_write_timeout(Some(Duration::from_millis(500)))?;
    let mut buf = [0u8; 4096];
    let mut got = 0;
    while got < buf.len() {
        let n = stream.read(&mut buf[got..])?;
        if n == 0 {
            break;
        }
        got += n;
        if buf[..got].windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    let request = String::from_utf8_lossy(&buf[..got]);
    let mut parts = request.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let (status, ctype, body) = if method != "GET" {
        (
            "405 Method Not Allowed",
            "text/plain",
            "only GET\n".to_string(),
        )
    } else if path == "/metrics" || path == "/" {
        let now = a.clock.now_ns();
        let scrape = prometheus::Scrape {
            cores: a
                .probes
                .iter()
                .zip(&a.cpus)
                .enumerate()
                .map(|(i, (p, &cpu))| (p.published(), prometheus::CoreExtra::of(cpu, i, stalls)))
                .collect(),
            resident_bytes: resident_bytes(),
            uptime_s: if start_ns == 0 {
                0.0
            } else {
                now.saturating_sub(start_ns) as f64 / 1e9
            },
            now_ns: now,
        };
        (
            "200 OK",
            prometheus::CONTENT_TYPE,
            prometheus::render(&scrape),
        )
    } else {
        (
            "404 Not Found",
            "text/plain",
            "rill serves /metrics\n".to_string(),
        )
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_trend_fits_a_line_through_the_samples() {
        let mut m = MemoryTrend::default();
        for t in 0..10 {
            m.add(100.0 + t as f64, 1_000 + 50 * t);
        }
        assert_eq!(m.samples, 10);
        assert_eq!(
            (m.first_bytes, m.last_bytes, m.peak_bytes),
            (1_000, 1_450, 1_450)
        );
        assert!((m.slope_bytes_per_s - 50.0).abs() < 1e-6);
        assert!((m.span_s - 9.0).abs() < 1e-9);
        let mut flat = MemoryTrend::default();
        flat.add(0.0, 7);
        assert_eq!(flat.slope_bytes_per_s, 0.0);
    }

    #[test]
    fn this_process_has_resident_memory() {
        assert!(resident_bytes().is_some_and(|b| b > 0));
    }
}
