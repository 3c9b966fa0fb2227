//! `cores/<cpu>.toml`: one file per core. It pins an executor to that CPU and tunes it.
//! The file's name is the CPU id; every field has a documented default in `Default`.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::ConfigError;

/// The largest `async_capacity` a core file may set.
pub const MAX_ASYNC_CAPACITY: usize = 1 << 20;

/// The largest `io_memory_kib`: 1 GiB, the most the kernel registers as one io_uring
/// buffer (glommio allocates it up front and panics when the allocation fails).
pub const MAX_IO_MEMORY_KIB: usize = 1 << 20;

/// The whole of one `cores/<cpu>.toml`. An empty file means all defaults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CoreConfig {
    /// Slots in each ring this core *receives* on (one ring per producing core and
    /// exchange). A power of two. A full ring is backpressure: the producer stops pulling
    /// its input until the consumer frees a slot.
    pub ring_capacity: usize,
    /// The most records one batch on a ring carries.
    pub batch_max: usize,
    /// The longest a record waits in a batch while the receiving core is busy,
    /// microseconds. When the receiving core is idle a batch goes at once.
    pub flush_deadline_us: u64,
    /// How long the core keeps polling with no work before it parks, microseconds (the
    /// most it spins; with `spin_adaptive` it spins less, see there).
    pub spin_before_park_us: u64,
    /// Spin only while it pays: not while the CPU is contended (the core's thread waited
    /// for the CPU for 5% or more of the last 10 ms: it then parks at once, for a hold of
    /// 100 ms that doubles up to 10 s while the contention lasts), and not when most idle
    /// gaps are longer than `spin_before_park_us` anyway. `false` spins the full
    /// `spin_before_park_us` before every park, which on a CPU shared with other
    /// processes makes the scheduler treat the core as a CPU hog.
    pub spin_adaptive: bool,
    /// The scheduler slice the core's thread asks for, microseconds (Linux 6.12+:
    /// `sched_setattr` with `sched_runtime` on `SCHED_OTHER`; 100 ..= 100000, or 0 for
    /// the kernel's default). A short slice gives a core that wakes with work an earlier
    /// virtual deadline, so it may preempt a CPU-bound neighbour sooner; it does not
    /// raise the core's share of the CPU. Off by default: on the 2-vCPU development VM
    /// (kernel 6.18, keyed-async beside other processes' builds) 100 us made a core that
    /// spins (`spin_adaptive = false`) fall further behind, made two rill jobs sharing
    /// the same CPUs worse (their cores preempt each other: p99 4 → 9 ms), and helped
    /// one parking job beside other work (p99.9 107 → 46 ms, medians of 3).
    pub sched_slice_us: u64,
    /// io_uring queue depth of this core's executor.
    pub io_uring_depth: usize,
    /// Memory registered with io_uring for this core's IO buffers, KiB (counts against
    /// the locked-memory limit; glommio works without registration when it is too low).
    pub io_memory_kib: usize,
    /// glommio's preemption timer, microseconds. The shard never yields to glommio, so
    /// this only matters while the executor starts: glommio skips its task queue when the
    /// timer has already fired and can then sleep for good (seen on a loaded 2-core VM
    /// with 1 ms), so the default is long.
    pub preempt_timer_us: u64,
    /// Partition indices this core owns, for every operator. Unset on every core means
    /// partition `p` goes to the `p mod n`-th configured core; set on any core, the
    /// lists must together cover each partition exactly once.
    pub partitions: Option<Vec<u32>>,
    /// Requests in flight per partition of every async operator placed on this core,
    /// overriding `[async] capacity` of job.toml (a fixed number or `"auto"`) for those
    /// partitions. Unset: job.toml's `[async] capacity` applies. The tuning advisor
    /// (`rill-perf tune`) writes it from Little's law, N = λ·t with headroom, using this
    /// core's own arrival rate.
    pub async_capacity: Option<usize>,
}

impl Default for CoreConfig {
    fn default() -> Self {
        Self {
            ring_capacity: 1024,
            batch_max: 256,
            flush_deadline_us: 20,
            spin_before_park_us: 200,
            spin_adaptive: true,
            sched_slice_us: 0,
            io_uring_depth: 128,
            io_memory_kib: 1024,
            preempt_timer_us: 100_000,
            partitions: None,
            async_capacity: None,
        }
    }
}

impl CoreConfig {
    /// Checks values serde cannot; `file` names this core file in errors.
    pub fn validate(&self, file: &Path) -> Result<(), ConfigError> {
        let bad = |key: &str, value: String, valid: &str| ConfigError::Invalid {
            file: file.to_path_buf(),
            key: key.to_string(),
            problem: value,
            valid: valid.to_string(),
        };
        if self.ring_capacity < 2 || !self.ring_capacity.is_power_of_two() {
            return Err(bad(
                "ring_capacity",
                self.ring_capacity.to_string(),
                "a power of two, at least 2 (default 1024)",
            ));
        }
        if self.ring_capacity > 1 << 20 {
            return Err(bad(
                "ring_capacity",
                self.ring_capacity.to_string(),
                "at most 1048576",
            ));
        }
        if self.batch_max == 0 || self.batch_max > 1 << 16 {
            return Err(bad(
                "batch_max",
                self.batch_max.to_string(),
                "1 ..= 65536 (default 256)",
            ));
        }
        if self.flush_deadline_us > 1_000_000 {
            return Err(bad(
                "flush_deadline_us",
                self.flush_deadline_us.to_string(),
                "0 ..= 1000000 (default 20)",
            ));
        }
        if self.spin_before_park_us > 10_000_000 {
            return Err(bad(
                "spin_before_park_us",
                self.spin_before_park_us.to_string(),
                "0 ..= 10000000 (default 200)",
            ));
        }
        if self.sched_slice_us != 0 && !(100..=100_000).contains(&self.sched_slice_us) {
            return Err(bad(
                "sched_slice_us",
                self.sched_slice_us.to_string(),
                "0 (the kernel's default, the default) or 100 ..= 100000 microseconds",
            ));
        }
        if !(4..=32_768).contains(&self.io_uring_depth) || !self.io_uring_depth.is_power_of_two() {
            return Err(bad(
                "io_uring_depth",
                self.io_uring_depth.to_string(),
                "a power of two in 4 ..= 32768 (default 128)",
            ));
        }
        if !(64..=MAX_IO_MEMORY_KIB).contains(&self.io_memory_kib) {
            return Err(bad(
                "io_memory_kib",
                self.io_memory_kib.to_string(),
                "64 ..= 1048576 KiB per core (1 GiB, the largest buffer io_uring registers; \
                 default 1024)",
            ));
        }
        if !(1..=10_000_000).contains(&self.preempt_timer_us) {
            return Err(bad(
                "preempt_timer_us",
                self.preempt_timer_us.to_string(),
                "1 ..= 10000000 microseconds (default 100000)",
            ));
        }
        if let Some(n) = self.async_capacity {
            if n == 0 || n > MAX_ASYNC_CAPACITY {
                return Err(bad(
                    "async_capacity",
                    n.to_string(),
                    "1 ..= 1048576 requests in flight per async partition (unset: job.toml's \
                     [async] capacity)",
                ));
            }
        }
        if let Some(parts) = &self.partitions {
            let mut sorted = parts.clone();
            sorted.sort_unstable();
            if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
                return Err(bad(
                    "partitions",
                    format!("partition {} is listed twice", w[0]),
                    "each partition index at most once",
                ));
            }
        }
        Ok(())
    }

    /// The flush deadline as a `Duration`.
    pub fn flush_deadline(&self) -> Duration {
        Duration::from_micros(self.flush_deadline_us)
    }

    /// Spin-before-park as a `Duration`.
    pub fn spin_before_park(&self) -> Duration {
        Duration::from_micros(self.spin_before_park_us)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spin_and_slice_keys_have_defaults_and_bounds() {
        let d = CoreConfig::default();
        assert!(d.spin_adaptive);
        assert_eq!(d.sched_slice_us, 0);
        let f = Path::new("cores/1.toml");
        for ok in [
            "sched_slice_us = 0\n",
            "sched_slice_us = 100\n",
            "sched_slice_us = 100000\n",
        ] {
            toml::from_str::<CoreConfig>(ok)
                .unwrap()
                .validate(f)
                .unwrap();
        }
        for bad in ["sched_slice_us = 99\n", "sched_slice_us = 100001\n"] {
            let e = toml::from_str::<CoreConfig>(bad)
                .unwrap()
                .validate(f)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("cores/1.toml") && e.contains("sched_slice_us"),
                "{e}"
            );
            assert!(e.contains("100 ..= 100000"), "{e}");
        }
        let c: CoreConfig = toml::from_str("spin_adaptive = false\n").unwrap();
        assert!(!c.spin_adaptive);
        assert!(toml::from_str::<CoreConfig>("spin_adaptive = 1\n").is_err());
    }

    #[test]
    fn async_capacity_is_unset_by_default_and_validated() {
        assert_eq!(CoreConfig::default().async_capacity, None);
        let f = Path::new("cores/0.toml");
        let c: CoreConfig = toml::from_str("async_capacity = 24\n").unwrap();
        assert_eq!(c.async_capacity, Some(24));
        c.validate(f).unwrap();
        for bad in ["async_capacity = 0\n", "async_capacity = 1048577\n"] {
            let c: CoreConfig = toml::from_str(bad).unwrap();
            let e = c.validate(f).unwrap_err().to_string();
            assert!(e.contains("cores/0.toml"), "{e}");
            assert!(e.contains("async_capacity"), "{e}");
            assert!(e.contains("1 ..= 1048576"), "{e}");
        }
        assert!(toml::from_str::<CoreConfig>("async_capacity = \"auto\"\n").is_err());
    }
}
