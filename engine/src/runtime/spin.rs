//! How long an idle core spins before it parks: the decision, free of threads and
//! clocks (the shard loop feeds it times and its thread's run-queue delay).
//!
//! Spinning buys a few microseconds per wake-up on a CPU the core has to itself. On a
//! CPU it shares it costs far more than it buys: a thread that never sleeps is, to the
//! kernel's scheduler, a CPU hog. It gets its fair share in slices of milliseconds,
//! waits a slice for its turn whenever its neighbour runs, and has no sleeper's credit
//! to preempt the neighbour when work arrives. A core that parks instead uses only what
//! its work needs and is woken (and scheduled ahead of a CPU-bound neighbour) the
//! moment a ring, a timer or a source's due time needs it. So the core spins only
//! while both hold:
//!
//! - **the CPU is its own**: the thread's run-queue delay (time runnable but not
//!   running, `/proc/thread-self/schedstat`) over the last sample period is under
//!   [`CONTENDED_SHARE`] of it. Once it is over, the core does not spin for a hold
//!   period; a hold that ends only to find contention again doubles (up to
//!   [`HOLD_MAX_NS`]), so a core that stops spinning because a neighbour is there tries
//!   again rarely, and each try costs at most one of the neighbour's slices;
//! - **spinning pays**: at least half of the recent idle gaps (from the round that found
//!   no work to the round that found some) were shorter than the spin limit. At a low
//!   rate the core parks at once instead of burning the limit before every park.

/// How often the loop reads its thread's run-queue delay, ns.
pub(crate) const SAMPLE_NS: u64 = 10_000_000;
/// A sample period whose run-queue delay is at least this share of it is contended.
pub(crate) const CONTENDED_SHARE: f64 = 0.05;
/// The first hold without spinning after contention is seen, ns.
pub(crate) const HOLD_MIN_NS: u64 = 100_000_000;
/// The longest hold, ns.
pub(crate) const HOLD_MAX_NS: u64 = 10_000_000_000;
/// Idle gaps remembered to judge whether spinning pays.
const GAPS: u32 = 32;

/// The spin decision of one core.
#[derive(Debug)]
pub(crate) struct SpinGovernor {
    max_spin_ns: u64,
    adaptive: bool,
    next_sample_ns: u64,
    last: Option<(u64, u64)>,
    /// No spinning before this time (contention seen).
    hold_until_ns: u64,
    hold_ns: u64,
    /// Recent idle gaps: how many, and how many were shorter than the spin limit.
    gaps: u32,
    short_gaps: u32,
    /// Whether the last full set of gaps said spinning pays.
    pays: bool,
    /// Sample periods found contended.
    pub(crate) contended_periods: u64,
}

impl SpinGovernor {
    /// A core that spins at most `max_spin_ns`; `adaptive = false` spins the full limit
    /// every time (the behaviour before contention was taken into account).
    pub(crate) fn new(max_spin_ns: u64, adaptive: bool) -> Self {
        Self {
            max_spin_ns,
            adaptive,
            next_sample_ns: 0,
            last: None,
            hold_until_ns: 0,
            hold_ns: HOLD_MIN_NS,
            gaps: 0,
            short_gaps: 0,
            pays: true,
            contended_periods: 0,
        }
    }

    /// Whether the loop should read its run-queue delay now (every `SAMPLE_NS`).
    #[inline]
    pub(crate) fn wants_sample(&self, now_ns: u64) -> bool {
        self.adaptive && now_ns >= self.next_sample_ns
    }

    /// Feeds the thread's cumulative run-queue delay read at `now_ns`. Returns true when
    /// this sample started a hold (contention seen).
    pub(crate) fn sample(&mut self, now_ns: u64, run_delay_ns: u64) -> bool {
        self.next_sample_ns = now_ns + SAMPLE_NS;
        let Some((t0, d0)) = self.last.replace((now_ns, run_delay_ns)) else {
            return false;
        };
        let span = now_ns.saturating_sub(t0);
        if span == 0 {
            return false;
        }
        let delay = run_delay_ns.saturating_sub(d0);
        if (delay as f64) < CONTENDED_SHARE * span as f64 {
            return false;
        }
        self.contended_periods += 1;
        if now_ns < self.hold_until_ns {
            return false; // already holding
        }
        // Contention again soon after a hold ended: the neighbour is still there.
        let again = self.hold_until_ns > 0 && now_ns < self.hold_until_ns + 2 * self.hold_ns;
        self.hold_ns = if again {
            (self.hold_ns * 2).min(HOLD_MAX_NS)
        } else {
            HOLD_MIN_NS
        };
        self.hold_until_ns = now_ns + self.hold_ns;
        true
    }

    /// An idle gap of `gap_ns` ended with work.
    pub(crate) fn idle_ended(&mut self, gap_ns: u64) {
        if !self.adaptive {
            return;
        }
        self.gaps += 1;
        if gap_ns <= self.max_spin_ns {
            self.short_gaps += 1;
        }
        if self.gaps == GAPS {
            self.pays = 2 * self.short_gaps >= GAPS;
            self.gaps = 0;
            self.short_gaps = 0;
        }
    }

    /// Whether the core is holding off spinning because its CPU is contended.
    pub(crate) fn contended(&self, now_ns: u64) -> bool {
        self.adaptive && now_ns < self.hold_until_ns
    }

    /// How long to spin, from the first round without work, before parking.
    pub(crate) fn spin_ns(&self, now_ns: u64) -> u64 {
        if !self.adaptive {
            return self.max_spin_ns;
        }
        if self.contended(now_ns) || !self.pays {
            0
        } else {
            self.max_spin_ns
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn a_quiet_cpu_keeps_the_full_spin() {
        let mut g = SpinGovernor::new(200_000, true);
        let mut delay = 0;
        for i in 0..100 {
            delay += 100_000; // 1% of each 10 ms period: a short preemption now and then
            assert!(!g.sample(i * 10 * MS, delay));
            assert_eq!(g.spin_ns(i * 10 * MS), 200_000);
        }
        assert_eq!(g.contended_periods, 0);
    }

    #[test]
    fn run_queue_delay_stops_the_spin_for_a_hold_that_doubles_while_contention_lasts() {
        let mut g = SpinGovernor::new(200_000, true);
        g.sample(0, 0);
        // 5 ms of 10 ms waiting for the CPU: a neighbour takes half of it.
        assert!(g.sample(10 * MS, 5 * MS));
        assert_eq!(g.spin_ns(10 * MS), 0);
        assert!(g.contended(10 * MS + HOLD_MIN_NS - 1));
        assert_eq!(g.spin_ns(10 * MS + HOLD_MIN_NS), 200_000);
        // Contended again right after the hold: twice as long.
        let t = 10 * MS + HOLD_MIN_NS;
        g.sample(t, 5 * MS);
        assert!(g.sample(t + 10 * MS, 10 * MS));
        assert!(g.contended(t + 10 * MS + 2 * HOLD_MIN_NS - 1));
        assert!(!g.contended(t + 10 * MS + 2 * HOLD_MIN_NS));
        // Holds stop growing at the maximum.
        let mut now = t + 10 * MS + 2 * HOLD_MIN_NS;
        let mut delay = 10 * MS;
        for _ in 0..20 {
            g.sample(now, delay);
            delay += 5 * MS;
            g.sample(now + 10 * MS, delay);
            now += 10 * MS + g.hold_ns;
        }
        assert_eq!(g.hold_ns, HOLD_MAX_NS);
        // A long quiet spell after a hold resets it.
        g.sample(now + 100 * HOLD_MAX_NS, delay);
        delay += 5 * MS;
        assert!(g.sample(now + 100 * HOLD_MAX_NS + 10 * MS, delay));
        assert_eq!(g.hold_ns, HOLD_MIN_NS);
    }

    #[test]
    fn spinning_stops_when_gaps_are_longer_than_the_spin_and_resumes_when_short() {
        let mut g = SpinGovernor::new(200_000, true);
        for _ in 0..GAPS {
            g.idle_ended(1_000_000); // 1 ms between arrivals: spinning 200 us is waste
        }
        assert_eq!(g.spin_ns(0), 0);
        for _ in 0..GAPS {
            g.idle_ended(20_000);
        }
        assert_eq!(g.spin_ns(0), 200_000);
    }

    #[test]
    fn not_adaptive_always_spins_the_limit() {
        let mut g = SpinGovernor::new(200_000, false);
        assert!(!g.wants_sample(0));
        g.sample(0, 0);
        g.sample(10 * MS, 10 * MS);
        for _ in 0..GAPS {
            g.idle_ended(10 * MS);
        }
        assert_eq!(g.spin_ns(10 * MS), 200_000);
        assert!(!g.contended(10 * MS));
    }
}
