//! The stall detector's decisions, free of threads and clocks: fed what the monitor
//! samples from each core's probe (the start of the loop round the core is in, the
//! operator it is in, the state of its thread and its scheduler counters), it opens a
//! stall when a round has lasted longer than the threshold, closes it when the core
//! comes back to its loop, and says why it happened ([`classify`]): the CPU was taken
//! (the thread was runnable and waited for a CPU), a blocking call (the thread slept in
//! a system call), disk wait, or a long computation.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use super::probe::{Marker, PARKED};
use super::sched::SchedCounters;

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

/// Why a stall happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StallCause {
    /// The CPU was taken: the thread was runnable but waited for a CPU (run-queue
    /// delay), or was switched out involuntarily while it ran. Other processes or
    /// threads on the core's CPU; nothing in the job is at fault.
    Contention,
    /// The thread slept in a system call (voluntary switches, not runnable): a blocking
    /// call (sleep, lock, socket, file).
    Blocking,
    /// The thread was in uninterruptible disk wait: blocking file IO.
    DiskWait,
    /// The thread ran on its CPU the whole time: a long computation.
    Computation,
    /// Not enough was seen to tell.
    Unknown,
}

impl StallCause {
    /// What it means for the user.
    pub fn explain(self) -> &'static str {
        match self {
            Self::Contention => "the CPU was taken by other threads or processes (CPU contention)",
            Self::Blocking => "asleep in a system call: a blocking call",
            Self::DiskWait => "waiting for the disk: blocking file IO",
            Self::Computation => "running on its CPU: a long computation",
            Self::Unknown => "cause unknown",
        }
    }

    /// Whether the job's own code is at fault (a call or a computation on the core),
    /// as opposed to the machine (contention) or nothing known.
    pub fn is_in_the_job(self) -> bool {
        matches!(self, Self::Blocking | Self::DiskWait | Self::Computation)
    }
}

/// A run-queue delay of at least this share of the observed part of a stall makes it
/// contention.
pub const CONTENDED_SHARE: f64 = 0.3;
/// Time on the CPU of at least this share of the observed part makes it a computation.
pub const RUNNING_SHARE: f64 = 0.5;

/// Why a stall happened, from the thread states sampled during it (`states`: how many
/// samples saw each) and, when the kernel has them, its scheduler counters over
/// `observed_ns` of it (`sched`: from the first late sample to the last sample).
///
/// "Blocking" needs evidence that the thread slept: voluntary switches with the thread
/// found asleep, or (without counters) found asleep. A runnable thread that waited for
/// a CPU is contention however long it waited, in an operator or not.
pub fn classify(
    states: &BTreeMap<ThreadState, u32>,
    sched: Option<SchedCounters>,
    observed_ns: u64,
) -> StallCause {
    let count = |s: ThreadState| states.get(&s).copied().unwrap_or(0);
    let (running, sleeping, disk) = (
        count(ThreadState::Running),
        count(ThreadState::Sleeping),
        count(ThreadState::DiskWait),
    );
    let asleep_most = sleeping + disk > running;
    if let Some(d) = sched.filter(|_| observed_ns > 0) {
        let span = observed_ns as f64;
        if d.run_delay_ns as f64 >= CONTENDED_SHARE * span {
            return StallCause::Contention;
        }
        if asleep_most && d.voluntary > 0 {
            return if disk > sleeping {
                StallCause::DiskWait
            } else {
                StallCause::Blocking
            };
        }
        if d.runtime_ns as f64 >= RUNNING_SHARE * span {
            return StallCause::Computation;
        }
        if d.involuntary > 0 && !asleep_most {
            return StallCause::Contention;
        }
    }
    // Without counters (or nothing moved in them): the sampled states alone.
    if disk > 0 && disk >= sleeping && asleep_most {
        StallCause::DiskWait
    } else if asleep_most {
        StallCause::Blocking
    } else if running > 0 && sched.is_some() && observed_ns > 0 {
        // Runnable, barely ran and barely waited: sampled between two switches.
        StallCause::Contention
    } else {
        StallCause::Unknown
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
    /// Why it happened (see [`classify`]).
    #[serde(default = "unknown_cause")]
    pub cause: StallCause,
    /// Time the thread waited for a CPU during the observed part of the stall, ms
    /// (`None`: no scheduler counters).
    #[serde(default)]
    pub run_delay_ms: Option<f64>,
    /// Involuntary context switches during the observed part.
    #[serde(default)]
    pub involuntary: Option<u64>,
    /// Voluntary context switches during the observed part.
    #[serde(default)]
    pub voluntary: Option<u64>,
}

fn unknown_cause() -> StallCause {
    StallCause::Unknown
}

impl Stall {
    /// One line for a report.
    pub fn describe(&self) -> String {
        let place = match (&self.operator, self.partition) {
            (Some(op), Some(p)) => format!("in operator `{op}` partition {p}"),
            (Some(op), None) => format!("in `{op}`"),
            (None, _) => "in the shard loop, outside any operator".to_string(),
        };
        let waited = match (self.run_delay_ms, self.involuntary) {
            (Some(d), Some(n)) => {
                format!(" (waited {d:.1} ms for a CPU, {n} involuntary switches)")
            }
            _ => String::new(),
        };
        let hint = match (self.cause, self.operator.is_some()) {
            (StallCause::Blocking | StallCause::DiskWait, true) => {
                " — a blocking call in an operator"
            }
            (StallCause::Computation, true) => " — a long computation in an operator",
            _ => "",
        };
        format!(
            "core {} (CPU {}) stayed {place} for {:.1} ms at {:.1} s without returning to \
             its loop: {}{waited}{hint}",
            self.core,
            self.cpu,
            self.duration_ms,
            self.at_ms / 1e3,
            self.cause.explain(),
        )
    }
}

/// The stalls of a run in a few lines: one per cause, with how many, on which cores,
/// the longest, the time in all and (contention) the time spent waiting for a CPU; the
/// job's own stalls also by operator. Empty for no stalls.
pub fn summarize(stalls: &[Stall]) -> Vec<String> {
    let mut by_cause: BTreeMap<StallCause, Vec<&Stall>> = BTreeMap::new();
    for s in stalls {
        by_cause.entry(s.cause).or_default().push(s);
    }
    by_cause
        .into_iter()
        .map(|(cause, list)| {
            let cores: std::collections::BTreeSet<usize> = list.iter().map(|s| s.cpu).collect();
            let cores = cores
                .iter()
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
                .join(", ");
            let longest = list.iter().map(|s| s.duration_ms).fold(0.0, f64::max);
            let total: f64 = list.iter().map(|s| s.duration_ms).sum();
            let mut line = format!(
                "{} stall{} on CPU {cores}, longest {longest:.1} ms, {total:.0} ms in all: {}",
                list.len(),
                if list.len() == 1 { "" } else { "s" },
                cause.explain()
            );
            if cause == StallCause::Contention {
                let waited: f64 = list.iter().filter_map(|s| s.run_delay_ms).sum();
                line += &format!(" (waited {waited:.0} ms for a CPU)");
            } else {
                let mut ops: BTreeMap<&str, usize> = BTreeMap::new();
                for s in &list {
                    *ops.entry(s.operator.as_deref().unwrap_or("(the loop)"))
                        .or_default() += 1;
                }
                let ops: Vec<String> = ops.iter().map(|(o, n)| format!("`{o}` {n}")).collect();
                line += &format!(" (by operator: {})", ops.join(", "));
            }
            line
        })
        .collect()
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
    /// Its thread's scheduler counters (read with the state, when the caller has them).
    pub sched: Option<SchedCounters>,
}

#[derive(Debug)]
struct Open {
    since_ns: u64,
    last_ns: u64,
    markers: BTreeMap<Marker, u32>,
    states: BTreeMap<ThreadState, u32>,
    /// Scheduler counters at the first and the latest sample that had them, with when.
    first: Option<(u64, SchedCounters)>,
    latest: Option<(u64, SchedCounters)>,
}

impl Open {
    fn note(&mut self, now_ns: u64, sched: Option<SchedCounters>) {
        if let Some(c) = sched {
            self.first.get_or_insert((now_ns, c));
            self.latest = Some((now_ns, c));
        }
    }
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

    /// Whether core `core` needs its thread's state and counters read for a sample with
    /// this round start: its round is late, or a stall is open (the sample that closes
    /// it ends the counters' span).
    pub fn wants_thread(&self, core: usize, round_start_ns: u64, now_ns: u64) -> bool {
        self.is_late(round_start_ns, now_ns) || self.open[core].is_some()
    }

    /// Takes one sample of core `core` at `now_ns`.
    pub fn sample(&mut self, core: usize, s: Sample, now_ns: u64) {
        if !self.is_late(s.round_start_ns, now_ns) {
            if let Some(o) = &mut self.open[core] {
                o.note(now_ns, s.sched);
            }
            self.close(core);
            return;
        }
        if let Some(o) = self.open[core]
            .as_mut()
            .filter(|o| o.since_ns != s.round_start_ns)
        {
            // A new round, itself already late: the old one ended before this sample.
            o.note(now_ns, s.sched);
            self.close(core);
        }
        let o = self.open[core].get_or_insert_with(|| Open {
            since_ns: s.round_start_ns,
            last_ns: now_ns,
            markers: BTreeMap::new(),
            states: BTreeMap::new(),
            first: None,
            latest: None,
        });
        o.last_ns = now_ns;
        o.note(now_ns, s.sched);
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
    let (sched, observed_ns) = match (o.first, o.latest) {
        (Some((t0, c0)), Some((t1, c1))) if t1 > t0 => (Some(c1.since(&c0)), t1 - t0),
        _ => (None, 0),
    };
    Stall {
        core,
        cpu: cpus.get(core).copied().unwrap_or(core),
        operator,
        partition,
        duration_ms: o.last_ns.saturating_sub(o.since_ns) as f64 / 1e6,
        at_ms: o.since_ns.saturating_sub(start_ns) as f64 / 1e6,
        thread: most(&o.states).unwrap_or(ThreadState::Unknown),
        cause: classify(&o.states, sched, observed_ns),
        run_delay_ms: sched.map(|d| d.run_delay_ns as f64 / 1e6),
        involuntary: sched.map(|d| d.involuntary),
        voluntary: sched.map(|d| d.voluntary),
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
            sched: None,
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
        assert_eq!(st.cause, StallCause::Blocking);
        assert!(st.describe().contains("a blocking call in an operator"));
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

    fn states(list: &[(ThreadState, u32)]) -> BTreeMap<ThreadState, u32> {
        list.iter().copied().collect()
    }

    fn counters(runtime_ms: u64, delay_ms: u64, vol: u64, invol: u64) -> SchedCounters {
        SchedCounters {
            runtime_ns: runtime_ms * MS,
            run_delay_ns: delay_ms * MS,
            voluntary: vol,
            involuntary: invol,
        }
    }

    #[test]
    fn a_runnable_thread_that_waited_for_a_cpu_is_contention_not_blocking() {
        let running = states(&[(ThreadState::Running, 6)]);
        // 25 ms observed: 21 ms waiting for a CPU, 4 ms on it, switched out 9 times.
        let c = classify(&running, Some(counters(4, 21, 0, 9)), 25 * MS);
        assert_eq!(c, StallCause::Contention);
        assert!(!c.is_in_the_job());
        // Waiting a third of the time is enough, whatever the sampled state says.
        let mixed = states(&[(ThreadState::Running, 2), (ThreadState::Sleeping, 3)]);
        assert_eq!(
            classify(&mixed, Some(counters(1, 10, 1, 3)), 30 * MS),
            StallCause::Contention
        );
        // Barely ran, barely waited, but switched out involuntarily: still the CPU taken.
        assert_eq!(
            classify(&running, Some(counters(2, 3, 0, 2)), 25 * MS),
            StallCause::Contention
        );
    }

    #[test]
    fn a_thread_asleep_with_voluntary_switches_is_a_blocking_call() {
        let asleep = states(&[(ThreadState::Sleeping, 20)]);
        let c = classify(&asleep, Some(counters(0, 0, 1, 0)), 100 * MS);
        assert_eq!(c, StallCause::Blocking);
        assert!(c.is_in_the_job());
        // A blocking call on a busy CPU waits a little for the CPU after it wakes: still
        // the call.
        assert_eq!(
            classify(&asleep, Some(counters(1, 5, 1, 1)), 100 * MS),
            StallCause::Blocking
        );
        let disk = states(&[(ThreadState::DiskWait, 4), (ThreadState::Sleeping, 1)]);
        assert_eq!(
            classify(&disk, Some(counters(0, 0, 3, 0)), 40 * MS),
            StallCause::DiskWait
        );
    }

    #[test]
    fn a_thread_that_ran_the_whole_time_is_a_computation() {
        let running = states(&[(ThreadState::Running, 8)]);
        assert_eq!(
            classify(&running, Some(counters(39, 1, 0, 0)), 40 * MS),
            StallCause::Computation
        );
    }

    #[test]
    fn without_counters_only_a_sleeping_thread_is_called_blocking() {
        let asleep = states(&[(ThreadState::Sleeping, 3)]);
        assert_eq!(classify(&asleep, None, 0), StallCause::Blocking);
        let running = states(&[(ThreadState::Running, 3)]);
        assert_eq!(classify(&running, None, 0), StallCause::Unknown);
        // One sample only: counters over no time say nothing.
        assert_eq!(
            classify(&running, Some(counters(0, 0, 0, 0)), 0),
            StallCause::Unknown
        );
        let disk = states(&[(ThreadState::DiskWait, 2)]);
        assert_eq!(classify(&disk, None, 0), StallCause::DiskWait);
    }

    #[test]
    fn the_tracker_classifies_from_the_counters_of_the_first_and_last_samples() {
        let mut t = StallTracker::new(2, 20 * MS);
        let op = Marker::operator(1, Some(0));
        let sampled = |start, thread, c| Sample {
            round_start_ns: start,
            marker: op,
            thread,
            sched: Some(c),
        };
        // Core 0: runnable, waiting for the CPU between 125 and 150 ms.
        t.sample(
            0,
            sampled(100 * MS, ThreadState::Running, counters(10, 50, 3, 40)),
            125 * MS,
        );
        t.sample(
            0,
            sampled(100 * MS, ThreadState::Running, counters(12, 70, 3, 45)),
            140 * MS,
        );
        t.sample(
            0,
            sampled(150 * MS, ThreadState::Running, counters(14, 72, 3, 46)),
            150 * MS,
        );
        // Core 1: asleep in the operator between 125 and 200 ms.
        t.sample(
            1,
            sampled(100 * MS, ThreadState::Sleeping, counters(10, 1, 5, 0)),
            125 * MS,
        );
        t.sample(
            1,
            sampled(100 * MS, ThreadState::Sleeping, counters(10, 1, 5, 0)),
            190 * MS,
        );
        t.sample(
            1,
            sampled(201 * MS, ThreadState::Running, counters(11, 1, 6, 0)),
            201 * MS,
        );
        let stalls = t.finish(name, &[0, 1], 0);
        assert_eq!(stalls.len(), 2);
        let c0 = stalls.iter().find(|s| s.core == 0).unwrap();
        assert_eq!(c0.cause, StallCause::Contention);
        assert_eq!(c0.run_delay_ms, Some(22.0));
        assert_eq!(c0.involuntary, Some(6));
        assert!(
            c0.describe().contains("CPU contention"),
            "{}",
            c0.describe()
        );
        assert!(!c0.describe().contains("blocking"), "{}", c0.describe());
        let c1 = stalls.iter().find(|s| s.core == 1).unwrap();
        assert_eq!(c1.cause, StallCause::Blocking);
        assert!(c1.describe().contains("a blocking call in an operator"));
    }

    #[test]
    fn a_hundred_contention_stalls_summarise_to_one_line() {
        let stall = |core, cause, op: Option<&str>| Stall {
            core,
            cpu: core,
            operator: op.map(String::from),
            partition: Some(0),
            duration_ms: 25.0,
            at_ms: 0.0,
            thread: ThreadState::Running,
            cause,
            run_delay_ms: Some(20.0),
            involuntary: Some(3),
            voluntary: Some(0),
        };
        let mut all: Vec<Stall> = (0..100)
            .map(|i| stall(i % 2, StallCause::Contention, Some("count")))
            .collect();
        all.push(stall(1, StallCause::Blocking, Some("enrich")));
        let lines = summarize(&all);
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(
            lines[0].starts_with("100 stalls on CPU 0, 1"),
            "{}",
            lines[0]
        );
        assert!(lines[0].contains("CPU contention"), "{}", lines[0]);
        assert!(
            lines[0].contains("waited 2000 ms for a CPU"),
            "{}",
            lines[0]
        );
        assert!(lines[1].contains("1 stall on CPU 1"), "{}", lines[1]);
        assert!(lines[1].contains("`enrich` 1"), "{}", lines[1]);
        assert!(summarize(&[]).is_empty());
    }

    #[test]
    fn a_late_round_closed_by_another_late_round_keeps_its_counters() {
        let mut t = StallTracker::new(1, 10 * MS);
        let c = |delay_ms| Sample {
            round_start_ns: 0,
            marker: Marker::LOOP,
            thread: ThreadState::Running,
            sched: Some(counters(1, delay_ms, 0, 2)),
        };
        t.sample(
            0,
            Sample {
                round_start_ns: MS,
                ..c(0)
            },
            20 * MS,
        );
        t.sample(
            0,
            Sample {
                round_start_ns: 25 * MS,
                ..c(15)
            },
            40 * MS,
        );
        let st = &t.finish(name, &[0], 0)[0];
        assert_eq!(st.cause, StallCause::Contention, "{st:?}");
        assert_eq!(st.run_delay_ms, Some(15.0));
    }

    #[test]
    fn wants_the_thread_while_late_or_open() {
        let mut t = StallTracker::new(1, 20 * MS);
        assert!(!t.wants_thread(0, 100 * MS, 110 * MS));
        assert!(t.wants_thread(0, 100 * MS, 130 * MS));
        t.sample(0, s(100 * MS, Marker::LOOP, ThreadState::Running), 130 * MS);
        // The round ended; the next sample closes the stall and wants the counters.
        assert!(t.wants_thread(0, 131 * MS, 135 * MS));
        t.sample(0, s(131 * MS, Marker::LOOP, ThreadState::Running), 135 * MS);
        assert!(!t.wants_thread(0, 131 * MS, 140 * MS));
    }

    #[test]
    fn a_stall_outside_operators_says_so() {
        let mut t = StallTracker::new(1, 10 * MS);
        t.sample(0, s(MS, Marker::LOOP, ThreadState::Running), 40 * MS);
        let st = &t.finish(name, &[0], 0)[0];
        assert_eq!(st.operator, None);
        assert!(st.describe().contains("outside any operator"));
        assert!(!st.describe().contains("blocking call"));
    }
}
