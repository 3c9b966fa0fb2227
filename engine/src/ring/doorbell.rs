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
//! The slow path (someone is parked) is lock-free too: the first producer to see `armed`
//! clears it with a swap, sets `notified`, and takes the stored waker through a small
//! state machine (`WAITING`, `REGISTERING`, `WAKING`; the scheme of the `futures` crate's
//! `AtomicWaker`). A producer never waits for the consumer: if the consumer is in the
//! middle of storing its waker, the producer only marks `WAKING` and returns, and the
//! consumer, on finishing, sees the mark and wakes itself. When this path took a mutex, a
//! producer could sleep on it while the consumer that held it was preempted inside `arm`
//! or `wait`: on a shared machine one preemption became two.
//!
//! Waking from another core: the stored `Waker` belongs to the consumer's glommio
//! executor; waking it from a foreign thread pushes the task onto that executor's foreign
//! wake queue and signals its eventfd. `tests.rs` checks this across two executors.

use super::loom::{fence, yield_now, AtomicBool, AtomicUsize, Ordering, UnsafeCell};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

/// Wakes one parked consumer core. See the module doc for the protocol.
pub struct Doorbell {
    /// True between `arm()` and the first `notify()` that sees it (or `disarm()`).
    armed: AtomicBool,
    /// A producer rang since the last `arm()`.
    notified: AtomicBool,
    /// Who may touch `waker`: `WAITING` (nobody), `REGISTERING` (the consumer is storing
    /// it), the `WAKING` bit (a producer is taking it, or left the wake to the consumer).
    state: AtomicUsize,
    /// The parked task's waker.
    waker: UnsafeCell<Option<Waker>>,
}

/// Nobody is touching the waker.
const WAITING: usize = 0;
/// The consumer is storing its waker.
const REGISTERING: usize = 0b01;
/// A producer is taking the waker (or left the wake to a registering consumer).
const WAKING: usize = 0b10;

// SAFETY: `waker` is read or written only by the side that moved `state` out of `WAITING`
// (the consumer to `REGISTERING`, a producer to `WAKING`), and ownership passes through
// the AcqRel operations on `state`; `Waker` itself is `Send + Sync`.
#[allow(unsafe_code)]
unsafe impl Send for Doorbell {}
// SAFETY: as above.
#[allow(unsafe_code)]
unsafe impl Sync for Doorbell {}

impl Doorbell {
    /// A doorbell that is not armed.
    pub fn new() -> Self {
        Self {
            armed: AtomicBool::new(false),
            notified: AtomicBool::new(false),
            state: AtomicUsize::new(WAITING),
            waker: UnsafeCell::new(None),
        }
    }

    /// Consumer: about to park. Clears any earlier notification, arms the bell, and orders
    /// both before the caller's re-check of its rings (which must follow).
    pub fn arm(&self) {
        // A swap rather than a store, as for `armed` below.
        self.notified.swap(false, Ordering::Relaxed);
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
        // AcqRel: a consumer that sees `notified` also sees what this producer published
        // before ringing.
        self.notified.swap(true, Ordering::AcqRel);
        self.wake();
    }

    /// Producer: takes the stored waker and wakes it, unless the consumer is storing one
    /// right now; then the consumer wakes itself (see `register`).
    fn wake(&self) {
        if self.state.fetch_or(WAKING, Ordering::AcqRel) == WAITING {
            // SAFETY: this producer moved `state` from `WAITING` to `WAKING`, so it alone
            // touches `waker` until it clears the bit below.
            #[allow(unsafe_code)]
            let waker = self.waker.with_mut(|w| unsafe { (*w).take() });
            self.state.fetch_and(!WAKING, Ordering::Release);
            // Woken after giving the slot back, so a waker that polls the task inline
            // finds the doorbell free.
            if let Some(waker) = waker {
                waker.wake();
            }
        }
    }

    /// Consumer: stores `waker` for the next `wake`, or wakes it at once when a producer
    /// came by while it was being stored.
    fn register(&self, waker: &Waker) {
        match self.state.compare_exchange(
            WAITING,
            REGISTERING,
            Ordering::Acquire,
            Ordering::Acquire,
        ) {
            Ok(_) => {
                // SAFETY: the consumer moved `state` to `REGISTERING`; producers do not
                // touch `waker` until it is `WAITING` again.
                #[allow(unsafe_code)]
                self.waker.with_mut(|w| unsafe {
                    match &*w {
                        Some(old) if old.will_wake(waker) => {}
                        _ => *w = Some(waker.clone()),
                    }
                });
                if let Err(now) = self.state.compare_exchange(
                    REGISTERING,
                    WAITING,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    // A producer set `WAKING` meanwhile and left the wake to us.
                    debug_assert_eq!(now, REGISTERING | WAKING);
                    // SAFETY: still ours: the producer saw `REGISTERING` and backed off.
                    #[allow(unsafe_code)]
                    let taken = self.waker.with_mut(|w| unsafe { (*w).take() });
                    self.state.swap(WAITING, Ordering::AcqRel);
                    if let Some(w) = taken {
                        w.wake();
                    }
                }
            }
            // A producer is between taking the old waker and giving the slot back (this
            // one's ring, or a late one of an earlier park). Yield first, so that producer
            // can finish if it was preempted on this CPU, then have the caller poll again:
            // the old waker may not be this one, and a later ring would find the slot
            // busy and leave the wake to us.
            Err(_) => {
                yield_now();
                waker.wake_by_ref();
            }
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
        let bell = self.bell;
        if bell.notified.swap(false, Ordering::Acquire) {
            return Poll::Ready(());
        }
        bell.register(cx.waker());
        // A ring between the check above and the registration may have woken the old
        // waker (or none): look again now that the new one is in place.
        if bell.notified.swap(false, Ordering::Acquire) {
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

impl fmt::Debug for Wait<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wait").finish_non_exhaustive()
    }
}
