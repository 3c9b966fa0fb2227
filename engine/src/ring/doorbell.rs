//! The wake-up path for a consumer core that has run out of work and wants to park.
//!
//! Owns: one flag (`armed`) that producers check after every publish, and the parked
//! task's `Waker`. Must not: be touched on the hot path beyond `notify`'s fence and one
//! load, hold its mutex across a wake, or know anything about the rings it guards.
//!
//! One `Doorbell` per consumer core, shared as `Arc<Doorbell>` with all producers that
//! push into that core's rings. The protocol, which loses no wake-up:
//!
//! ```text
//! consumer (parking)                      producer (after each publish)
//!   arm();                                  ring.try_push(x)?;  // Release store of tail
//!   if any ring non-empty { disarm() }      bell.notify();
//!   else { bell.wait().await }
//! ```
//!
//! # Why no wake-up is lost
//!
//! This is the store-buffering pattern: the consumer stores `armed = true` then loads each
//! ring's `tail`; the producer stores `tail` then loads `armed`. `arm()` ends with a
//! `fence(SeqCst)` and `notify()` starts with one. SeqCst fences are totally ordered, so
//! either the producer's fence comes first, and the consumer's re-check (after its fence)
//! sees the new `tail`, or the consumer's fence comes first, and the producer's load of
//! `armed` (after its fence) sees `true` and rings. Without the producer's fence a `Release`
//! store of `tail` may be reordered after the load of `armed` (x86's store buffer does
//! exactly this), and both sides miss each other.
//!
//! `notify()` therefore costs a `fence(SeqCst)` plus one relaxed load when nobody is
//! parked: on x86-64 an `mfence` and a `mov` (a SeqCst *load* alone is just a `mov` and is
//! not enough; see above). Producers that batch call it once per batch. The fence is
//! measured by `perf/benches/ring.rs` (`ring/throughput/notify_per_batch`).
//!
//! The slow path (someone is parked) takes a `std::sync::Mutex` that guards the waker and
//! a `notified` flag; it runs at most once per park because the first producer to see
//! `armed` clears it with a swap.
//!
//! Waking from another core: the stored `Waker` belongs to the consumer's glommio
//! executor; waking it from a foreign thread pushes the task onto that executor's foreign
//! wake queue and signals its eventfd. `tests.rs` checks this across two executors.

use super::loom::{fence, AtomicBool, Mutex, MutexGuard, Ordering};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

/// Wakes one parked consumer core. See the module doc for the protocol.
pub struct Doorbell {
    /// True between `arm()` and the first `notify()` that sees it (or `disarm()`).
    armed: AtomicBool,
    parked: Mutex<Parked>,
}

#[derive(Default)]
struct Parked {
    /// A producer rang since the last `arm()`.
    notified: bool,
    waker: Option<Waker>,
}

impl Doorbell {
    /// A doorbell that is not armed.
    pub fn new() -> Self {
        Self {
            armed: AtomicBool::new(false),
            parked: Mutex::new(Parked::default()),
        }
    }

    fn parked(&self) -> MutexGuard<'_, Parked> {
        // A panic while holding this lock cannot leave `Parked` inconsistent (two plain
        // fields, each written in one statement), so a poisoned lock is still usable.
        self.parked
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Consumer: about to park. Clears any earlier notification, arms the bell, and orders
    /// both before the caller's re-check of its rings (which must follow).
    pub fn arm(&self) {
        self.parked().notified = false;
        // Every write to `armed` is an RMW (`swap`), never a plain store: the C++ model is
        // satisfied either way, but loom orders plain stores to one location only
        // partially and then reports a lost wake-up that real hardware cannot produce
        // (a `notify` reading the `false` of a racing `ring` swap instead of this `true`).
        self.armed.swap(true, Ordering::Relaxed);
        // SeqCst fence: orders the store of `armed` before the re-check's loads of `tail`
        // against `notify`'s fence (see the module doc).
        fence(Ordering::SeqCst);
    }

    /// Consumer: the re-check after [`Doorbell::arm`] found work, so it will not park.
    pub fn disarm(&self) {
        // A swap rather than a store: see `arm`.
        self.armed.swap(false, Ordering::Relaxed);
    }

    /// Consumer: parks until a producer calls [`Doorbell::notify`]. Ready at once if one
    /// did since [`Doorbell::arm`]. Call only after `arm()` and an empty re-check.
    pub fn wait(&self) -> Wait<'_> {
        Wait { bell: self }
    }

    /// Producer: call after every publish (or once after a batch). Costs a SeqCst fence
    /// and one load when the consumer is not parked.
    #[inline]
    pub fn notify(&self) {
        // SeqCst fence: orders the caller's store of `tail` before the load of `armed`
        // against `arm`'s fence (see the module doc).
        fence(Ordering::SeqCst);
        if self.armed.load(Ordering::Relaxed) {
            self.ring();
        }
    }

    #[cold]
    fn ring(&self) {
        // Only the producer that flips `armed` wakes; the others return at once.
        if !self.armed.swap(false, Ordering::AcqRel) {
            return;
        }
        let waker = {
            let mut parked = self.parked();
            parked.notified = true;
            parked.waker.take()
        };
        // Woken outside the lock so a waker that runs the task inline cannot deadlock.
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// True between `arm()` and the first `notify()` or `disarm()` after it.
    pub fn is_armed(&self) -> bool {
        self.armed.load(Ordering::Acquire)
    }
}

impl Default for Doorbell {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Doorbell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Doorbell")
            .field("armed", &self.is_armed())
            .finish()
    }
}

/// The future returned by [`Doorbell::wait`].
#[must_use = "futures do nothing unless polled"]
pub struct Wait<'a> {
    bell: &'a Doorbell,
}

impl Future for Wait<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut parked = self.bell.parked();
        if parked.notified {
            parked.notified = false;
            parked.waker = None;
            return Poll::Ready(());
        }
        match &mut parked.waker {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

impl fmt::Debug for Wait<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wait").finish_non_exhaustive()
    }
}
