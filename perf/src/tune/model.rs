//! The advisor's decisions as pure functions: measured figures and targets in, the value
//! to write and the figures it predicts out. No IO and no runs here (that is
//! [`super::advisor`]); the seed's two models themselves (C/T, N/t and their inverses)
//! live in `rill_bench::models` and are only applied here.
//!
//! The rules (also in `perf/TUNING.md`):
//!
//! - **Async capacity** per partition: N = ⌈λₚ·t·headroom⌉, λₚ the partition's arrival
//!   rate (its core's share of the load over the async partitions on that core), t the
//!   mean IO time from the engine's counters. Set either way (up or down), unless the
//!   current value is within 10% of it (the dead band: t moves that much between runs).
//! - **Checkpoint interval**: the overhead target o gives T ≥ C/o; the recovery target R
//!   gives T ≤ R − C − restart delay (after a failure the job restarts after its delay,
//!   and re-processes up to T + C of input since the last complete checkpoint). Chosen:
//!   the geometric mean of the two bounds, √(C/o · (R − C − delay)), which leaves both
//!   targets the same factor of margin, but at least headroom·C/o, at most the recovery
//!   bound, rounded to 10 ms; when the bounds cross, the overhead bound wins and the
//!   conflict is reported. A current interval that already meets both targets (the
//!   overhead one with the headroom: T ≥ headroom·C/o) is kept (see `plan`).
//! - **Flush deadline** (only with a p99 target L): min(L/10, the time a ring's batch
//!   takes to fill, `batch_max`/λ_ring) — a hop may cost a tenth of the budget, and a
//!   deadline longer than the fill time is never reached. Never raised when the run's
//!   p99 is already over L (see `plan`).
//! - **Ring capacity** (slots; one slot carries one batch): enough for the records that
//!   arrive while the receiving core is behind for the run's p99.9 latency S (above the
//!   IO floor for async jobs): ⌈λ_ring·S / b⌉ with b = clamp(λ_ring·deadline, 1,
//!   `batch_max`) records per batch, rounded up to a power of two, at least 64. Only
//!   raised: a bigger ring costs memory only, a smaller one risks backpressure. Only
//!   from a run that kept up (behind a backlog, latency measures the backlog), and only
//!   when the run had backpressure that was not the async operator's (see `plan`): a
//!   long p99.9 with rings that never filled is the machine's stall, not the rings'.

use rill_bench::models::{async_capacity_for, checkpoint_interval_for, checkpoint_overhead_model};
use rill_engine::config::{RestartConfig, RestartKind};
use serde::Serialize;

/// The most in flight per partition a core file may set (the engine's bound).
pub const MAX_CAPACITY: usize = rill_engine::config::MAX_ASYNC_CAPACITY;
/// The smallest ring the advisor recommends.
pub const RING_FLOOR: usize = 64;
/// The largest ring the engine accepts.
pub const RING_MAX: usize = 1 << 20;
/// Checkpoint intervals are rounded to this, ms.
pub const INTERVAL_STEP_MS: u64 = 10;

/// An async capacity within this fraction of what the model asks for is kept: t moves by
/// a few percent from run to run, and rewriting for that would never settle.
pub const DEAD_BAND: f64 = 0.10;

/// Whether `current` is close enough to `wanted` to keep (within [`DEAD_BAND`]).
pub fn close_enough(current: f64, wanted: f64) -> bool {
    wanted > 0.0 && ((current - wanted) / wanted).abs() <= DEAD_BAND
}

/// What the user asks for.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Targets {
    /// The largest fraction of time checkpointing may take (C/T).
    pub max_overhead: f64,
    /// The longest time from a failure until the job is back where it was, s.
    pub recovery_s: f64,
    /// Capacity above the mean need (N = λ·t·headroom); also the margin of T over C/o.
    pub headroom: f64,
    /// The p99 latency the flush deadline is sized for, µs (none: the deadline is kept).
    pub p99_us: Option<f64>,
}

impl Default for Targets {
    fn default() -> Self {
        Self {
            max_overhead: 0.05,
            recovery_s: 10.0,
            headroom: 1.5,
            p99_us: None,
        }
    }
}

/// Async capacity per partition for a core whose async partitions together receive
/// `core_rate_eps`, split evenly over `partitions` of them; `None` without a rate or an
/// IO time.
pub fn capacity_per_partition(
    core_rate_eps: f64,
    partitions: u32,
    io_time_ms: f64,
    headroom: f64,
) -> Option<usize> {
    if partitions == 0 {
        return None;
    }
    async_capacity_for(core_rate_eps / f64::from(partitions), io_time_ms, headroom)
        .map(|n| n.min(MAX_CAPACITY))
}

/// The N/t bound of a job whose cores run `(partitions, capacity)` each: Σ k·N / t,
/// events per second.
pub fn capacity_bound_eps(per_core: &[(u32, usize)], io_time_ms: f64) -> Option<f64> {
    (io_time_ms > 0.0).then(|| {
        per_core
            .iter()
            .map(|&(k, n)| f64::from(k) * n as f64 * 1e3 / io_time_ms)
            .sum()
    })
}

/// How long after a failure a restart begins under `restart` (absent: Flink's default
/// with checkpoints, exponential delay), ms. `none` never restarts by itself: 0, and the
/// caller says so.
pub fn restart_delay_ms(restart: Option<&RestartConfig>) -> f64 {
    let r = restart.cloned().unwrap_or_default();
    match r.strategy {
        RestartKind::None => 0.0,
        RestartKind::FixedDelay => r.delay_ms as f64,
        RestartKind::ExponentialDelay => r.initial_backoff_ms as f64,
    }
}

/// Model of the time from a failure until the job is back where it was, s: the restart
/// delay, then up to T + C of input re-processed (what arrived since the last complete
/// checkpoint), taken to re-process no slower than it arrived.
pub fn recovery_s(interval_ms: f64, duration_ms: f64, restart_delay_ms: f64) -> f64 {
    (interval_ms + duration_ms + restart_delay_ms) / 1e3
}

/// The chosen checkpoint interval and what it predicts.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct IntervalDecision {
    /// The interval to write, ms.
    pub interval_ms: u64,
    /// The overhead target's lower bound C/o, ms.
    pub min_ms: f64,
    /// The recovery target's upper bound R − C − restart delay, ms.
    pub max_ms: f64,
    /// C/T at the chosen interval.
    pub overhead: f64,
    /// Recovery time at the chosen interval, s.
    pub recovery_s: f64,
    /// The two targets cannot both be met (C is too long for them).
    pub conflict: bool,
}

/// Chooses the checkpoint interval for checkpoints of duration `duration_ms`.
pub fn checkpoint_interval(
    duration_ms: f64,
    restart_delay_ms: f64,
    t: &Targets,
) -> Option<IntervalDecision> {
    let min_ms = checkpoint_interval_for(duration_ms, t.max_overhead)?;
    let max_ms = t.recovery_s * 1e3 - duration_ms - restart_delay_ms;
    let step = INTERVAL_STEP_MS as f64;
    let conflict = max_ms < min_ms;
    let ms = if conflict {
        (min_ms / step).ceil() * step
    } else {
        // The same factor of margin to both targets (C grows when checkpoints come
        // closer together, and recovery has its own spread), and at least the headroom.
        let geometric = (min_ms * max_ms.max(0.0)).sqrt();
        let want = geometric.max(min_ms * t.headroom).clamp(min_ms, max_ms);
        let up = (want / step).ceil() * step;
        if up <= max_ms {
            up
        } else {
            // Rounding up would cross the recovery bound; down must not cross the other.
            ((want / step).floor() * step).max(min_ms.ceil())
        }
    };
    let interval_ms = (ms as u64).max(1);
    Some(IntervalDecision {
        interval_ms,
        min_ms,
        max_ms,
        overhead: checkpoint_overhead_model(duration_ms, interval_ms as f64)?,
        recovery_s: recovery_s(interval_ms as f64, duration_ms, restart_delay_ms),
        conflict,
    })
}

/// Measured checkpoint overhead: the mean duration over the mean time between the
/// triggers of consecutive periodic checkpoints (`configured_ms` when there are fewer
/// than two). `periodic` is `(trigger time ms, duration ms)` in trigger order.
pub fn measured_overhead(periodic: &[(f64, f64)], configured_ms: f64) -> Option<f64> {
    if periodic.is_empty() {
        return None;
    }
    let mean_c = periodic.iter().map(|p| p.1).sum::<f64>() / periodic.len() as f64;
    let gap = if periodic.len() >= 2 {
        (periodic[periodic.len() - 1].0 - periodic[0].0) / (periodic.len() - 1) as f64
    } else {
        configured_ms
    };
    checkpoint_overhead_model(mean_c, gap)
}

/// State growth, bytes per second, from `(time ms, full size bytes)` of the complete
/// checkpoints in time order: from the middle one to the last, so that the state filling
/// up at the start of a run (every key seen for the first time) does not count as
/// growth. `None` with fewer than two or no time between them.
pub fn state_growth_bps(points: &[(f64, u64)]) -> Option<f64> {
    if points.len() < 2 {
        return None;
    }
    let first = points[(points.len() - 1) / 2];
    let last = points[points.len() - 1];
    let dt = (last.0 - first.0) / 1e3;
    (dt > 0.0).then(|| (last.1 as f64 - first.1 as f64) / dt)
}

/// How long until full checkpoints of state growing `growth_bps` from `bytes` take
/// longer than `max_overhead` of `interval_ms`, s, taking C to grow in proportion to
/// the state (a pessimistic bound: part of C, the fsync and the barrier, does not grow).
/// `None` when the state does not grow; 0 when the target is already missed.
pub fn seconds_until_overhead(
    duration_ms: f64,
    bytes: u64,
    growth_bps: f64,
    interval_ms: f64,
    max_overhead: f64,
) -> Option<f64> {
    if growth_bps <= 0.0 || bytes == 0 || duration_ms <= 0.0 {
        return None;
    }
    let allowed = max_overhead * interval_ms / duration_ms; // C may grow by this factor
    Some(((allowed - 1.0) * bytes as f64 / growth_bps).max(0.0))
}

/// The flush deadline for a p99 target, µs: a tenth of the target, and no longer than a
/// batch of `batch_max` takes to fill at `ring_rate_eps`.
pub fn flush_deadline_us(p99_target_us: f64, ring_rate_eps: f64, batch_max: usize) -> u64 {
    let tenth = p99_target_us / 10.0;
    let fill = if ring_rate_eps > 0.0 {
        batch_max as f64 / ring_rate_eps * 1e6
    } else {
        f64::INFINITY
    };
    (tenth.min(fill).floor() as u64).clamp(1, 1_000_000)
}

/// The ring decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingDecision {
    /// What the rule needs, slots.
    pub needed: usize,
    /// What to write: the current capacity or, if smaller, the need.
    pub chosen: usize,
}

/// Ring slots for a ring receiving `ring_rate_eps` while its core falls up to
/// `behind_us` behind, with batches sealed at `deadline_us` or `batch_max`.
pub fn ring_capacity(
    ring_rate_eps: f64,
    behind_us: f64,
    deadline_us: u64,
    batch_max: usize,
    current: usize,
) -> RingDecision {
    let per_batch = (ring_rate_eps * deadline_us as f64 / 1e6).clamp(1.0, batch_max.max(1) as f64);
    let records = (ring_rate_eps * behind_us.max(0.0) / 1e6).ceil();
    let slots = (records / per_batch).ceil().min(RING_MAX as f64) as usize;
    let needed = slots.next_power_of_two().clamp(RING_FLOOR, RING_MAX);
    RingDecision {
        needed,
        chosen: current.max(needed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_is_little_s_law_per_partition_with_headroom() {
        // A core receiving 5000/s on one partition at 2 ms: 10 in flight, 15 with 1.5.
        assert_eq!(capacity_per_partition(5_000.0, 1, 2.0, 1.5), Some(15));
        // Two partitions on the core share its rate.
        assert_eq!(capacity_per_partition(5_000.0, 2, 2.0, 1.5), Some(8));
        assert_eq!(capacity_per_partition(5_000.0, 0, 2.0, 1.5), None);
        assert_eq!(capacity_per_partition(5_000.0, 1, 0.0, 1.5), None);
        // Capped at what a core file may hold.
        assert_eq!(
            capacity_per_partition(1e12, 1, 1e3, 1.0),
            Some(MAX_CAPACITY)
        );
        // The chosen capacity's N/t bound covers the rate by the headroom.
        let n = capacity_per_partition(5_000.0, 1, 2.0, 1.5).unwrap();
        let bound = capacity_bound_eps(&[(1, n)], 2.0).unwrap();
        assert!(bound >= 5_000.0 * 1.5, "{bound}");
        assert_eq!(capacity_bound_eps(&[(1, 4), (2, 3)], 2.0), Some(5_000.0));
        assert_eq!(capacity_bound_eps(&[(1, 4)], 0.0), None);
    }

    #[test]
    fn settings_within_the_dead_band_are_kept() {
        assert!(close_enough(41.0, 43.0));
        assert!(close_enough(660.0, 610.0));
        assert!(!close_enough(33.0, 41.0));
        assert!(!close_enough(10.0, 34.0));
        assert!(!close_enough(100.0, 610.0));
        assert!(!close_enough(1.0, 0.0));
    }

    #[test]
    fn restart_delay_follows_the_strategy() {
        assert_eq!(restart_delay_ms(None), 1_000.0);
        let fixed = RestartConfig {
            strategy: RestartKind::FixedDelay,
            delay_ms: 250,
            ..RestartConfig::default()
        };
        assert_eq!(restart_delay_ms(Some(&fixed)), 250.0);
        let none = RestartConfig {
            strategy: RestartKind::None,
            ..RestartConfig::default()
        };
        assert_eq!(restart_delay_ms(Some(&none)), 0.0);
        assert_eq!(recovery_s(2_000.0, 100.0, 1_000.0), 3.1);
    }

    #[test]
    fn the_interval_leaves_both_targets_the_same_margin() {
        // 5%, 10 s, 1.5.
        let t = Targets::default();
        // C = 20 ms: T ≥ 400 ms; recovery bound 10000 − 20 − 1000 = 8980 ms;
        // √(400 · 8980) = 1895.3: 1900 (both targets met by a factor of about 4.7).
        let d = checkpoint_interval(20.0, 1_000.0, &t).unwrap();
        assert_eq!(d.interval_ms, 1_900);
        assert_eq!(d.min_ms, 400.0);
        assert_eq!(d.max_ms, 8_980.0);
        assert!(!d.conflict);
        assert!((d.overhead - 20.0 / 1_900.0).abs() < 1e-12);
        assert!(d.overhead * 4.5 <= t.max_overhead);
        assert!((d.recovery_s - 2.92).abs() < 1e-12);
        assert!(d.recovery_s * 3.0 <= t.recovery_s);
        // Rounded up to 10 ms: √(420 · 9979) = 2047.2, √(402 · 9979.9) = 2003.0.
        assert_eq!(
            checkpoint_interval(21.0, 0.0, &t).unwrap().interval_ms,
            2_050
        );
        assert_eq!(
            checkpoint_interval(20.1, 0.0, &t).unwrap().interval_ms,
            2_010
        );
        let tight = Targets {
            recovery_s: 4.0,
            ..t
        };
        // C = 60 ms: min 1200, max 2940; √ = 1878.3 is above 1.5 · 1200 = 1800.
        let d = checkpoint_interval(60.0, 1_000.0, &tight).unwrap();
        assert_eq!(d.interval_ms, 1_880);
        // With a 1.5 s restart: max 2440, √ = 1711.1, below the headroom's floor 1800.
        let d = checkpoint_interval(60.0, 1_500.0, &tight).unwrap();
        assert_eq!(d.interval_ms, 1_800);
    }

    #[test]
    fn the_recovery_bound_caps_the_headroom_and_a_conflict_keeps_the_overhead() {
        let t = Targets {
            recovery_s: 2.0,
            ..Targets::default()
        };
        // C = 60 ms: T ≥ 1200, headroom wants 1800, recovery allows 2000 − 60 − 1000 = 940.
        let d = checkpoint_interval(60.0, 1_000.0, &t).unwrap();
        assert!(d.conflict);
        assert_eq!(d.interval_ms, 1_200);
        assert!((d.overhead - 0.05).abs() < 1e-12);
        // C = 30 ms: T ≥ 600, headroom wants 900, recovery allows 970: 900.
        let d = checkpoint_interval(30.0, 1_000.0, &t).unwrap();
        assert!(!d.conflict);
        assert_eq!(d.interval_ms, 900);
        // C = 40 ms: T ≥ 800, headroom wants 1200, recovery allows 960: 960, not 970.
        let d = checkpoint_interval(40.0, 1_000.0, &t).unwrap();
        assert_eq!(d.interval_ms, 960);
        assert!(d.recovery_s <= t.recovery_s);
        // An allowed bound that is not a multiple of 10 is not crossed by rounding.
        let d = checkpoint_interval(40.0, 995.0, &t).unwrap();
        assert_eq!(d.interval_ms, 960);
        assert!(d.recovery_s <= t.recovery_s);
        assert!(checkpoint_interval(
            40.0,
            0.0,
            &Targets {
                max_overhead: 0.0,
                ..t
            }
        )
        .is_none());
    }

    #[test]
    fn measured_overhead_is_mean_duration_over_mean_trigger_gap() {
        assert_eq!(measured_overhead(&[], 1_000.0), None);
        // One checkpoint: its duration over the configured interval.
        assert_eq!(measured_overhead(&[(0.0, 50.0)], 1_000.0), Some(0.05));
        // Triggers 500 ms apart (the configured 1000 ignored), mean C 25 ms.
        let m = measured_overhead(&[(0.0, 20.0), (500.0, 30.0), (1_000.0, 25.0)], 1_000.0);
        assert_eq!(m, Some(0.05));
    }

    #[test]
    fn state_growth_and_its_horizon() {
        assert_eq!(state_growth_bps(&[]), None);
        assert_eq!(state_growth_bps(&[(0.0, 10)]), None);
        // From the middle point on: 1200 B at 0.5 s to 3000 B at 2.5 s.
        assert_eq!(
            state_growth_bps(&[(0.0, 1_000), (500.0, 1_200), (2_500.0, 3_000)]),
            Some(900.0)
        );
        assert_eq!(
            state_growth_bps(&[(0.0, 1_000), (500.0, 2_000)]),
            Some(2_000.0)
        );
        // A state that filled up early and then stayed: no growth.
        let full = [
            (0.0, 10),
            (100.0, 500),
            (200.0, 500),
            (300.0, 500),
            (400.0, 500),
        ];
        assert_eq!(state_growth_bps(&full), Some(0.0));
        // C = 10 ms for 1 MB at T = 1 s and 5%: C may reach 50 ms, i.e. 5 MB; +1 MB/s.
        let h = seconds_until_overhead(10.0, 1_000_000, 1e6, 1_000.0, 0.05).unwrap();
        assert!((h - 4.0).abs() < 1e-9, "{h}");
        assert_eq!(
            seconds_until_overhead(10.0, 1_000_000, 0.0, 1_000.0, 0.05),
            None
        );
        assert_eq!(
            seconds_until_overhead(100.0, 1_000_000, 1e6, 1_000.0, 0.05),
            Some(0.0)
        );
    }

    #[test]
    fn flush_deadline_is_a_tenth_of_the_target_or_the_fill_time() {
        // 25k/s on a ring: a 256-record batch fills in 10.24 ms; 1 ms target: 100 µs.
        assert_eq!(flush_deadline_us(1_000.0, 25_000.0, 256), 100);
        // 10 ms target but 1M/s: the batch fills in 256 µs.
        assert_eq!(flush_deadline_us(10_000.0, 1e6, 256), 256);
        assert_eq!(flush_deadline_us(5.0, 0.0, 256), 1);
        assert_eq!(flush_deadline_us(1e12, 0.0, 256), 1_000_000);
    }

    #[test]
    fn ring_capacity_holds_what_arrives_while_the_core_is_behind() {
        // 25k/s, 5 ms behind, 20 µs deadline (0.5 records: 1 per batch): 125 -> 128.
        let r = ring_capacity(25_000.0, 5_000.0, 20, 256, 1024);
        assert_eq!(
            r,
            RingDecision {
                needed: 128,
                chosen: 1024
            }
        );
        // 200k/s, 40 ms behind, 20 µs (4 per batch): 8000 records, 2000 batches -> 2048.
        let r = ring_capacity(200_000.0, 40_000.0, 20, 256, 1024);
        assert_eq!(
            r,
            RingDecision {
                needed: 2048,
                chosen: 2048
            }
        );
        // Batches never exceed batch_max: 1M/s for 1 s at 1 ms deadline, 16 per batch.
        assert_eq!(ring_capacity(1e6, 1e6, 1_000, 16, 2).needed, 65_536);
        // The floor, and the engine's bound.
        assert_eq!(ring_capacity(10.0, 10.0, 20, 256, 2).chosen, RING_FLOOR);
        assert_eq!(ring_capacity(1e9, 1e9, 0, 1, 2).needed, RING_MAX);
    }
}
