//! What a core shows the monitor thread: when its current loop round started, which
//! operator it is in, its thread id, and the metrics snapshot it published last. The
//! core writes with relaxed stores (a plain `mov` on x86) and never waits on the monitor:
//! it publishes with `try_lock` and skips a turn when the monitor is reading.

use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;

use crossbeam_utils::CachePadded;

use crate::metrics::CoreSnapshot;

/// `round_start` while the core is parked (asleep on its doorbell: not stalled).
pub const PARKED: u64 = u64::MAX;

/// Which operator a core is in: 0 the loop itself, otherwise `(node + 1) << 16 |
/// partition + 1`, with partition 0 in the low half meaning "every partition" (an
/// exchange receiver feeds them all), or the checkpoint runtime.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Marker(pub u32);

impl Marker {
    /// The shard loop, between operators.
    pub const LOOP: Marker = Marker(0);
    /// The core's checkpoint runtime (snapshots, the log writer, the coordinator).
    pub const CHECKPOINT: Marker = Marker(u32::MAX);

    /// Operator `node`, partition `p` (`None`: all of them).
    pub fn operator(node: usize, p: Option<u32>) -> Self {
        debug_assert!(node < 0xFFFE && p.map_or(true, |p| p < 0xFFFF));
        let node = (node as u32 + 1) & 0xFFFF;
        let part = p.map_or(0, |p| (p + 1) & 0xFFFF);
        Marker(node << 16 | part)
    }

    /// `(node, partition)`, or `None` for the loop and the checkpoint runtime.
    pub fn decode(self) -> Option<(usize, Option<u32>)> {
        if self == Self::LOOP || self == Self::CHECKPOINT {
            return None;
        }
        let node = (self.0 >> 16) as usize - 1;
        let part = self.0 & 0xFFFF;
        Some((node, part.checked_sub(1)))
    }
}

/// One core's probe, shared by the core (writer) and the monitor (reader).
#[derive(Debug, Default)]
pub struct CoreProbe {
    hot: CachePadded<Hot>,
    tid: AtomicI32,
    published: Mutex<CoreSnapshot>,
}

#[derive(Debug, Default)]
struct Hot {
    round_start: AtomicU64,
    marker: AtomicU32,
}

impl CoreProbe {
    /// A new round of the loop starts at `now_ns`.
    #[inline]
    pub fn round(&self, now_ns: u64) {
        self.hot.round_start.store(now_ns, Ordering::Relaxed);
    }

    /// The core parks (or has ended).
    #[inline]
    pub fn parked(&self) {
        self.hot.round_start.store(PARKED, Ordering::Relaxed);
    }

    /// The core enters operator `m`; returns what to restore on leaving.
    #[inline]
    pub fn enter(&self, m: Marker) -> Marker {
        let prev = self.hot.marker.load(Ordering::Relaxed);
        self.hot.marker.store(m.0, Ordering::Relaxed);
        Marker(prev)
    }

    /// The core leaves an operator, back to `prev`.
    #[inline]
    pub fn leave(&self, prev: Marker) {
        self.hot.marker.store(prev.0, Ordering::Relaxed);
    }

    /// Sets the marker without remembering the previous one (the loop, between drivers).
    #[inline]
    pub fn set(&self, m: Marker) {
        self.hot.marker.store(m.0, Ordering::Relaxed);
    }

    /// Notes the core's thread id (on the core's thread, once).
    pub fn register_thread(&self) {
        // SAFETY: gettid has no preconditions and cannot fail.
        #[allow(unsafe_code)]
        let tid = unsafe { libc::syscall(libc::SYS_gettid) } as i32;
        self.tid.store(tid, Ordering::Relaxed);
    }

    /// `(round start, marker)` as the monitor samples them.
    pub fn sample(&self) -> (u64, Marker) {
        (
            self.hot.round_start.load(Ordering::Relaxed),
            Marker(self.hot.marker.load(Ordering::Relaxed)),
        )
    }

    /// The core's thread id (0 before it registered).
    pub fn tid(&self) -> i32 {
        self.tid.load(Ordering::Relaxed)
    }

    /// Publishes `snap` unless the monitor is reading the previous one right now.
    pub fn publish(&self, snap: impl FnOnce() -> CoreSnapshot) -> bool {
        match self.published.try_lock() {
            Ok(mut slot) => {
                *slot = snap();
                true
            }
            Err(_) => false,
        }
    }

    /// A copy of what the core published last (monitor side).
    pub fn published(&self) -> CoreSnapshot {
        self.published
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// The state letter of thread `tid` of this process (`R`, `S`, `D`, …).
pub fn thread_state(tid: i32) -> super::stall::ThreadState {
    use super::stall::ThreadState;
    if tid <= 0 {
        return ThreadState::Unknown;
    }
    let Ok(stat) = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")) else {
        return ThreadState::Unknown;
    };
    // "tid (comm) S ...": the state follows the last ')' (comm may contain spaces).
    stat.rfind(')')
        .and_then(|i| stat[i + 1..].trim_start().chars().next())
        .map_or(ThreadState::Unknown, ThreadState::from_letter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_round_trip() {
        assert_eq!(Marker::LOOP.decode(), None);
        assert_eq!(Marker::CHECKPOINT.decode(), None);
        assert_eq!(Marker::operator(0, Some(0)).decode(), Some((0, Some(0))));
        assert_eq!(Marker::operator(7, None).decode(), Some((7, None)));
        assert_eq!(
            Marker::operator(1000, Some(511)).decode(),
            Some((1000, Some(511)))
        );
        assert_ne!(Marker::operator(0, None), Marker::LOOP);
    }

    #[test]
    fn enter_and_leave_nest() {
        let p = CoreProbe::default();
        let a = p.enter(Marker::operator(1, Some(0)));
        let b = p.enter(Marker::operator(2, Some(0)));
        assert_eq!(p.sample().1, Marker::operator(2, Some(0)));
        p.leave(b);
        assert_eq!(p.sample().1, Marker::operator(1, Some(0)));
        p.leave(a);
        assert_eq!(p.sample().1, Marker::LOOP);
    }

    #[test]
    fn this_threads_state_is_running_while_it_reads_it() {
        let p = CoreProbe::default();
        p.register_thread();
        assert_eq!(
            thread_state(p.tid()),
            super::super::stall::ThreadState::Running
        );
        assert_eq!(thread_state(0), super::super::stall::ThreadState::Unknown);
    }
}
