//! The seed's two cost models, as pure functions, and how a sweep's measurements are set
//! against them.
//!
//! - **C/T** (seed 4.1): with checkpoint interval T and checkpoint duration C,
//!   checkpointing takes the fraction C/T of the time. The *measured* overhead of a run
//!   with checkpoints is taken against the run with checkpoints off (the baseline), three
//!   ways: throughput lost `1 − X/X₀`; the p99.9 ratio `L/L₀`; and the extra CPU time per
//!   core per second of run, `(cpu − cpu₀) / (cores · duration)`, which is the direct
//!   analogue of C/T under open-loop load (where throughput stays at the offered rate as
//!   long as the engine keeps up, so the cost shows as CPU and latency, not throughput).
//! - **N/t** (seed 4.2, Little's law): with N requests in flight and mean IO time t, an
//!   async operator completes at most N/t requests per second; with P partitions each
//!   holding up to N, the job's bound is P·N/t.
//!
//! Both are also solved the other way, for the tuning advisor (`rill-perf tune`): the
//! capacity a rate needs ([`async_capacity_for`]) and the interval an overhead target
//! allows ([`checkpoint_interval_for`]).

/// Model C/T: the fraction of time spent checkpointing (capped at 1: a checkpoint that
/// takes longer than the interval makes them back to back).
pub fn checkpoint_overhead_model(duration_ms: f64, interval_ms: f64) -> Option<f64> {
    (interval_ms > 0.0 && duration_ms >= 0.0).then(|| (duration_ms / interval_ms).min(1.0))
}

/// One run's measured overhead against the checkpoints-off baseline.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MeasuredOverhead {
    /// `1 − X/X₀`: throughput lost (0 when the engine keeps up with an open-loop load).
    pub throughput: f64,
    /// `L/L₀`: p99.9 relative to the baseline's.
    pub p999_ratio: f64,
    /// `(cpu − cpu₀) / (cores · duration)`: extra CPU seconds per core-second.
    pub cpu_fraction: f64,
}

/// What a run measured, for the overhead computation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RunFigures {
    /// Throughput, events/s.
    pub throughput_eps: f64,
    /// p99.9, us.
    pub p999_us: f64,
    /// CPU seconds of the executors (or the process).
    pub cpu_s: f64,
    /// Executor cores.
    pub cores: usize,
    /// Length of the run, s.
    pub duration_s: f64,
}

/// The measured overhead of `run` against `baseline`.
pub fn measured_overhead(run: &RunFigures, baseline: &RunFigures) -> MeasuredOverhead {
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
    let core_s = run.cores as f64 * run.duration_s;
    MeasuredOverhead {
        throughput: 1.0 - ratio(run.throughput_eps, baseline.throughput_eps),
        p999_ratio: ratio(run.p999_us, baseline.p999_us),
        cpu_fraction: if core_s > 0.0 {
            (run.cpu_s - baseline.cpu_s) / core_s
        } else {
            f64::NAN
        },
    }
}

/// Model N/t: the most requests per second `partitions` async partitions of capacity
/// `capacity` can complete when one request takes `io_time_ms` on average.
pub fn async_throughput_model(capacity: f64, io_time_ms: f64, partitions: usize) -> Option<f64> {
    (io_time_ms > 0.0 && capacity >= 0.0).then(|| capacity * partitions as f64 * 1e3 / io_time_ms)
}

/// Model N/t solved for N: the capacity one async partition needs so that it keeps up
/// with `rate_eps` arrivals when a request takes `io_time_ms`, N = ⌈λ·t·headroom⌉ (at
/// least 1). λ·t is the mean number in flight (Little's law); the headroom absorbs
/// bursts and slower requests. `None` for a rate or IO time that is not positive and
/// finite, or a headroom below 1.
pub fn async_capacity_for(rate_eps: f64, io_time_ms: f64, headroom: f64) -> Option<usize> {
    let ok = |v: f64| v.is_finite() && v > 0.0;
    (ok(rate_eps) && ok(io_time_ms) && headroom.is_finite() && headroom >= 1.0).then(|| {
        let n = (rate_eps * io_time_ms / 1e3 * headroom).ceil();
        // A float product that is a whole number up to rounding noise is that number.
        let n = if (n - 1.0 - rate_eps * io_time_ms / 1e3 * headroom).abs() < 1e-9 {
            n - 1.0
        } else {
            n
        };
        (n as usize).max(1)
    })
}

/// Model C/T solved for T: the shortest checkpoint interval, ms, at which checkpoints
/// of duration `duration_ms` take at most the fraction `max_overhead` of the time,
/// T = C / overhead. `None` unless 0 < overhead ≤ 1 and C ≥ 0.
pub fn checkpoint_interval_for(duration_ms: f64, max_overhead: f64) -> Option<f64> {
    (duration_ms.is_finite()
        && duration_ms >= 0.0
        && max_overhead.is_finite()
        && max_overhead > 0.0
        && max_overhead <= 1.0)
        .then(|| duration_ms / max_overhead)
}

/// Mean IO time from the engine's counters, ms, if it reports them
/// (`async_io_time_us_total` / `async_completed`; 0 or absent: unknown).
pub fn io_time_from_counters(counters: &std::collections::BTreeMap<String, u64>) -> Option<f64> {
    let total = *counters.get("async_io_time_us_total")?;
    let n = *counters.get("async_completed")?;
    (n > 0).then(|| total as f64 / n as f64 / 1e3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn c_over_t() {
        assert_eq!(checkpoint_overhead_model(50.0, 1_000.0), Some(0.05));
        assert_eq!(checkpoint_overhead_model(10.0, 100.0), Some(0.1));
        // Halving the interval doubles the overhead.
        let a = checkpoint_overhead_model(20.0, 2_000.0).unwrap();
        let b = checkpoint_overhead_model(20.0, 1_000.0).unwrap();
        assert!((b - 2.0 * a).abs() < 1e-12);
        assert_eq!(checkpoint_overhead_model(3_000.0, 1_000.0), Some(1.0));
        assert_eq!(checkpoint_overhead_model(1.0, 0.0), None);
    }

    #[test]
    fn measured_overhead_against_the_baseline() {
        let base = RunFigures {
            throughput_eps: 100_000.0,
            p999_us: 200.0,
            cpu_s: 8.0,
            cores: 2,
            duration_s: 5.0,
        };
        let run = RunFigures {
            throughput_eps: 95_000.0,
            p999_us: 500.0,
            cpu_s: 9.0,
            ..base
        };
        let m = measured_overhead(&run, &base);
        assert!((m.throughput - 0.05).abs() < 1e-12);
        assert!((m.p999_ratio - 2.5).abs() < 1e-12);
        // One extra CPU second over 2 cores x 5 s = 10% of the time.
        assert!((m.cpu_fraction - 0.1).abs() < 1e-12);
        assert_eq!(measured_overhead(&base, &base).throughput, 0.0);
    }

    #[test]
    fn n_over_t() {
        // The seed's example: capacity 100, 100 ms IO: 1000 requests/s per partition.
        assert_eq!(async_throughput_model(100.0, 100.0, 1), Some(1_000.0));
        assert_eq!(async_throughput_model(100.0, 100.0, 2), Some(2_000.0));
        // Doubling N doubles the bound; doubling t halves it.
        assert_eq!(async_throughput_model(200.0, 100.0, 1), Some(2_000.0));
        assert_eq!(async_throughput_model(100.0, 200.0, 1), Some(500.0));
        assert_eq!(async_throughput_model(100.0, 0.0, 1), None);
    }

    #[test]
    fn n_for_a_rate_inverts_n_over_t() {
        // 5000 arrivals/s at 2 ms: 10 in flight on average; 15 with 50% headroom.
        assert_eq!(async_capacity_for(5_000.0, 2.0, 1.0), Some(10));
        assert_eq!(async_capacity_for(5_000.0, 2.0, 1.5), Some(15));
        // Rounded up, never below 1.
        assert_eq!(async_capacity_for(5_001.0, 2.0, 1.0), Some(11));
        assert_eq!(async_capacity_for(1.0, 0.001, 1.0), Some(1));
        // The seed's example: capacity 100 at 100 ms is 1000/s; 1000/s needs 100.
        assert_eq!(async_capacity_for(1_000.0, 100.0, 1.0), Some(100));
        let n = async_capacity_for(1_000.0, 100.0, 1.0).unwrap() as f64;
        assert_eq!(async_throughput_model(n, 100.0, 1), Some(1_000.0));
        assert_eq!(async_capacity_for(0.0, 2.0, 1.5), None);
        assert_eq!(async_capacity_for(5_000.0, 0.0, 1.5), None);
        assert_eq!(async_capacity_for(5_000.0, 2.0, 0.5), None);
        assert_eq!(async_capacity_for(f64::NAN, 2.0, 1.5), None);
    }

    #[test]
    fn t_for_an_overhead_inverts_c_over_t() {
        assert_eq!(checkpoint_interval_for(50.0, 0.05), Some(1_000.0));
        let t = checkpoint_interval_for(12.0, 0.02).unwrap();
        assert!((checkpoint_overhead_model(12.0, t).unwrap() - 0.02).abs() < 1e-12);
        assert_eq!(checkpoint_interval_for(0.0, 0.05), Some(0.0));
        assert_eq!(checkpoint_interval_for(50.0, 0.0), None);
        assert_eq!(checkpoint_interval_for(50.0, 1.5), None);
        assert_eq!(checkpoint_interval_for(-1.0, 0.05), None);
    }

    #[test]
    fn io_time_comes_from_counters_when_present() {
        let mut c = std::collections::BTreeMap::new();
        assert_eq!(io_time_from_counters(&c), None);
        c.insert("async_io_time_us_total".to_string(), 1_000_000);
        c.insert("async_completed".to_string(), 10);
        assert_eq!(io_time_from_counters(&c), Some(100.0));
    }
}
