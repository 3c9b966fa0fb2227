//! Time for the engine: a `Clock` gives nanoseconds since the job's origin. Every core
//! shares one origin so a due time stamped on one core can be compared on another.
//! Tests use `ManualClock`; nothing on the record path calls `Instant::now` directly.

use std::cell::Cell;
use std::time::{Duration, Instant};

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

    /// The instant this clock counts from.
    pub fn origin(&self) -> Instant {
        self.origin
    }

    /// The instant `ns` nanoseconds after the origin.
    pub fn instant_at(&self, ns: u64) -> Instant {
        self.origin + Duration::from_nanos(ns)
    }
}

impl Clock for MonotonicClock {
    #[inline]
    fn now_ns(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }
}

/// A clock that moves only when told to; for tests.
#[derive(Debug, Default)]
pub struct ManualClock {
    now: Cell<u64>,
}

impl ManualClock {
    /// A manual clock at `ns`.
    pub fn at(ns: u64) -> Self {
        Self { now: Cell::new(ns) }
    }

    /// Moves the clock to `ns` (never backwards).
    pub fn set(&self, ns: u64) {
        assert!(ns >= self.now.get(), "a clock never goes backwards");
        self.now.set(ns);
    }

    /// Moves the clock forward by `d`.
    pub fn advance(&self, d: Duration) {
        self.now.set(self.now.get() + d.as_nanos() as u64);
    }
}

impl Clock for ManualClock {
    fn now_ns(&self) -> u64 {
        self.now.get()
    }
}
