//! Time for the engine: a `Clock` gives nanoseconds since the job's origin. Every core
//! shares one origin so a due time stamped on one core can be compared on another.
//! Sources and operators are handed `now` as a number, so tests drive them with any
//! time they like.

use std::time::Instant;

/// A source of "now", in nanoseconds since the job started.
pub trait Clock {
    /// Nanoseconds since the job's origin.
    fn now_ns(&self) -> u64;
}

/// The real monotonic clock (CLOCK_MONOTONIC through `Instant`, which is consistent
/// across cores), measured from a shared origin.
#[derive(Clone, Copy, Debug)]
pub struct MonotonicClock {
    origin: Instant,
}

impl MonotonicClock {
    /// A clock whose zero is `origin`.
    pub fn new(origin: Instant) -> Self {
        Self { origin }
    }
}

impl Clock for MonotonicClock {
    #[inline]
    fn now_ns(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }
}
