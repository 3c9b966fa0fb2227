//! The stall detector's decisions, free of threads and clocks: fed what the monitor
//! samples from each core's probe (the start of the loop round the core is in, the
//! operator it is in, the state of its thread), it opens a stall when a round has lasted
//! longer than the threshold and closes it when the core comes back to its loop.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use super::probe::{Marker, PARKED};

/// What the kernel says the core's thread was doing when sampled
/// (`/proc/<pid>/task/<tid>/stat`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ThreadState {
    /// Running or runnable: computing (or preempted by another thread on its CPU).
    Running,
    /// Asleep in a system call: a blocking call (sleep, lock, socket, file).
    Sleeping,
    /// In uninterruptible disk wait: blocking file IO.
    DiskWait,
    /// Unknown (not Linux, or the thread is gone).
    Unknown,
}

impl ThreadState {
    /// From the state letter of `/proc/.../stat`.
    pub fn from_letter(c: char) -> Self {
        match c {
            'R' => Self::Running,
            'S' => Self::Sleeping,
            'D' => Self::DiskWait,
            _ => Self::Unknown,
        }
    }

    /// What it means for the user.
    pub fn explain(self) -> &'static str {
        match self {
            Self::Running => "running: a long computation, or the CPU was taken by another thread",
            Self::Sleeping => "asleep in a system call: a blocking call",
            Self::DiskWait => "waiting for the disk: blocking file IO",
            Self::Unknown => "thread state unknown",
        }
    }
}

/// One core that did not come back to its loop for longer than the threshold.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stall {
    /// The core's index in the job.
    pub core: usize,
    /// The CPU it is pinned to.
    pub cpu: usize,
    /// The operator it was in most of the time it was sampled (`None`: the loop itself,
    /// between operators).
    pub operator: Option<String>,
    /// That operator's partition (`None`: all partitions of a receiver).
    pub partition: Option<u32>,
    /// How long the round lasted at least (the last sample minus its start), ms.
    pub duration_ms: f64,
    /// When it started, ms after the job started.
    pub at_ms: f64,
    /// What the thread was doing in most samples.
    pub thread: ThreadState,
}

impl Stall {
    /// One line for a report.
    pub fn describe(&self) -> String {
        let place = match (&self.operator, self.partition) {
            (Some(op), Some(p)) => format!("in operator `{op}` partition {p}"),
            (Some(op), None) => format!("in `{op}`"),
            (None, _) => "in the shard loop, outside any operator".to_string(),
        };
        format!(
            "core {} (CPU {}) stayed {place} for {:.1} ms at {:.1} s without returning to \
             its loop; its thread was {}{}",
            self.core,
            self.cpu,
            self.duration_ms,
            self.at_ms / 1e3,
            self.thread.explain(),
            if self.operator.is_some() {
                " — a blocking call in an operator?"
            } else {
                ""
            }
        )
    }
}

/// One sample of one core.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    /// When the core's current round started (ns on the job clock), `PARKED`, or 0
    /// before the loop starts.
    pub round_start_ns: u64,
    /// The operator the core is in.
    pub marker: Marker,
    /// Its thread's state.
    pub thread: ThreadState,
}

#[derive(Debug)]
struct Open {
    since_ns: u64,
    last_ns: u64,
    markers: BTreeMap<Marker, u32>,
    states: BTreeMap<ThreadState, u32>,
}

/// Open stalls per core and the closed ones.
#[derive(Debug)]
pub struct StallTracker {
    threshold_ns: u64,
    open: Vec<Option<Open>>,
    closed: Vec<(usize, Open)>,
}

impl StallTracker {
    /// Tracks `cores` cores; a round longer than `threshold_ns` is a stall.
    pub fn new(cores: usize, threshold_ns: u64) -> Self {
        Self {
            threshold_ns,
            open: (0..cores).map(|_| None).collect(),
            closed: Vec::new(),
        }
    }

    /// Whether the core needs its thread state read for this sample (a round is already
    /// longer than the threshold): the caller reads `/proc` only then.
    pub fn is_late(&self, round_start_ns: u64, now_ns: u64) -> bool {
        round_start_ns != 0
            && round_start_ns != PARKED
            && now_ns.saturating_sub(round_start_ns) > self.threshold_ns
    }

    /// Takes one sample of core `core` at `now_ns`.
    pub fn sample(&mut self, core: usize, s: Sample, now_ns: u64) {
        if !self.is_late(s.round_start_ns, now_ns) {
            self.close(core);
            return;
        }
        if self.open[core]
            .as_ref()
            .is_some_and(|o| o.since_ns != s.round_start_ns)
        {
            self.close(core); // a new round, itself already late
        }
        let o = self.open[core].get_or_insert_with(|| Open {
            since_ns: s.round_start_ns,
            last_ns: now_ns,
            markers: BTreeMap::new(),
            states: BTreeMap::new(),
        });
        o.last_ns = now_ns;
        *o.markers.entry(s.marker).or_default() += 1;
        *o.states.entry(s.thread).or_default() += 1;
    }

    fn close(&mut self, core: usize) {
        if let Some(o) = self.open[core].take() {
            self.closed.push((core, o));
        }
    }

    /// Closes every open stall (the run ended) and returns all of them, in the order
    /// they ended, named with `name` (marker → operator and partition), `cpus` (core
    /// index → CPU) and `start_ns` (the job's start on the same clock).
    pub fn finish(
        &mut self,
        name: impl Fn(Marker) -> (Option<String>, Option<u32>),
        cpus: &[usize],
        start_ns: u64,
    ) -> Vec<Stall> {
        for c in 0..self.open.len() {
            self.close(c);
        }
        self.take_closed(&name, cpus, start_ns)
    }

    /// The stalls that ended so far (open ones stay open), named as in `finish`.
    pub fn take_closed(
        &mut self,
        name: &impl Fn(Marker) -> (Option<String>, Option<u32>),
        cpus: &[usize],
        start_ns: u64,
    ) -> Vec<Stall> {
        self.closed
            .drain(..)
            .map(|(c, o)| describe(c, &o, name, cpus, start_ns))
            .collect()
    }

    /// Whether a stall ended since the last `take_closed`.
    pub fn has_closed(&self) -> bool {
        !self.closed.is_empty()
    }

    /// Stalls of `core` that ended and were not taken yet.
    pub fn closed_count(&self, core: usize) -> usize {
        self.closed.iter().filter(|(c, _)| *c == core).count()
    }
}

fn most<K: Copy + Ord>(m: &BTreeMap<K, u32>) -> Option<K> {
    // The most frequent; on a tie the first in key order, so the result is stable.
    m.iter()
        .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
        .map(|(k, _)| *k)
}

fn describe(
    core: usize,
    o: &Open,
    name: &impl Fn(Marker) -> (Option<String>, Option<u32>),
    cpus: &[usize],
    start_ns: u64,
) -> Stall {
    let (operator, partition) = most(&o.markers).map_or((None, None), name);
    Stall {
        core,
        cpu: cpus.get(core).copied().unwrap_or(core),
        operator,
        partition,
        duration_ms: o.last_ns.saturating_sub(o.since_ns) as f64 / 1e6,
        at_ms: o.since_ns.saturating_sub(start_ns) as f64 / 1e6,
        thread: most(&o.states).unwrap_or(ThreadState::Unknown),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn name(m: Marker) -> (Option<String>, Option<u32>) {
        match m.decode() {
            None => (None, None),
            Some((node, p)) => (Some(format!("op{node}")), p),
        }
    }

    fn s(start: u64, marker: Marker, thread: ThreadState) -> Sample {
        Sample {
            round_start_ns: start,
            marker,
            thread,
        }
    }

    #[test]
    fn a_round_longer_than_the_threshold_is_one_stall_named_after_its_operator() {
        let mut t = StallTracker::new(2, 20 * MS);
        let slow = Marker::operator(3, Some(1));
        // Core 0 starts a round at 100 ms and is in op3 until 160 ms; core 1 is fine.
        for now in (100..=160).step_by(5) {
            let marker = if now < 110 { Marker::LOOP } else { slow };
            t.sample(0, s(100 * MS, marker, ThreadState::Sleeping), now * MS);
            t.sample(
                1,
                s(now * MS - MS, Marker::LOOP, ThreadState::Running),
                now * MS,
            );
        }
        t.sample(0, s(161 * MS, Marker::LOOP, ThreadState::Running), 165 * MS);
        let stalls = t.finish(name, &[4, 5], 0);
        assert_eq!(stalls.len(), 1, "{stalls:?}");
        let st = &stalls[0];
        assert_eq!((st.core, st.cpu), (0, 4));
        assert_eq!(st.operator.as_deref(), Some("op3"));
        assert_eq!(st.partition, Some(1));
        assert_eq!(st.thread, ThreadState::Sleeping);
        // First late sample at 125 ms, last at 160 ms: the round lasted at least 60 ms.
        assert!((st.duration_ms - 60.0).abs() < 1e-9);
        assert!((st.at_ms - 100.0).abs() < 1e-9);
        assert!(st.describe().contains("a blocking call in an operator?"));
    }

    #[test]
    fn parked_and_short_rounds_are_not_stalls() {
        let mut t = StallTracker::new(1, 20 * MS);
        for now in (0..500).step_by(5) {
            t.sample(0, s(PARKED, Marker::LOOP, ThreadState::Sleeping), now * MS);
        }
        for now in (500..600).step_by(5) {
            t.sample(
                0,
                s(now * MS - 19 * MS, Marker::LOOP, ThreadState::Running),
                now * MS,
            );
        }
        t.sample(0, s(0, Marker::LOOP, ThreadState::Unknown), 700 * MS);
        assert!(t.finish(name, &[0], 0).is_empty());
    }

    #[test]
    fn back_to_back_late_rounds_are_separate_stalls_and_open_ones_close_at_the_end() {
        let mut t = StallTracker::new(1, 10 * MS);
        t.sample(0, s(0, Marker::LOOP, ThreadState::Running), 5 * MS);
        t.sample(
            0,
            s(MS, Marker::operator(0, None), ThreadState::Running),
            30 * MS,
        );
        t.sample(
            0,
            s(31 * MS, Marker::operator(2, Some(0)), ThreadState::Running),
            50 * MS,
        );
        assert_eq!(t.closed_count(0), 1);
        let stalls = t.finish(name, &[0], 0);
        assert_eq!(stalls.len(), 2);
        assert_eq!(stalls[0].operator.as_deref(), Some("op0"));
        assert_eq!(stalls[0].partition, None);
        assert_eq!(stalls[1].operator.as_deref(), Some("op2"));
        assert!(stalls[0].duration_ms > 28.0 && stalls[1].duration_ms > 18.0);
    }

    #[test]
    fn a_stall_outside_operators_says_so() {
        let mut t = StallTracker::new(1, 10 * MS);
        t.sample(0, s(MS, Marker::LOOP, ThreadState::Running), 40 * MS);
        let st = &t.finish(name, &[0], 0)[0];
        assert_eq!(st.operator, None);
        assert!(st.describe().contains("outside any operator"));
        assert!(!st.describe().contains("blocking call in an operator"));
    }
}
