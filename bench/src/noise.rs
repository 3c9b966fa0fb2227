//! A noisy neighbour and the machine's floor.
//!
//! `--noise N` runs N CPU-bound processes beside the job for the whole of a `run` (rill and
//! the peer) or a `sweep`: children of the harness, unpinned, at normal priority, each
//! spinning on arithmetic until the harness kills it (or dies: they get `SIGKILL` when it
//! does). Processes rather than threads, so their CPU is not counted in the harness's own
//! process CPU figure. The harness re-executes itself with [`SPIN_ARG`] for each.
//!
//! The floor: right before the job, one thread pinned to each of the job's CPUs does
//! nothing but read the clock (`Instant::now`, CLOCK_MONOTONIC through the vDSO) in a loop
//! for a short window and records every gap between two successive reads in an
//! HdrHistogram. A gap is time the thread did not run: preemption by another task,
//! interrupts, a hypervisor's steal. Its p99.9 and max are what any pinned thread on that
//! CPU would see at best, under the same noise, so a tail figure of the job reads against
//! them.
//!
//! `unsafe` here: the noise children are marked to die with the harness (`prctl`
//! between fork and exec), killed and reaped with `wait4` for their CPU time.
#![allow(unsafe_code)]

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::stats::{merge, new_histogram, MAX_LATENCY_NS};

/// The hidden first argument that makes `rill-bench` a noise process.
pub const SPIN_ARG: &str = "__noise-spin";

/// Gaps at least this long are counted as hiccups, ns.
const HICCUP_NS: u64 = 100_000;

/// The spinning loop of a noise process: never returns.
pub fn spin_forever() -> ! {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    loop {
        for _ in 0..1_000_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
        }
        std::hint::black_box(x);
    }
}

/// N running noise processes; dropping it kills and reaps them.
pub struct Noise {
    children: Vec<Child>,
}

impl Noise {
    /// Starts `n` noise processes (`exe SPIN_ARG`; `exe` is normally `current_exe()`).
    pub fn start(n: usize, exe: &std::path::Path) -> Result<Self> {
        let mut children = Vec::with_capacity(n);
        for _ in 0..n {
            let mut cmd = Command::new(exe);
            cmd.arg(SPIN_ARG)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            // SAFETY: prctl is async-signal-safe; it only marks the child to die with the
            // thread that started it.
            unsafe {
                std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                });
            }
            children.push(
                cmd.spawn()
                    .with_context(|| format!("start a noise process ({})", exe.display()))?,
            );
        }
        Ok(Self { children })
    }

    /// How many run.
    pub fn len(&self) -> usize {
        self.children.len()
    }

    /// Whether none run.
    pub fn is_empty(&self) -> bool {
        self.children.is_empty()
    }

    /// Their pids.
    pub fn pids(&self) -> Vec<u32> {
        self.children.iter().map(Child::id).collect()
    }
}

impl Noise {
    /// Kills and reaps them; returns the CPU seconds they used in all (their rusage).
    pub fn stop(mut self) -> f64 {
        let children = std::mem::take(&mut self.children);
        for c in &children {
            // SAFETY: signals our own child.
            unsafe {
                libc::kill(c.id() as libc::pid_t, libc::SIGKILL);
            }
        }
        let mut total = 0.0;
        for c in &children {
            let mut status = 0;
            // SAFETY: a zeroed rusage is valid; wait4 reaps our own child and fills it.
            let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
            // SAFETY: as above.
            let r = unsafe { libc::wait4(c.id() as libc::pid_t, &mut status, 0, &mut ru) };
            if r > 0 {
                let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
                total += tv(ru.ru_utime) + tv(ru.ru_stime);
            }
        }
        total
    }
}

impl Drop for Noise {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
        }
        for c in &mut self.children {
            let _ = c.wait();
        }
    }
}

/// The floor on one CPU.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FloorRow {
    /// Clock reads (gaps recorded).
    pub samples: u64,
    /// Gap percentiles, µs: p50, p99, p999, p9999, max.
    pub gap_us: BTreeMap<String, f64>,
    /// Gaps of 100 µs or more.
    pub hiccups: u64,
    /// Their total, ms: time the thread did not run.
    pub hiccup_ms: f64,
    /// Whether the thread was pinned to the CPU.
    pub pinned: bool,
}

/// The machine's floor, measured in the same run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FloorSection {
    /// How long each thread read the clock, s.
    pub window_s: f64,
    /// Noise processes running while it was measured.
    pub noise: usize,
    /// All CPUs merged: p99.9 of the gaps, µs.
    pub p999_us: f64,
    /// All CPUs merged: the longest gap, µs.
    pub max_us: f64,
    /// Per CPU (`cpu0`).
    pub per_cpu: BTreeMap<String, FloorRow>,
}

fn row(h: &Histogram<u64>, hiccups: u64, hiccup_ns: u64, pinned: bool) -> FloorRow {
    let us = |v: u64| v as f64 / 1e3;
    let mut gap_us = BTreeMap::new();
    for (name, q) in [
        ("p50", 0.5),
        ("p99", 0.99),
        ("p999", 0.999),
        ("p9999", 0.9999),
    ] {
        gap_us.insert(name.to_string(), us(h.value_at_quantile(q)));
    }
    gap_us.insert("max".into(), us(h.max()));
    FloorRow {
        samples: h.len(),
        gap_us,
        hiccups,
        hiccup_ms: hiccup_ns as f64 / 1e6,
        pinned,
    }
}

/// Measures the floor: one thread per CPU of `cpus`, pinned to it, reading the clock for
/// `window` and recording the gaps.
pub fn measure_floor(cpus: &[usize], window: Duration, noise: usize) -> Result<FloorSection> {
    let handles: Vec<_> = cpus
        .iter()
        .map(|&cpu| {
            std::thread::Builder::new()
                .name(format!("rill-floor{cpu}"))
                .spawn(move || {
                    let pinned = core_affinity::set_for_current(core_affinity::CoreId { id: cpu });
                    let mut h = new_histogram();
                    let (mut hiccups, mut hiccup_ns) = (0u64, 0u64);
                    let start = Instant::now();
                    let mut prev = start;
                    loop {
                        // Check the window every 1024 reads: the check is a read too.
                        for _ in 0..1024 {
                            let now = Instant::now();
                            let gap = now.duration_since(prev).as_nanos() as u64;
                            prev = now;
                            h.saturating_record(gap.clamp(1, MAX_LATENCY_NS));
                            if gap >= HICCUP_NS {
                                hiccups += 1;
                                hiccup_ns += gap;
                            }
                        }
                        if prev.duration_since(start) >= window {
                            break;
                        }
                    }
                    (cpu, h, hiccups, hiccup_ns, pinned)
                })
                .context("start a floor thread")
        })
        .collect::<Result<_>>()?;
    let mut per_cpu = BTreeMap::new();
    let mut all = Vec::new();
    for h in handles {
        let (cpu, hist, hiccups, hiccup_ns, pinned) = h
            .join()
            .map_err(|_| anyhow::anyhow!("a floor thread panicked"))?;
        per_cpu.insert(format!("cpu{cpu}"), row(&hist, hiccups, hiccup_ns, pinned));
        all.push(hist);
    }
    let merged = merge(all.iter());
    Ok(FloorSection {
        window_s: window.as_secs_f64(),
        noise,
        p999_us: merged.value_at_quantile(0.999) as f64 / 1e3,
        max_us: merged.max() as f64 / 1e3,
        per_cpu,
    })
}

impl FloorSection {
    /// The report's `floor` lines.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "floor     clock-read gaps of a pinned thread, {:.1} s before the job{}: p99.9 {:.1} us, max {:.1} us",
            self.window_s,
            if self.noise > 0 {
                format!(" (under the same noise, {})", self.noise)
            } else {
                String::new()
            },
            self.p999_us,
            self.max_us
        );
        for (cpu, r) in &self.per_cpu {
            s.push_str(&format!(
                "\n          {cpu}{}: p99 {:.2} p99.9 {:.2} p99.99 {:.1} max {:.1} us; {} gaps >= 100 us, {:.1} ms in all",
                if r.pinned { "" } else { " (not pinned)" },
                r.gap_us.get("p99").copied().unwrap_or(0.0),
                r.gap_us.get("p999").copied().unwrap_or(0.0),
                r.gap_us.get("p9999").copied().unwrap_or(0.0),
                r.gap_us.get("max").copied().unwrap_or(0.0),
                r.hiccups,
                r.hiccup_ms
            ));
        }
        s.push('\n');
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_floor_records_every_read_on_every_cpu() {
        let cpus: Vec<usize> = rill_engine::config::available_cpus()
            .into_iter()
            .take(2)
            .collect();
        let f = measure_floor(&cpus, Duration::from_millis(50), 0).unwrap();
        assert_eq!(f.per_cpu.len(), cpus.len());
        for r in f.per_cpu.values() {
            // A clock read takes well under a microsecond: 50 ms is many thousands.
            assert!(r.samples > 1_000, "{r:?}");
            assert!(r.gap_us["max"] >= r.gap_us["p999"]);
        }
        assert!(f.max_us >= f.p999_us && f.p999_us > 0.0);
        assert!(f.summary().contains("p99.9"));
    }
}
