//! The async operator under a manual clock: ordering (unordered results between the
//! watermarks around their inputs, barriers), capacity and backpressure, timeouts per
//! policy, late completions, retries with backoff, the breaker, and the inputs and
//! watermarks a checkpoint archives and a restore replays.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use super::op::{replay, AsyncCore, AsyncOp, AsyncParts, Pending};
use super::*;
use crate::dataflow::exchange::Port;
use crate::dataflow::ops::testing::{Collect, Seen};
use crate::dataflow::ops::{Emit, FailureSlot};
use crate::error::EngineError;
use crate::ids::{CheckpointId, CoreId};
use crate::message::{Barrier, Control, Watermark};
use crate::metrics::MetricsHandle;

const MS: u64 = 1_000_000;

struct Rig {
    clock: ManualClock,
    seen: Rc<RefCell<Vec<Seen<u64>>>>,
    core: Rc<RefCell<AsyncCore<u64, u64>>>,
    op: AsyncOp<u64, u64>,
    failure: FailureSlot,
    metrics: MetricsHandle,
}

impl Rig {
    /// An operator whose call for `x` is `call(timers, x)`.
    fn new(
        opts: AsyncOptions<u64, u64>,
        restored: Vec<u64>,
        call: impl FnMut(&Timers, u64) -> BoxFuture<u64> + 'static,
    ) -> Self {
        let restored = restored.into_iter().map(Pending::Input).collect();
        Self::build(opts, restored, false, call)
    }

    /// An operator restored with `restored`, on a core whose sources have finished
    /// (`sources_done`: barriers then wait for earlier results) or not.
    fn build(
        opts: AsyncOptions<u64, u64>,
        restored: Vec<Pending<u64>>,
        sources_done: bool,
        mut call: impl FnMut(&Timers, u64) -> BoxFuture<u64> + 'static,
    ) -> Self {
        let clock = ManualClock::default();
        let timers = Timers::new(Rc::new(clock.clone()));
        let seen = Rc::new(RefCell::new(Vec::new()));
        let failure = FailureSlot::default();
        let metrics = MetricsHandle::default();
        let parts = AsyncParts {
            name: "lookup".into(),
            partition: 0,
            timers: timers.clone(),
            failure: failure.clone(),
            metrics: metrics.clone(),
            ckpt: None,
            sources_done: Box::new(move || sources_done),
        };
        let core = Rc::new(RefCell::new(AsyncCore::new(
            parts,
            opts,
            Box::new(move |x| call(&timers, x)),
            Box::new(Collect(seen.clone())),
            restored,
        )));
        Self {
            clock,
            seen,
            op: AsyncOp(core.clone()),
            core,
            failure,
            metrics,
        }
    }

    fn at(&self, ms: u64) {
        self.clock.set(ms * MS);
        self.core.borrow_mut().flush(ms * MS);
    }

    fn data(&self) -> Vec<u64> {
        self.seen
            .borrow()
            .iter()
            .filter_map(|s| match s {
                Seen::Data(x) => Some(*x),
                _ => None,
            })
            .collect()
    }

    fn counter(&self, name: &str) -> u64 {
        self.metrics
            .report(CoreId(0))
            .counters
            .get(name)
            .copied()
            .unwrap_or(0)
    }
}

/// Sleeps `delay_ms(x)` then answers `x * 10`.
fn delayed(delay_ms: impl Fn(u64) -> u64 + 'static) -> impl FnMut(&Timers, u64) -> BoxFuture<u64> {
    move |t: &Timers, x: u64| {
        let s = t.sleep_ns(delay_ms(x) * MS);
        Box::pin(async move {
            s.await;
            Ok(vec![x * 10])
        })
    }
}

fn wm(t: u64) -> Control {
    Control::Watermark(Watermark(t))
}

fn barrier(id: u64) -> Control {
    Control::Barrier(Barrier::new(CheckpointId(id)))
}

/// What each barrier archived so far, in order.
fn archived(r: &Rig) -> Vec<Vec<Pending<u64>>> {
    let core = r.core.borrow();
    core.archived.iter().map(|(_, a)| a.clone()).collect()
}

#[test]
fn ordered_results_leave_in_input_order() {
    let mut r = Rig::new(AsyncOptions::new(), vec![], delayed(|x| 50 - x * 10));
    for x in 0..5 {
        r.op.data(x);
    }
    r.at(15); // 4 and 3 are done, but 0 is not: nothing leaves
    assert!(r.data().is_empty());
    r.at(50);
    r.op.end();
    assert_eq!(r.data(), vec![0, 10, 20, 30, 40]);
    assert_eq!(r.seen.borrow().last(), Some(&Seen::End));
}

#[test]
fn unordered_results_leave_as_they_complete_but_never_cross_a_watermark() {
    let opts = AsyncOptions::new().mode(AsyncMode::Unordered);
    let mut r = Rig::new(opts, vec![], delayed(|x| [30, 10, 0, 5][x as usize]));
    r.op.data(0);
    r.op.data(1);
    r.op.control(wm(7));
    r.op.data(2); // ready at once, but behind the watermark
    r.op.data(3);
    r.at(10);
    assert_eq!(r.data(), vec![10]);
    r.at(30);
    assert_eq!(
        *r.seen.borrow(),
        vec![
            Seen::Data(10),
            Seen::Data(0),
            Seen::Control(wm(7)),
            Seen::Data(20),
            Seen::Data(30)
        ]
    );
}

#[test]
fn a_barrier_is_forwarded_at_once_and_its_unemitted_inputs_are_archived() {
    let mut r = Rig::new(AsyncOptions::new(), vec![], delayed(|x| x));
    r.op.data(0); // done at once
    r.op.data(5);
    r.op.data(9);
    let b = Control::Barrier(Barrier::new(CheckpointId(1)));
    r.op.control(b);
    // The barrier did not wait for 5 and 9: they are what the snapshot holds.
    assert_eq!(*r.seen.borrow(), vec![Seen::Data(0), Seen::Control(b)]);
    assert_eq!(
        archived(&r),
        vec![vec![Pending::Input(5), Pending::Input(9)]]
    );
    r.at(9);
    assert_eq!(r.data(), vec![0, 50, 90]);
}

#[test]
fn restore_reissues_exactly_the_archived_inputs_first() {
    let issued = Rc::new(RefCell::new(Vec::new()));
    let log = issued.clone();
    let mut call = delayed(|_| 1);
    let mut r = Rig::new(AsyncOptions::new(), vec![5, 9], move |t, x| {
        log.borrow_mut().push(x);
        call(t, x)
    });
    r.op.data(1);
    assert_eq!(*issued.borrow(), vec![5, 9, 1]);
    r.at(1);
    assert_eq!(r.data(), vec![50, 90, 10]);
    assert_eq!(r.counter("async_restored_requests"), 2);
}

#[test]
fn capacity_is_never_exceeded_and_full_means_blocked() {
    let opts = AsyncOptions::new().capacity(Capacity::Fixed(2));
    let mut r = Rig::new(opts, vec![], delayed(|x| x + 1));
    r.op.data(0);
    assert!(!r.core.borrow().is_blocked());
    r.op.data(1);
    assert!(r.core.borrow().is_blocked());
    // A driver's batch may overshoot: the extra input waits and is not issued.
    r.op.data(2);
    r.op.data(3);
    assert_eq!(r.core.borrow().in_flight(), 2);
    // A barrier is never held back by a full operator.
    let b = Control::Barrier(Barrier::new(CheckpointId(1)));
    r.op.control(b);
    assert_eq!(*r.seen.borrow(), vec![Seen::Control(b)]);
    let inputs = (0..4).map(Pending::Input).collect::<Vec<_>>();
    assert_eq!(archived(&r), vec![inputs]);
    for ms in 1..=10 {
        r.at(ms);
        assert!(r.core.borrow().in_flight() <= r.core.borrow().limit());
    }
    assert_eq!(r.data(), vec![0, 10, 20, 30]);
    assert!(!r.core.borrow().is_blocked());
    assert_eq!(r.counter("async_in_flight_max"), 2);
}

fn never(_: &Timers, _: u64) -> BoxFuture<u64> {
    Box::pin(std::future::pending())
}

#[test]
fn timeout_fails_the_job_by_default_naming_operator_request_and_timeout() {
    let opts = AsyncOptions::new().timeout(Duration::from_millis(100));
    let mut r = Rig::new(opts, vec![], never);
    r.op.data(7);
    r.at(99);
    assert!(r.failure.take().is_none());
    r.at(100);
    match r.failure.take() {
        Some(EngineError::Operator {
            operator, reason, ..
        }) => {
            assert_eq!(operator, "lookup");
            assert!(reason.contains("request 0 timed out"), "{reason}");
            assert!(reason.contains("100ms"), "{reason}");
        }
        other => panic!("expected an operator failure, got {other:?}"),
    }
    assert_eq!(r.counter("async_timeouts"), 1);
}

#[test]
fn timeout_drop_counts_and_fallback_emits_the_fallback() {
    let opts = AsyncOptions::new()
        .timeout(Duration::from_millis(10))
        .on_timeout(OnTimeout::Drop);
    let mut r = Rig::new(opts, vec![], never);
    r.op.data(1);
    r.op.data(2);
    r.at(10);
    assert!(r.data().is_empty());
    assert_eq!(r.counter("async_dropped"), 2);
    assert!(r.failure.take().is_none());
    assert!(r.core.borrow().is_drained());

    let opts = AsyncOptions::new()
        .timeout(Duration::from_millis(10))
        .on_timeout(OnTimeout::Fallback(std::sync::Arc::new(|x: &u64| {
            vec![x + 1000]
        })));
    let mut r = Rig::new(opts, vec![], never);
    r.op.data(1);
    r.at(10);
    assert_eq!(r.data(), vec![1001]);
}

/// A call completed from outside (by the test), after its timeout.
#[test]
fn a_completion_after_the_timeout_is_ignored() {
    let gate = Rc::new(Cell::new(false));
    let wakers: Rc<RefCell<Vec<std::task::Waker>>> = Rc::default();
    let (g, w) = (gate.clone(), wakers.clone());
    let opts = AsyncOptions::new()
        .timeout(Duration::from_millis(10))
        .on_timeout(OnTimeout::Fallback(std::sync::Arc::new(|_: &u64| vec![0])));
    let mut r = Rig::new(opts, vec![], move |_, x| {
        let (g, w) = (g.clone(), w.clone());
        Box::pin(std::future::poll_fn(move |cx| {
            if g.get() {
                std::task::Poll::Ready(Ok(vec![x]))
            } else {
                w.borrow_mut().push(cx.waker().clone());
                std::task::Poll::Pending
            }
        }))
    });
    r.op.data(42);
    r.at(10);
    gate.set(true);
    wakers.borrow_mut().drain(..).for_each(|w| w.wake());
    r.at(11);
    r.at(12);
    assert_eq!(
        r.data(),
        vec![0],
        "the fallback once, the late answer never"
    );
}

#[test]
fn retries_back_off_exponentially_on_the_job_clock() {
    let attempts = Rc::new(RefCell::new(Vec::new()));
    let log = attempts.clone();
    let opts = AsyncOptions::new()
        .retry(RetryStrategy::Exponential {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(100),
            multiplier: 2.0,
            max_attempts: 5,
        })
        .retry_on_result(|r: &[u64]| r.is_empty());
    let mut r = Rig::new(opts, vec![], move |t, x| {
        log.borrow_mut().push(t.now_ns() / MS);
        let n = log.borrow().len();
        Box::pin(async move {
            match n {
                1 => Err(AsyncError::Service("busy".into())),
                2 => Ok(vec![]), // an empty result is retried too
                _ => Ok(vec![x]),
            }
        })
    });
    r.op.data(3);
    for ms in 0..=40 {
        r.at(ms);
    }
    assert_eq!(*attempts.borrow(), vec![0, 10, 30]);
    assert_eq!(r.data(), vec![3]);
    assert_eq!(r.counter("async_retries"), 2);
}

#[test]
fn retries_stop_at_the_timeout_which_covers_every_attempt() {
    let opts = AsyncOptions::new()
        .timeout(Duration::from_millis(25))
        .on_timeout(OnTimeout::Drop)
        .retry(RetryStrategy::Fixed {
            delay: Duration::from_millis(10),
            max_attempts: 10,
        });
    let calls = Rc::new(Cell::new(0));
    let c = calls.clone();
    let mut r = Rig::new(opts, vec![], move |_, _| {
        c.set(c.get() + 1);
        Box::pin(async { Err(AsyncError::Service("down".into())) })
    });
    r.op.data(1);
    for ms in 0..=30 {
        r.at(ms);
    }
    // Attempts at 0, 10, 20; a retry at 30 would pass the deadline at 25.
    assert_eq!(calls.get(), 3);
    assert!(r.failure.take().is_some(), "the last error fails the job");
}

#[test]
fn an_open_breaker_fails_requests_fast_to_the_timeout_policy_then_probes() {
    let calls = Rc::new(Cell::new(0u32));
    let c = calls.clone();
    let opts = AsyncOptions::new()
        .on_timeout(OnTimeout::Fallback(std::sync::Arc::new(|_: &u64| {
            vec![999]
        })))
        .retry(RetryStrategy::Fixed {
            delay: Duration::from_millis(1),
            max_attempts: 3,
        })
        .breaker(BreakerConfig {
            failures: 2,
            cooldown: Duration::from_millis(100),
        });
    let mut r = Rig::new(opts, vec![], move |_, x| {
        c.set(c.get() + 1);
        let n = c.get();
        Box::pin(async move {
            if n <= 2 {
                Err(AsyncError::Service("down".into()))
            } else {
                Ok(vec![x])
            }
        })
    });
    r.op.data(1); // attempt 1 fails at 0, attempt 2 at 1 ms: the breaker opens
    r.at(1);
    r.at(2); // the third attempt is failed fast
    assert_eq!(calls.get(), 2);
    assert_eq!(r.data(), vec![999]);
    r.at(50);
    r.op.data(2); // still open: no call
    assert_eq!(calls.get(), 2);
    r.at(101);
    r.op.data(3); // the half-open probe goes out and succeeds: closed again
    r.op.data(4);
    assert_eq!(calls.get(), 4);
    assert_eq!(r.data(), vec![999, 999, 3, 4]);
    assert_eq!(r.counter("async_breaker_opened"), 1);
    assert_eq!(r.counter("async_breaker_rejected"), 2);
    assert!(r.failure.take().is_none());
}

#[test]
fn auto_capacity_follows_littles_law_within_bounds() {
    let opts = AsyncOptions::new().capacity(Capacity::Auto { min: 2, max: 50 });
    let mut r = Rig::new(opts, vec![], delayed(|_| 10));
    r.at(0);
    // 1000 requests/s at 10 ms each: N = λ·t = 10, with headroom 15.
    for ms in 1..=300u64 {
        r.op.data(ms);
        r.at(ms);
    }
    let limit = r.core.borrow().limit();
    assert!((10..=20).contains(&limit), "chose {limit}");
    assert!(r.counter("async_capacity_auto_max") >= 10);
}

#[test]
fn io_time_completions_and_time_at_full_capacity_are_counted() {
    // Capacity 2, every request takes 10 ms: four requests at t=0 keep both slots taken
    // from 0 to 20 ms (the second pair is issued at 10 ms), then the operator drains.
    let mut r = Rig::new(
        AsyncOptions::new().capacity(Capacity::Fixed(2)),
        vec![],
        delayed(|_| 10),
    );
    for x in 0..4 {
        r.op.data(x);
    }
    r.at(10);
    r.at(20);
    r.op.end();
    assert_eq!(r.data(), vec![0, 10, 20, 30]);
    assert_eq!(r.counter("async_completed"), 4);
    assert_eq!(r.counter("async_io_time_us_total"), 4 * 10_000);
    assert_eq!(r.counter("async_full_us"), 20_000);
    let io = r.metrics.report(CoreId(0)).io_time;
    assert_eq!(io.len(), 4);
    assert!(io.value_at_quantile(0.5).abs_diff(10 * MS) < 10 * MS / 100);
}

/// Unordered mode keeps Flink's segments: a result leaves after every watermark and
/// barrier its input followed and before every watermark its input preceded. A barrier
/// itself goes ahead at once (it waits only when the core's sources have finished):
/// what it overtakes — the inputs whose results are not out and the watermarks not yet
/// forwarded — is exactly what it archives, in input order, so a restore replays the
/// sequence that followed the barrier downstream. Seeded random mixes of records (each
/// with its own delay), watermarks and barriers at capacities 1 to 4.
#[test]
fn unordered_results_stay_inside_their_segments_and_barriers_archive_what_they_overtake() {
    use crate::splitmix::SplitMix64;
    // Barriers that archived an input, a watermark; barriers on a finished core.
    let (mut with_input, mut with_watermark, mut waited) = (0, 0, 0);
    for seed in 0..300u64 {
        let mut rng = SplitMix64(seed);
        let delays: Rc<RefCell<Vec<u64>>> = Rc::default();
        let d = delays.clone();
        let opts = AsyncOptions::new()
            .mode(AsyncMode::Unordered)
            .capacity(Capacity::Fixed(1 + (seed % 4) as usize));
        let sources_done = seed % 5 == 0;
        let mut r = Rig::build(opts, vec![], sources_done, {
            let mut call = delayed(move |x| d.borrow()[x as usize]);
            move |t, x| call(t, x)
        });
        // The input: each element as the operator received it.
        let mut input: Vec<Seen<u64>> = Vec::new();
        let mut ms = 0;
        for _ in 0..80 {
            let c = match rng.next_u64() % 10 {
                0 => Some(wm(input.len() as u64)),
                1 => Some(barrier(input.len() as u64)),
                2 | 3 => {
                    ms += 1;
                    r.at(ms);
                    None
                }
                _ => {
                    let x = delays.borrow().len() as u64;
                    delays.borrow_mut().push(rng.next_u64() % 6);
                    input.push(Seen::Data(x));
                    r.op.data(x);
                    None
                }
            };
            if let Some(c) = c {
                input.push(Seen::Control(c));
                r.op.control(c);
            }
        }
        r.op.end();
        while !r.core.borrow().is_drained() {
            ms += 1;
            r.at(ms);
        }
        let out = r.seen.borrow();
        let pos_in = |s: &Seen<u64>| input.iter().position(|x| x == s).unwrap();
        let pos_out = |s: &Seen<u64>| out.iter().position(|x| x == s);
        for (i, item) in input.iter().enumerate() {
            let Seen::Data(x) = item else { continue };
            let at = pos_out(&Seen::Data(x * 10)).expect("every result leaves");
            for (j, c) in input.iter().enumerate() {
                let Seen::Control(ctl) = c else { continue };
                let c_at = pos_out(c).expect("every control item is forwarded");
                if j < i {
                    assert!(c_at < at, "seed {seed}: result of {x} before {ctl:?}");
                } else if matches!(ctl, Control::Watermark(_)) {
                    assert!(at < c_at, "seed {seed}: result of {x} after {ctl:?}");
                }
            }
        }
        for (n, (id, got)) in r.core.borrow().archived.iter().enumerate() {
            let b = Seen::Control(barrier(id.0));
            let (b_in, b_out) = (pos_in(&b), pos_out(&b).unwrap());
            let mut want = Vec::new();
            for item in &input[..b_in] {
                match item {
                    Seen::Data(x) if pos_out(&Seen::Data(x * 10)).unwrap() > b_out => {
                        want.push(Pending::Input(*x))
                    }
                    Seen::Control(Control::Watermark(w)) if pos_out(item).unwrap() > b_out => {
                        want.push(Pending::Watermark(*w))
                    }
                    _ => {}
                }
            }
            assert_eq!(*got, want, "seed {seed}: what barrier #{n} archived");
            if sources_done {
                assert!(
                    got.is_empty(),
                    "seed {seed}: a finished core's barrier waits"
                );
                waited += 1;
            }
            with_input += got.iter().any(|p| matches!(p, Pending::Input(_))) as u32;
            with_watermark += got.iter().any(|p| matches!(p, Pending::Watermark(_))) as u32;
        }
    }
    assert!(
        with_input > 0 && with_watermark > 0 && waited > 0,
        "every case is exercised"
    );
}

#[test]
fn a_barrier_goes_ahead_of_a_queued_watermark_which_a_restore_replays_in_place() {
    let opts = || AsyncOptions::new().mode(AsyncMode::Unordered);
    let mut r = Rig::new(opts(), vec![], delayed(|x| [10, 1][x as usize]));
    r.op.data(0);
    r.op.control(wm(5)); // waits for the result of 0
    r.op.data(1); // its result waits for the watermark
    r.op.control(barrier(1));
    assert_eq!(*r.seen.borrow(), vec![Seen::Control(barrier(1))]);
    let archive = vec![
        Pending::Input(0),
        Pending::Watermark(Watermark(5)),
        Pending::Input(1),
    ];
    assert_eq!(archived(&r), vec![archive.clone()]);
    r.at(10);
    let after_barrier = vec![Seen::Data(0), Seen::Control(wm(5)), Seen::Data(10)];
    assert_eq!(r.seen.borrow()[1..], after_barrier[..]);

    // Restored from that checkpoint: the same sequence follows the barrier again, the
    // watermark between the same results (not lost, not moved ahead of the result of 0).
    let restored = replay(vec![(vec![0, 1], vec![(1, 5)])]);
    assert_eq!(restored, archive);
    let r = Rig::build(opts(), restored, false, delayed(|x| [10, 1][x as usize]));
    r.at(0); // the first round issues the restored inputs
    r.at(10);
    assert_eq!(*r.seen.borrow(), after_barrier);
    assert_eq!(r.counter("async_restored_requests"), 2);
}

#[test]
fn a_barrier_that_waits_archives_nothing_that_came_after_it() {
    // Every source on the core finished: the barrier waits for the result of 0; 1 comes
    // after it (a driver's batch overshoots) and is not part of the checkpoint (the
    // upstream replays it after a restore, so archiving it would duplicate it).
    let mut r = Rig::build(AsyncOptions::new(), vec![], true, delayed(|_| 5));
    r.op.data(0);
    r.op.control(barrier(1));
    r.op.data(1);
    assert!(r.seen.borrow().is_empty());
    r.at(5);
    assert_eq!(archived(&r), vec![vec![]]);
    assert_eq!(
        r.seen.borrow()[..2],
        [Seen::Data(0), Seen::Control(barrier(1))]
    );
    r.at(10);
    assert_eq!(r.data(), vec![0, 10]);
}

#[test]
fn several_restored_partitions_replay_their_inputs_then_their_highest_watermark() {
    // At the old parallelism one archive is replayed exactly (idle markers included).
    let idle = Watermark::IDLE.0;
    assert_eq!(
        replay(vec![(vec![7], vec![(0, 3), (1, idle)])]),
        vec![
            Pending::Watermark(Watermark(3)),
            Pending::Input(7),
            Pending::Watermark(Watermark::IDLE)
        ]
    );
    // Merged: partition 1's watermark 9 may be above partition 0's input 2, so no
    // watermark comes before an input; the highest real one comes last.
    assert_eq!(
        replay(vec![
            (vec![1, 2], vec![(1, 4)]),
            (vec![3], vec![(0, 9), (1, idle)])
        ]),
        vec![
            Pending::Input(1),
            Pending::Input(2),
            Pending::Input(3),
            Pending::Watermark(Watermark(9))
        ]
    );
    assert_eq!(replay::<u64>(vec![]), vec![]);
}
