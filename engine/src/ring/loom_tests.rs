//! Loom models of the ring and the doorbell (built only with the `loom` feature; see `mod.rs`).
//!
//! Owns: exhaustive interleaving checks at small sizes. Must not: use `std` threads or
//! atomics (loom would not see them).

use super::loom::Arc;
use super::{channel, Doorbell, Full};
use loom::thread;

/// `loom::model` with a preemption bound of 3 unless `LOOM_MAX_PREEMPTIONS` says
/// otherwise (tokio's default for its CI): exhaustive up to three forced switches, which
/// covers the two-sided races here, and finishes in minutes rather than hours.
fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(3);
    }
    builder.check(f);
}

/// Runs `future` to completion on the current loom thread, parking on a loom `Notify`
/// between polls (loom's own `block_on` needs its `futures` feature, which the workspace
/// does not enable). A wake-up that never comes is reported by loom as a deadlock.
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    struct NotifyWaker(loom::sync::Notify);
    impl std::task::Wake for NotifyWaker {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.notify();
        }
        fn wake_by_ref(self: &std::sync::Arc<Self>) {
            self.0.notify();
        }
    }
    let notify = std::sync::Arc::new(NotifyWaker(loom::sync::Notify::new()));
    let waker = std::task::Waker::from(std::sync::Arc::clone(&notify));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let std::task::Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
        notify.0.wait();
    }
}

/// Pushes `items` values through a ring of `capacity`, spinning on `Full` with
/// `loom::thread::yield_now`; the consumer checks order and count.
fn ring_transfer(capacity: usize, items: u32) {
    model(move || {
        let (mut p, mut c) = channel::<u32>(capacity);
        let producer = thread::spawn(move || {
            for i in 0..items {
                let mut v = i;
                while let Err(Full(back)) = p.try_push(v) {
                    v = back;
                    thread::yield_now();
                }
            }
        });
        let mut expected = 0;
        while expected < items {
            match c.try_pop() {
                Some(v) => {
                    assert_eq!(v, expected, "out of order or duplicated");
                    expected += 1;
                }
                None => thread::yield_now(),
            }
        }
        producer.join().unwrap();
        assert!(c.is_producer_gone());
        assert_eq!(c.try_pop(), None, "more items than pushed");
    });
}

#[test]
fn ring_in_order_capacity_1() {
    ring_transfer(1, 3);
}

#[test]
fn ring_in_order_capacity_2_wraps() {
    ring_transfer(2, 4);
}

/// Batched push and pop across the wrap point.
#[test]
fn ring_batches() {
    model(|| {
        let (mut p, mut c) = channel::<u32>(2);
        let producer = thread::spawn(move || {
            let mut items = 0..4u32;
            while !items.is_empty() {
                if p.push_iter(&mut items) == 0 {
                    thread::yield_now();
                }
            }
        });
        let mut got = Vec::new();
        while got.len() < 4 {
            if c.pop_batch(2, |v| got.push(v)) == 0 {
                thread::yield_now();
            }
        }
        producer.join().unwrap();
        assert_eq!(got, [0, 1, 2, 3]);
    });
}

/// Items still queued are dropped exactly once, whichever end goes last, while the other
/// end is being dropped on another thread.
#[test]
fn ring_drops_remaining_items() {
    model(|| {
        let live = Arc::new(loom::sync::atomic::AtomicUsize::new(0));
        struct Tracked(Arc<loom::sync::atomic::AtomicUsize>);
        impl Drop for Tracked {
            fn drop(&mut self) {
                self.0.fetch_sub(1, loom::sync::atomic::Ordering::SeqCst);
            }
        }
        let make = |live: &Arc<loom::sync::atomic::AtomicUsize>| {
            live.fetch_add(1, loom::sync::atomic::Ordering::SeqCst);
            Tracked(Arc::clone(live))
        };
        let (mut p, mut c) = channel::<Tracked>(2);
        p.try_push(make(&live)).unwrap();
        let live2 = Arc::clone(&live);
        let producer = thread::spawn(move || {
            // May or may not fit, depending on whether the consumer popped yet.
            let _ = p.try_push(make(&live2));
        });
        drop(c.try_pop());
        drop(c);
        producer.join().unwrap();
        assert_eq!(live.load(loom::sync::atomic::Ordering::SeqCst), 0);
    });
}

/// The consumer parks with the arm / re-check / wait protocol; the producer pushes and
/// rings. A lost wake-up leaves the consumer blocked forever, which loom reports as a
/// deadlock.
#[test]
fn doorbell_no_lost_wakeup() {
    model(|| {
        let bell = Arc::new(Doorbell::new());
        let (mut p, mut c) = channel::<u32>(2);
        let producer_bell = Arc::clone(&bell);
        let producer = thread::spawn(move || {
            p.try_push(7).unwrap();
            producer_bell.notify();
        });
        let value = loop {
            if let Some(v) = c.try_pop() {
                break v;
            }
            bell.arm();
            if !c.is_empty() {
                bell.disarm();
            } else {
                block_on(bell.wait());
            }
        };
        assert_eq!(value, 7);
        producer.join().unwrap();
    });
}

/// Two producers (each with its own ring) share one doorbell; the consumer must get both.
#[test]
fn doorbell_two_producers() {
    model(|| {
        let bell = Arc::new(Doorbell::new());
        let (mut p1, mut c1) = channel::<u32>(1);
        let (mut p2, mut c2) = channel::<u32>(1);
        let b1 = Arc::clone(&bell);
        let t1 = thread::spawn(move || {
            p1.try_push(1).unwrap();
            b1.notify();
        });
        let b2 = Arc::clone(&bell);
        let t2 = thread::spawn(move || {
            p2.try_push(2).unwrap();
            b2.notify();
        });
        let mut got = 0;
        while got < 2 {
            let before = got;
            got += c1.try_pop().map_or(0, |_| 1) + c2.try_pop().map_or(0, |_| 1);
            if got > before || got == 2 {
                continue;
            }
            bell.arm();
            if !c1.is_empty() || !c2.is_empty() {
                bell.disarm();
            } else {
                block_on(bell.wait());
            }
        }
        t1.join().unwrap();
        t2.join().unwrap();
    });
}

/// One producer rings twice, so the consumer may park twice: a ring of the first park
/// can still be handing over the slot when the consumer registers for the second (the
/// case where the consumer must wake itself rather than wait).
#[test]
fn doorbell_two_parks() {
    model(|| {
        let bell = Arc::new(Doorbell::new());
        let (mut p, mut c) = channel::<u32>(2);
        let producer_bell = Arc::clone(&bell);
        let producer = thread::spawn(move || {
            for v in [1, 2] {
                p.try_push(v).unwrap();
                producer_bell.notify();
            }
        });
        let mut got = Vec::new();
        while got.len() < 2 {
            if let Some(v) = c.try_pop() {
                got.push(v);
                continue;
            }
            bell.arm();
            if !c.is_empty() {
                bell.disarm();
            } else {
                block_on(bell.wait());
            }
        }
        assert_eq!(got, [1, 2]);
        producer.join().unwrap();
    });
}
