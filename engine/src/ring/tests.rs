//! Unit tests, the two-thread stress test, and the cross-executor doorbell test.
//!
//! Owns: tests of the ring and doorbell under real threads. Must not: depend on more than
//! two CPUs, on fixed CPU ids, or assert wall-clock timings (the only timeout is a hang
//! guard measured in tens of seconds).

use super::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::sync::atomic::AtomicUsize as StdAtomicUsize;
use std::sync::Arc as StdArc;
use std::time::Duration;

#[test]
fn capacity_rounds_up_to_power_of_two() {
    for (asked, got) in [(1, 1), (2, 2), (3, 4), (5, 8), (1000, 1024), (1024, 1024)] {
        let (p, c) = channel::<u8>(asked);
        assert_eq!(p.capacity(), got, "asked {asked}");
        assert_eq!(c.capacity(), got, "asked {asked}");
    }
}

#[test]
#[should_panic(expected = "at least 1")]
fn zero_capacity_panics() {
    let _ = channel::<u8>(0);
}

#[test]
fn push_pop_in_order_and_full_hands_value_back() {
    let (mut p, mut c) = channel::<String>(4);
    assert!(p.is_empty() && c.is_empty() && !p.is_full());
    for i in 0..4 {
        p.try_push(i.to_string()).unwrap();
    }
    assert!(p.is_full());
    assert_eq!(p.len(), 4);
    assert_eq!(c.len(), 4);
    let Full(back) = p.try_push("x".to_owned()).unwrap_err();
    assert_eq!(back, "x");
    assert_eq!(c.try_pop().as_deref(), Some("0"));
    assert!(!p.is_full());
    p.try_push("4".to_owned()).unwrap();
    let rest: Vec<_> = std::iter::from_fn(|| c.try_pop()).collect();
    assert_eq!(rest, ["1", "2", "3", "4"]);
    assert_eq!(c.try_pop(), None);
    assert!(p.is_empty() && c.is_empty());
}

#[test]
fn wraps_around_many_times() {
    let (mut p, mut c) = channel::<u64>(2);
    for i in 0..10_000u64 {
        p.try_push(i).unwrap();
        if i % 2 == 1 {
            assert_eq!(c.try_pop(), Some(i - 1));
            assert_eq!(c.try_pop(), Some(i));
        }
    }
    assert!(c.is_empty());
}

#[test]
fn counters_wrap_past_usize_max() {
    let (mut p, mut c) = channel::<u32>(4);
    // Start both counters just below the wrap point.
    let start = usize::MAX - 5;
    p.shared.head.store(start, Ordering::Relaxed);
    p.shared.tail.store(start, Ordering::Relaxed);
    p.tail = start;
    p.cached_head = start;
    c.head = start;
    c.cached_tail = start;
    for i in 0..100 {
        p.try_push(i).unwrap();
        p.try_push(i + 1000).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(c.try_pop(), Some(i));
        assert_eq!(c.try_pop(), Some(i + 1000));
    }
    for i in 0..4 {
        p.try_push(i).unwrap();
    }
    assert!(p.try_push(9).is_err());
}

#[test]
fn full_error_formats() {
    let err = Full(vec![1u8]);
    assert_eq!(format!("{err}"), "ring is full");
    assert_eq!(format!("{err:?}"), "Full(..)");
    let boxed: Box<dyn std::error::Error> = Box::new(Full(3));
    assert_eq!(boxed.to_string(), "ring is full");
    assert_eq!(err.into_inner(), vec![1u8]);
}

#[test]
fn gone_flags() {
    let (mut p, c) = channel::<u8>(2);
    assert!(!p.is_consumer_gone() && !c.is_producer_gone());
    p.try_push(1).unwrap();
    drop(p);
    assert!(c.is_producer_gone());
    let (p, c) = channel::<u8>(2);
    drop(c);
    assert!(p.is_consumer_gone());
}

#[test]
fn producer_gone_then_drain_loses_nothing() {
    let (mut p, mut c) = channel::<u32>(8);
    for i in 0..5 {
        p.try_push(i).unwrap();
    }
    drop(p);
    assert!(c.is_producer_gone());
    let drained: Vec<_> = std::iter::from_fn(|| c.try_pop()).collect();
    assert_eq!(drained, [0, 1, 2, 3, 4]);
}

/// Counts live instances so leaks and double drops show up.
struct Tracked(StdArc<StdAtomicUsize>);

impl Tracked {
    fn new(live: &StdArc<StdAtomicUsize>) -> Self {
        live.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Self(StdArc::clone(live))
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

#[test]
fn remaining_items_dropped_once_when_both_ends_gone() {
    let live = StdArc::new(StdAtomicUsize::new(0));
    for consumer_first in [false, true] {
        let (mut p, mut c) = channel::<Tracked>(8);
        // Wrap the counters so the remaining items straddle the end of the buffer.
        for _ in 0..6 {
            p.try_push(Tracked::new(&live)).unwrap();
            drop(c.try_pop().unwrap());
        }
        for _ in 0..5 {
            p.try_push(Tracked::new(&live)).unwrap();
        }
        drop(c.try_pop());
        assert_eq!(live.load(std::sync::atomic::Ordering::SeqCst), 4);
        if consumer_first {
            drop(c);
            assert_eq!(live.load(std::sync::atomic::Ordering::SeqCst), 4);
            drop(p);
        } else {
            drop(p);
            assert_eq!(live.load(std::sync::atomic::Ordering::SeqCst), 4);
            drop(c);
        }
        assert_eq!(live.load(std::sync::atomic::Ordering::SeqCst), 0);
    }
}

#[test]
fn push_iter_and_pop_batch() {
    let (mut p, mut c) = channel::<u32>(8);
    let mut source = 0..20u32;
    assert_eq!(p.push_iter(&mut source), 8);
    assert_eq!(
        source.start, 8,
        "items that did not fit stay in the iterator"
    );
    assert_eq!(p.push_iter(&mut source), 0);
    let mut got = Vec::new();
    assert_eq!(c.pop_batch(3, |v| got.push(v)), 3);
    assert_eq!(p.push_iter(&mut source), 3);
    assert_eq!(c.pop_batch(usize::MAX, |v| got.push(v)), 8);
    assert_eq!(c.pop_batch(usize::MAX, |v| got.push(v)), 0);
    assert_eq!(got, (0..11).collect::<Vec<_>>());
}

#[test]
fn pop_batch_callback_panic_drops_nothing_twice() {
    let live = StdArc::new(StdAtomicUsize::new(0));
    let (mut p, mut c) = channel::<Tracked>(8);
    for _ in 0..6 {
        p.try_push(Tracked::new(&live)).unwrap();
    }
    let mut seen = 0;
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        c.pop_batch(6, |item| {
            seen += 1;
            if seen == 3 {
                panic!("callback fails on the third item");
            }
            drop(item);
        })
    }));
    assert!(result.is_err());
    assert_eq!(live.load(std::sync::atomic::Ordering::SeqCst), 3);
    assert_eq!(c.len(), 3);
    drop((p, c));
    assert_eq!(live.load(std::sync::atomic::Ordering::SeqCst), 0);
}

#[test]
fn zero_sized_items() {
    let (mut p, mut c) = channel::<()>(4);
    for _ in 0..4 {
        p.try_push(()).unwrap();
    }
    assert!(p.try_push(()).is_err());
    assert_eq!(std::iter::from_fn(|| c.try_pop()).count(), 4);
}

/// Compile-time checks: the ends are `Send` but neither `Sync` nor `Clone`.
#[test]
fn ends_are_send_not_sync_not_clone() {
    fn assert_send<T: Send>() {}
    assert_send::<Producer<String>>();
    assert_send::<Consumer<String>>();
    assert_send::<StdArc<Doorbell>>();

    // If `T: Sync`, both impls apply and `_` is ambiguous: a compile error.
    trait AmbiguousIfSync<A> {
        fn check() {}
    }
    impl<T: ?Sized> AmbiguousIfSync<()> for T {}
    impl<T: ?Sized + Sync> AmbiguousIfSync<u8> for T {}
    <Producer<u8> as AmbiguousIfSync<_>>::check();
    <Consumer<u8> as AmbiguousIfSync<_>>::check();

    trait AmbiguousIfClone<A> {
        fn check() {}
    }
    impl<T: ?Sized> AmbiguousIfClone<()> for T {}
    impl<T: Clone> AmbiguousIfClone<u8> for T {}
    <Producer<u8> as AmbiguousIfClone<_>>::check();
    <Consumer<u8> as AmbiguousIfClone<_>>::check();
}

/// The seed for a randomized test: `RILL_SEED` if set, else from the clock. Printed so a
/// failure can be replayed with `RILL_SEED=<seed>`.
fn seed() -> u64 {
    let seed = std::env::var("RILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0)
        });
    eprintln!("ring stress seed: {seed} (replay with RILL_SEED={seed})");
    seed
}

/// Millions of items across two threads at random capacities, with random batch sizes on
/// both sides; checks order, count and that nothing leaks.
#[test]
fn two_thread_stress() {
    let seed = seed();
    let mut rng = StdRng::seed_from_u64(seed);
    let total: u64 = if cfg!(debug_assertions) {
        1_000_000
    } else {
        4_000_000
    };
    let rounds = 8;
    for round in 0..rounds {
        let capacity = 1usize << rng.gen_range(0..=10);
        let producer_batch = rng.gen_range(1..=64usize);
        let consumer_batch = rng.gen_range(1..=64usize);
        let per_round = total / rounds;
        let (mut p, mut c) = channel::<u64>(capacity);
        let producer = std::thread::spawn(move || {
            let mut next = 0u64;
            while next < per_round {
                if next % 2 == 0 {
                    match p.try_push(next) {
                        Ok(()) => next += 1,
                        Err(Full(v)) => {
                            assert_eq!(v, next);
                            std::hint::spin_loop();
                        }
                    }
                } else {
                    let end = (next + producer_batch as u64).min(per_round);
                    let mut items = next..end;
                    let pushed = p.push_iter(&mut items) as u64;
                    next += pushed;
                    if pushed == 0 {
                        std::thread::yield_now();
                    }
                }
            }
        });
        let mut expected = 0u64;
        let mut spins = 0u64;
        while expected < per_round {
            let got_any = if expected % 3 == 0 {
                match c.try_pop() {
                    Some(v) => {
                        assert_eq!(v, expected, "seed {seed} round {round} cap {capacity}");
                        expected += 1;
                        true
                    }
                    None => false,
                }
            } else {
                let n = c.pop_batch(consumer_batch, |v| {
                    assert_eq!(v, expected, "seed {seed} round {round} cap {capacity}");
                    expected += 1;
                });
                n > 0
            };
            if !got_any {
                spins += 1;
                if spins % 64 == 0 {
                    std::thread::yield_now();
                }
            }
        }
        producer.join().expect("producer panicked");
        assert!(c.is_producer_gone(), "seed {seed}");
        assert_eq!(c.try_pop(), None, "seed {seed}: more items than pushed");
    }
}

/// Runs `f` on a thread and fails the test if it has not finished after a generous hang
/// guard (not a timing assertion: a lost wake-up shows up as a hang).
fn with_hang_guard(name: &str, f: impl FnOnce() + Send + 'static) {
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        f();
        let _ = done_tx.send(());
    });
    match done_rx.recv_timeout(Duration::from_secs(120)) {
        Ok(()) => handle.join().expect("test thread panicked"),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            // The thread panicked before sending; surface its panic.
            handle.join().expect("test thread panicked");
        }
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("{name}: no progress after 120 s (lost wake-up?)")
        }
    }
}

#[test]
fn doorbell_ready_at_once_if_notified_after_arm() {
    let bell = Doorbell::new();
    bell.arm();
    assert!(bell.is_armed());
    bell.notify();
    assert!(!bell.is_armed());
    futures_lite::future::block_on(bell.wait());
    // disarm leaves nothing pending; notify without arm is a no-op.
    bell.arm();
    bell.disarm();
    assert!(!bell.is_armed());
    bell.notify();
    assert!(!bell.is_armed());
}

/// Two OS threads, blocking `block_on` consumer: many park/unpark cycles.
#[test]
fn doorbell_threads_no_lost_wakeup() {
    with_hang_guard("doorbell_threads_no_lost_wakeup", || {
        let n = 20_000u64;
        let bell = StdArc::new(Doorbell::new());
        let (mut p, mut c) = channel::<u64>(16);
        let producer_bell = StdArc::clone(&bell);
        let producer = std::thread::spawn(move || {
            for i in 0..n {
                let mut v = i;
                while let Err(Full(back)) = p.try_push(v) {
                    v = back;
                    std::thread::yield_now();
                }
                producer_bell.notify();
                if i % 7 == 0 {
                    std::thread::yield_now();
                }
            }
        });
        let mut expected = 0;
        while expected < n {
            while let Some(v) = c.try_pop() {
                assert_eq!(v, expected);
                expected += 1;
            }
            if expected == n {
                break;
            }
            bell.arm();
            if !c.is_empty() {
                bell.disarm();
            } else {
                futures_lite::future::block_on(bell.wait());
            }
        }
        producer.join().unwrap();
    });
}

/// The consumer parks inside one glommio executor; a second executor on another thread
/// pushes and rings. Proves glommio's foreign-thread wake reaches a sleeping executor.
#[test]
fn doorbell_wakes_across_glommio_executors() {
    use glommio::{LocalExecutorBuilder, Placement};

    with_hang_guard("doorbell_wakes_across_glommio_executors", || {
        let rounds = 200u64;
        let bell = StdArc::new(Doorbell::new());
        let (mut p, mut c) = channel::<u64>(8);
        let parks = StdArc::new(StdAtomicUsize::new(0));

        let consumer_bell = StdArc::clone(&bell);
        let consumer_parks = StdArc::clone(&parks);
        let consumer = LocalExecutorBuilder::new(Placement::Unbound)
            .name("ring-consumer")
            .spawn(move || async move {
                let mut expected = 0u64;
                while expected < rounds {
                    while let Some(v) = c.try_pop() {
                        assert_eq!(v, expected);
                        expected += 1;
                    }
                    if expected == rounds {
                        break;
                    }
                    consumer_bell.arm();
                    if !c.is_empty() {
                        consumer_bell.disarm();
                    } else {
                        consumer_parks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        consumer_bell.wait().await;
                    }
                }
                expected
            })
            .expect("spawn consumer executor");

        let producer_bell = StdArc::clone(&bell);
        let producer = LocalExecutorBuilder::new(Placement::Unbound)
            .name("ring-producer")
            .spawn(move || async move {
                for i in 0..rounds {
                    // Wait until the consumer has armed (it is parking or about to), and
                    // for a few rounds also let it fall asleep in the executor's poll, so
                    // the wake must come through the foreign-wake path.
                    while !producer_bell.is_armed() {
                        glommio::yield_if_needed().await;
                        std::hint::spin_loop();
                    }
                    if i % 20 == 0 {
                        glommio::timer::sleep(Duration::from_millis(2)).await;
                    }
                    p.try_push(i).expect("consumer drained before arming");
                    producer_bell.notify();
                }
            })
            .expect("spawn producer executor");

        producer.join().expect("producer executor");
        let received = consumer.join().expect("consumer executor");
        assert_eq!(received, rounds);
        assert!(parks.load(std::sync::atomic::Ordering::Relaxed) > 0);
    });
}
