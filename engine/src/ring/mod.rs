//! The bounded lock-free single-producer single-consumer ring that carries every record,
//! barrier and watermark from one core to another, and the [`Doorbell`] that wakes a parked
//! consumer core.
//!
//! Owns: the ring's memory, its two indices and the memory orderings that make a slot's
//! contents visible to the other core; dropping items still queued when both ends are gone.
//! Must not: block, allocate after [`channel`] returns, know what a `Message` is, or be used
//! by more than one producer or one consumer (the handles are `Send` but neither `Sync` nor
//! `Clone`, so the type system enforces this).
//!
//! # Layout
//!
//! `head` (next slot to pop, written only by the consumer) and `tail` (next slot to push,
//! written only by the producer) are free-running `usize` counters on separate cache lines
//! ([`CachePadded`]); a slot index is `counter & mask`. Each side keeps a private copy of
//! its own counter and a cached copy of the other side's, and reloads the other side's
//! counter only when the cached value says the ring is full (producer) or empty
//! (consumer). In steady state a push touches only the slot and `tail`, a pop only the slot
//! and `head`, so the two cores do not ping-pong one line per item.
//!
//! Capacity is rounded up to the next power of two so that the index is a mask; see
//! [`channel`].
//!
//! # Orderings
//!
//! * The producer writes the slot, then stores `tail` with `Release`. The consumer loads
//!   `tail` with `Acquire`, then reads the slot: the write of the value happens-before its
//!   read.
//! * The consumer moves the value out of the slot, then stores `head` with `Release`. The
//!   producer loads `head` with `Acquire` before it reuses that slot: the read of the old
//!   value happens-before the write of the new one.
//! * `producer_gone` / `consumer_gone` are stored with `Release` on drop and loaded with
//!   `Acquire`: a consumer that sees `is_producer_gone()` also sees every push made before
//!   the drop, so "check gone, then drain until empty" loses nothing.
//!
//! # Model checking
//!
//! With the `loom` feature the atomics, `UnsafeCell`, `Arc` and `Mutex` come from loom (see
//! `loom.rs`) and `loom_tests.rs` model-checks the ring and the doorbell:
//!
//! ```text
//! CARGO_TARGET_DIR=target/loom cargo test -p rill-engine --features loom --lib --release ring::loom
//! ```
//!
//! That build compiles the whole `rill-engine` library with loom's primitives in this
//! module only; other modules do not need to know about loom.
#![allow(unsafe_code)]

pub mod doorbell;
mod loom;

#[cfg(all(test, feature = "loom"))]
mod loom_tests;
#[cfg(all(test, not(feature = "loom")))]
mod tests;

pub use doorbell::{Doorbell, Wait};

use self::loom::{Arc, AtomicBool, AtomicUsize, Ordering, UnsafeCell};
use crossbeam_utils::CachePadded;
use std::cell::Cell;
use std::fmt;
use std::marker::PhantomData;
use std::mem::MaybeUninit;

/// Creates a ring holding at least `capacity` items and returns its two ends.
///
/// The capacity is rounded up to the next power of two (`channel(3)` holds 4 items);
/// [`Producer::capacity`] reports the real bound. All memory is allocated here.
///
/// # Panics
///
/// If `capacity` is 0, or if the rounded capacity does not fit in a `usize`.
pub fn channel<T: Send>(capacity: usize) -> (Producer<T>, Consumer<T>) {
    assert!(capacity >= 1, "ring capacity must be at least 1");
    let capacity = capacity
        .checked_next_power_of_two()
        .expect("ring capacity overflows usize when rounded to a power of two");
    let slots: Box<[Slot<T>]> = (0..capacity)
        .map(|_| UnsafeCell::new(MaybeUninit::uninit()))
        .collect();
    let shared = Arc::new(Shared {
        head: CachePadded::new(AtomicUsize::new(0)),
        tail: CachePadded::new(AtomicUsize::new(0)),
        slots,
        mask: capacity - 1,
        producer_gone: AtomicBool::new(false),
        consumer_gone: AtomicBool::new(false),
    });
    let producer = Producer {
        shared: Arc::clone(&shared),
        tail: 0,
        cached_head: 0,
        _not_sync: PhantomData,
    };
    let consumer = Consumer {
        shared,
        head: 0,
        cached_tail: 0,
        _not_sync: PhantomData,
    };
    (producer, consumer)
}

type Slot<T> = UnsafeCell<MaybeUninit<T>>;

/// The state both ends point at.
struct Shared<T> {
    /// Next counter value to pop. Written only by the consumer.
    head: CachePadded<AtomicUsize>,
    /// Next counter value to push. Written only by the producer.
    tail: CachePadded<AtomicUsize>,
    /// Slots `head..tail` (mod capacity) hold initialized values; the rest are uninit.
    slots: Box<[Slot<T>]>,
    /// `capacity - 1`; capacity is a power of two.
    mask: usize,
    producer_gone: AtomicBool,
    consumer_gone: AtomicBool,
}

// SAFETY: `Shared` hands each slot to exactly one side at a time (the producer owns slots
// `tail..head+capacity`, the consumer owns `head..tail`), and ownership moves only through
// the Release/Acquire pairs on `head` and `tail` described in the module doc. Values of `T`
// cross threads, so `T: Send` is required; no `&T` is ever shared, so `T: Sync` is not.
unsafe impl<T: Send> Send for Shared<T> {}
// SAFETY: as above; the only `&self` access to a slot is by the side that owns it.
unsafe impl<T: Send> Sync for Shared<T> {}

impl<T> Shared<T> {
    #[inline]
    fn capacity(&self) -> usize {
        self.mask + 1
    }
}

impl<T> Drop for Shared<T> {
    fn drop(&mut self) {
        // Both ends are gone (this is the last `Arc`), so no other thread touches the ring;
        // the `Arc` drop synchronized with both ends' last accesses.
        let head = self.head.load(Ordering::Acquire);
        let tail = self.tail.load(Ordering::Acquire);
        let mut pos = head;
        while pos != tail {
            self.slots[pos & self.mask].with_mut(|slot| {
                // SAFETY: counters `head..tail` are initialized slots that were pushed and
                // never popped, and nothing else can access them any more.
                unsafe { (*slot).assume_init_drop() }
            });
            pos = pos.wrapping_add(1);
        }
    }
}

/// The sending end of a ring. `Send` when `T: Send`; neither `Sync` nor `Clone`.
pub struct Producer<T> {
    shared: Arc<Shared<T>>,
    /// Private copy of `shared.tail` (only this side writes it).
    tail: usize,
    /// The consumer's `head` as last seen; the real one is never smaller.
    cached_head: usize,
    _not_sync: PhantomData<Cell<()>>,
}

/// The receiving end of a ring. `Send` when `T: Send`; neither `Sync` nor `Clone`.
pub struct Consumer<T> {
    shared: Arc<Shared<T>>,
    /// Private copy of `shared.head` (only this side writes it).
    head: usize,
    /// The producer's `tail` as last seen; the real one is never smaller.
    cached_tail: usize,
    _not_sync: PhantomData<Cell<()>>,
}

/// [`Producer::try_push`] found the ring full; the value is handed back.
#[derive(PartialEq, Eq, Clone, Copy)]
pub struct Full<T>(pub T);

impl<T> Full<T> {
    /// The value that was not pushed.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> fmt::Debug for Full<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Full(..)")
    }
}

impl<T> fmt::Display for Full<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ring is full")
    }
}

impl<T> std::error::Error for Full<T> {}

impl<T> Producer<T> {
    /// Pushes `value`, or hands it back in [`Full`] if the ring holds `capacity()` items.
    /// Never blocks. Call [`Doorbell::notify`] after publishing if the consumer may park.
    #[inline]
    pub fn try_push(&mut self, value: T) -> Result<(), Full<T>> {
        let tail = self.tail;
        if tail.wrapping_sub(self.cached_head) == self.shared.capacity() {
            // Acquire: pairs with the consumer's Release store of `head` after it moved the
            // value out of the slot we are about to overwrite.
            self.cached_head = self.shared.head.load(Ordering::Acquire);
            if tail.wrapping_sub(self.cached_head) == self.shared.capacity() {
                return Err(Full(value));
            }
        }
        self.shared.slots[tail & self.shared.mask].with_mut(|slot| {
            // SAFETY: `tail - head < capacity`, so this slot is outside `head..tail`: the
            // consumer does not read it until we publish `tail + 1`, and the Acquire load of
            // `head` above (or an earlier one) ordered its last read before this write.
            unsafe { (*slot).write(value) };
        });
        let next = tail.wrapping_add(1);
        // Release: publishes the slot write above to the consumer's Acquire load of `tail`.
        self.shared.tail.store(next, Ordering::Release);
        self.tail = next;
        Ok(())
    }

    /// Pushes items from `items` until the ring is full or the iterator is exhausted, and
    /// publishes them with a single store of `tail`. Reloads the consumer's `head` only if
    /// the cached free space is smaller than the iterator's lower size bound. Returns how many were pushed; items not
    /// pushed stay in the iterator (it is advanced only for items that fit).
    pub fn push_iter<I: Iterator<Item = T>>(&mut self, items: &mut I) -> usize {
        let capacity = self.shared.capacity();
        let mut free = capacity - self.tail.wrapping_sub(self.cached_head);
        if free == 0 || free < items.size_hint().0 {
            // Acquire: as in `try_push`.
            self.cached_head = self.shared.head.load(Ordering::Acquire);
            free = capacity - self.tail.wrapping_sub(self.cached_head);
        }
        let start = self.tail;
        let mut tail = start;
        while tail.wrapping_sub(start) < free {
            let Some(value) = items.next() else { break };
            self.shared.slots[tail & self.shared.mask].with_mut(|slot| {
                // SAFETY: as in `try_push`: `tail - cached_head < capacity`.
                unsafe { (*slot).write(value) };
            });
            tail = tail.wrapping_add(1);
        }
        if tail != start {
            // Release: publishes every slot written above.
            self.shared.tail.store(tail, Ordering::Release);
            self.tail = tail;
        }
        tail.wrapping_sub(start)
    }

    /// Items currently queued. Exact for pushes; may be stale (too large) for pops that are
    /// happening concurrently.
    pub fn len(&self) -> usize {
        self.tail
            .wrapping_sub(self.shared.head.load(Ordering::Acquire))
    }

    /// True if the consumer has taken everything pushed so far.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True if a push would fail right now (the consumer may free a slot at any moment).
    pub fn is_full(&self) -> bool {
        self.len() == self.shared.capacity()
    }

    /// The most items the ring holds (the requested capacity rounded up to a power of two).
    pub fn capacity(&self) -> usize {
        self.shared.capacity()
    }

    /// True once the [`Consumer`] has been dropped; pushes still succeed until the ring is
    /// full, and the items are dropped with the ring.
    pub fn is_consumer_gone(&self) -> bool {
        self.shared.consumer_gone.load(Ordering::Acquire)
    }
}

impl<T> Drop for Producer<T> {
    fn drop(&mut self) {
        // Release: a consumer that Acquire-loads `true` sees every push made before this.
        self.shared.producer_gone.store(true, Ordering::Release);
    }
}

impl<T> fmt::Debug for Producer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Producer")
            .field("len", &self.len())
            .field("capacity", &self.capacity())
            .finish()
    }
}

impl<T> Consumer<T> {
    /// Pops the oldest item, or returns `None` if the ring is empty. Never blocks.
    #[inline]
    pub fn try_pop(&mut self) -> Option<T> {
        let head = self.head;
        if head == self.cached_tail {
            // Acquire: pairs with the producer's Release store of `tail` after it wrote the
            // slots `head..tail`.
            self.cached_tail = self.shared.tail.load(Ordering::Acquire);
            if head == self.cached_tail {
                return None;
            }
        }
        let value = self.shared.slots[head & self.shared.mask].with(|slot| {
            // SAFETY: `head < cached_tail <= tail`, so the producer initialized this slot
            // and published it with the Release store we Acquire-loaded; it does not touch
            // the slot again until we publish `head + 1`. The value is moved out exactly
            // once because `head` advances past it below.
            unsafe { (*slot).assume_init_read() }
        });
        let next = head.wrapping_add(1);
        // Release: orders our read of the slot before the producer's reuse of it.
        self.shared.head.store(next, Ordering::Release);
        self.head = next;
        Some(value)
    }

    /// Pops up to `max` items, handing each to `f` in order, and frees their slots with a
    /// single store of `head` (reloading the producer's `tail` only if fewer than `max`
    /// are known to be queued). Returns how many were popped. If `f` panics, the items not
    /// yet handed over stay in the ring and are dropped with it.
    pub fn pop_batch(&mut self, max: usize, mut f: impl FnMut(T)) -> usize {
        let mut available = self.cached_tail.wrapping_sub(self.head);
        if available < max {
            // Acquire: as in `try_pop`.
            self.cached_tail = self.shared.tail.load(Ordering::Acquire);
            available = self.cached_tail.wrapping_sub(self.head);
        }
        let n = available.min(max);
        for _ in 0..n {
            let head = self.head;
            let value = self.shared.slots[head & self.shared.mask].with(|slot| {
                // SAFETY: as in `try_pop`: `head < cached_tail`. The private `head` is
                // advanced before `f` runs, and if `f` unwinds `PublishHeadOnUnwind`
                // publishes it, so `Shared::drop` never drops a value moved out here.
                unsafe { (*slot).assume_init_read() }
            });
            self.head = head.wrapping_add(1);
            let guard = PublishHeadOnUnwind(self);
            f(value);
            std::mem::forget(guard);
        }
        if n > 0 {
            // Release: orders the reads of all popped slots before their reuse.
            self.shared.head.store(self.head, Ordering::Release);
        }
        n
    }

    /// Items currently queued. Exact for pops; may be stale (too small) for pushes that are
    /// happening concurrently.
    pub fn len(&self) -> usize {
        self.shared
            .tail
            .load(Ordering::Acquire)
            .wrapping_sub(self.head)
    }

    /// True if nothing is queued right now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most items the ring holds (the requested capacity rounded up to a power of two).
    pub fn capacity(&self) -> usize {
        self.shared.capacity()
    }

    /// True once the [`Producer`] has been dropped. Items may remain: check this first,
    /// then drain with [`Consumer::try_pop`] until `None`, and nothing is lost.
    pub fn is_producer_gone(&self) -> bool {
        self.shared.producer_gone.load(Ordering::Acquire)
    }
}

/// Publishes the consumer's private `head` if `pop_batch`'s callback unwinds, so the
/// values already moved out are not dropped a second time by `Shared::drop`.
struct PublishHeadOnUnwind<'a, T>(&'a Consumer<T>);

impl<T> Drop for PublishHeadOnUnwind<'_, T> {
    fn drop(&mut self) {
        self.0.shared.head.store(self.0.head, Ordering::Release);
    }
}

impl<T> Drop for Consumer<T> {
    fn drop(&mut self) {
        // Release: pairs with `is_consumer_gone`'s Acquire load.
        self.shared.consumer_gone.store(true, Ordering::Release);
    }
}

impl<T> fmt::Debug for Consumer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Consumer")
            .field("len", &self.len())
            .field("capacity", &self.capacity())
            .finish()
    }
}
