//! The alignment rules of a receiver, one test each: exactly-once holds an input (a ring
//! or the local one) that delivered a barrier until every input has; at-least-once holds
//! nothing; unaligned forwards the barrier at once (or after `aligned_timeout`) and
//! persists what still arrives ahead of it on the other inputs; an ended input releases.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use super::exchange::{Alignment, ChannelCodec, Receiver, RecvInput, Routed};
use super::ops::testing::{Collect, Seen};
use super::ops::BoxEmit;
use crate::checkpoint::core::CoreCheckpoints;
use crate::clock::MonotonicClock;
use crate::config::CheckpointMode;
use crate::ids::{CheckpointId, CoreId};
use crate::message::{Barrier, Control, Message};
use crate::ring::{channel, Doorbell, Producer};

type Ring = Producer<Message<Routed<u64>>>;

struct Rig {
    rx: Receiver<u64>,
    seen: Rc<RefCell<Vec<Seen<u64>>>>,
    remote: Ring,
    core: Rc<RefCell<CoreCheckpoints>>,
}

/// A receiver on core 0 with input 0 from core 1 (a ring) and input 1 local.
fn rig(mode: CheckpointMode, unaligned_after_ns: Option<u64>) -> Rig {
    rig_with_burst(mode, unaligned_after_ns, 1024)
}

/// `rig`, taking about `burst` records per input and poll.
fn rig_with_burst(mode: CheckpointMode, unaligned_after_ns: Option<u64>, burst: usize) -> Rig {
    let (tx, cons) = channel::<Message<Routed<u64>>>(64);
    let seen = Rc::new(RefCell::new(Vec::new()));
    let chains: Vec<Option<BoxEmit<u64>>> = vec![Some(Box::new(Collect(seen.clone())))];
    let core = Rc::new(RefCell::new(CoreCheckpoints::new(0, mode, false, 4)));
    let participant =
        unaligned_after_ns.map(|_| CoreCheckpoints::register(&core, "exchange `x` on cpu0".into()));
    let align = Alignment {
        hold: mode == CheckpointMode::ExactlyOnce,
        unaligned_after_ns,
        core: core.clone(),
        participant,
        clock: MonotonicClock::new(Instant::now()),
        name: "x".into(),
        core_index: 0,
    };
    let inputs = vec![
        RecvInput {
            ring: Some(cons),
            producer: Arc::new(Doorbell::new()),
            core: CoreId(1),
        },
        RecvInput {
            ring: None,
            producer: Arc::new(Doorbell::new()),
            core: CoreId(0),
        },
    ];
    let codec = Arc::new(ChannelCodec::<u64>::new(|_, old, _| old));
    let rx =
        Receiver::new(inputs, chains, burst, Some(align)).with_channel_state(Some(codec), vec![]);
    Rig {
        rx,
        seen,
        remote: tx,
        core,
    }
}

fn b(id: u64) -> Barrier {
    Barrier::new(CheckpointId(id))
}

fn data(v: &[u64]) -> Message<Routed<u64>> {
    Message::Data(v.iter().map(|x| (0, *x)).collect())
}

fn take(seen: &Rc<RefCell<Vec<Seen<u64>>>>) -> Vec<Seen<u64>> {
    std::mem::take(&mut *seen.borrow_mut())
}

#[test]
fn exactly_once_holds_a_ring_input_after_its_barrier_until_all_inputs_delivered_it() {
    let mut r = rig(CheckpointMode::ExactlyOnce, None);
    r.remote.try_push(data(&[1])).unwrap();
    r.remote.try_push(Message::Barrier(b(1))).unwrap();
    r.remote.try_push(data(&[2])).unwrap();
    r.rx.poll();
    assert_eq!(
        take(&r.seen),
        vec![Seen::Data(1)],
        "2 is after the barrier: held"
    );
    r.rx.poll();
    assert!(
        take(&r.seen).is_empty(),
        "still held while the local input owes the barrier"
    );
    r.rx.deliver(0, 10);
    r.rx.on_control(1, Control::Barrier(b(1)));
    r.rx.poll();
    assert_eq!(
        take(&r.seen),
        vec![
            Seen::Data(10),
            Seen::Control(Control::Barrier(b(1))),
            Seen::Data(2)
        ]
    );
}

#[test]
fn exactly_once_holds_the_local_input_in_a_bounded_queue() {
    let mut r = rig(CheckpointMode::ExactlyOnce, None);
    r.rx.on_control(1, Control::Barrier(b(1)));
    for x in 0..5000 {
        r.rx.deliver(0, x);
    }
    assert!(
        take(&r.seen).is_empty(),
        "local records after its barrier are held"
    );
    assert!(r.rx.held_full(), "the held queue reports full at its bound");
    r.remote.try_push(Message::Barrier(b(1))).unwrap();
    r.rx.poll();
    let seen = take(&r.seen);
    assert_eq!(seen[0], Seen::Control(Control::Barrier(b(1))));
    assert_eq!(seen.len(), 5001);
    assert_eq!(seen[5000], Seen::Data(4999), "held records follow in order");
    assert!(!r.rx.held_full());
}

#[test]
fn at_least_once_holds_nothing_and_forwards_the_barrier_once_all_delivered_it() {
    let mut r = rig(CheckpointMode::AtLeastOnce, None);
    r.remote.try_push(Message::Barrier(b(1))).unwrap();
    r.remote.try_push(data(&[2])).unwrap();
    r.rx.poll();
    assert_eq!(
        take(&r.seen),
        vec![Seen::Data(2)],
        "records overtake the barrier"
    );
    r.rx.on_control(1, Control::Barrier(b(1)));
    assert_eq!(take(&r.seen), vec![Seen::Control(Control::Barrier(b(1)))]);
}

#[test]
fn an_ended_input_releases_the_alignment() {
    let mut r = rig(CheckpointMode::ExactlyOnce, None);
    r.rx.on_control(1, Control::Barrier(b(1)));
    r.rx.deliver(0, 5);
    r.remote.try_push(data(&[1])).unwrap();
    r.remote.try_push(Message::End).unwrap();
    r.rx.poll();
    assert_eq!(
        take(&r.seen),
        vec![
            Seen::Data(1),
            Seen::Control(Control::Barrier(b(1))),
            Seen::Data(5)
        ]
    );
}

#[test]
fn unaligned_forwards_at_once_and_persists_what_arrives_ahead_of_the_barrier() {
    let mut r = rig(CheckpointMode::ExactlyOnce, Some(0));
    r.core.borrow_mut().on_trigger(CheckpointId(1), 0);
    // The ring is full of records sent before core 1's barrier.
    r.remote.try_push(data(&[1, 2])).unwrap();
    r.remote.try_push(data(&[3])).unwrap();
    r.remote.try_push(Message::Barrier(b(1))).unwrap();
    r.remote.try_push(data(&[4])).unwrap();
    r.rx.on_control(1, Control::Barrier(b(1)));
    assert_eq!(
        take(&r.seen),
        vec![Seen::Control(Control::Barrier(b(1)))],
        "the barrier goes ahead of the in-flight records"
    );
    r.rx.poll();
    assert_eq!(
        take(&r.seen),
        vec![Seen::Data(1), Seen::Data(2), Seen::Data(3), Seen::Data(4)],
        "in-flight records are still processed, once, in order, and nothing is held"
    );
    assert_eq!(
        r.core.borrow().channel_records(CheckpointId(1)),
        Some(3),
        "exactly the records ahead of core 1's barrier are channel state"
    );
}

#[test]
fn unaligned_with_a_timeout_starts_aligned_and_switches_when_it_expires() {
    let mut r = rig(CheckpointMode::ExactlyOnce, Some(1));
    r.core.borrow_mut().on_trigger(CheckpointId(1), 0);
    r.rx.on_control(1, Control::Barrier(b(1)));
    r.rx.deliver(0, 9);
    assert!(
        take(&r.seen).is_empty(),
        "aligned first: the local input is held"
    );
    assert!(r.rx.deadline().is_some());
    std::thread::sleep(std::time::Duration::from_millis(1));
    r.remote.try_push(data(&[1])).unwrap();
    r.remote.try_push(Message::Barrier(b(1))).unwrap();
    r.rx.poll();
    let seen = take(&r.seen);
    assert_eq!(
        seen,
        vec![
            Seen::Control(Control::Barrier(b(1))),
            Seen::Data(9),
            Seen::Data(1)
        ]
    );
    assert_eq!(r.core.borrow().channel_records(CheckpointId(1)), Some(1));
}

/// Regression (issue 13, item 1): records read ahead for one unaligned checkpoint and not
/// yet processed when the next checkpoint's barrier goes ahead were in neither that
/// checkpoint's state nor its channel state, so a restore from it lost them.
#[test]
fn a_backlog_read_ahead_for_one_checkpoint_is_channel_state_of_the_next() {
    let mut r = rig_with_burst(CheckpointMode::ExactlyOnce, Some(0), 4);
    r.core.borrow_mut().on_trigger(CheckpointId(1), 0);
    for x in 0..5 {
        r.remote.try_push(data(&[2 * x, 2 * x + 1])).unwrap();
    }
    r.remote.try_push(Message::Barrier(b(1))).unwrap();
    r.rx.on_control(1, Control::Barrier(b(1)));
    assert_eq!(take(&r.seen), vec![Seen::Control(Control::Barrier(b(1)))]);
    // One poll reads the whole ring ahead (to barrier 1) but processes only a burst.
    r.rx.poll();
    let first = take(&r.seen);
    assert_eq!(
        r.core.borrow().channel_records(CheckpointId(1)),
        Some(10),
        "the ten records ahead of core 1's barrier 1"
    );
    assert!(first.len() < 10, "a backlog is left: {first:?}");
    // Checkpoint 2's barrier arrives on the local input while the backlog waits.
    r.core.borrow_mut().on_trigger(CheckpointId(2), 0);
    r.rx.on_control(1, Control::Barrier(b(2)));
    r.remote.try_push(data(&[10])).unwrap();
    r.remote.try_push(Message::Barrier(b(2))).unwrap();
    let mut rest = take(&r.seen);
    for _ in 0..10 {
        r.rx.poll();
        rest.extend(take(&r.seen));
    }
    let at = rest
        .iter()
        .position(|s| *s == Seen::Control(Control::Barrier(b(2))))
        .expect("barrier 2 forwarded");
    let after_barrier_2 = rest.len() - at - 1;
    assert_eq!(
        r.core.borrow().channel_records(CheckpointId(2)),
        Some(after_barrier_2 as u64),
        "every record processed after barrier 2 but sent before it is channel state of checkpoint 2: {rest:?}"
    );
    assert_eq!(rest.last(), Some(&Seen::Data(10)));
    let all: Vec<u64> = first
        .iter()
        .chain(rest.iter())
        .filter_map(|s| match s {
            Seen::Data(x) => Some(*x),
            _ => None,
        })
        .collect();
    assert_eq!(all, (0..=10).collect::<Vec<_>>(), "each once, in order");
}

/// Regression (issue 13, item 1): the final checkpoint's barrier went ahead unaligned, so
/// the records still in flight on the other inputs were processed after it, into output
/// that no checkpoint commits; the transactional sinks then dropped them at the end of
/// the run, which exited 0. The final barrier aligns even with unaligned checkpoints on.
#[test]
fn the_final_barrier_is_aligned_even_with_unaligned_checkpoints() {
    let mut r = rig(CheckpointMode::ExactlyOnce, Some(0));
    r.core.borrow_mut().on_trigger(CheckpointId(1), 0);
    let last = Barrier {
        id: CheckpointId(1),
        last: true,
    };
    r.remote.try_push(data(&[1, 2])).unwrap();
    r.remote.try_push(Message::Barrier(last)).unwrap();
    r.rx.on_control(1, Control::Barrier(last));
    assert!(
        take(&r.seen).is_empty(),
        "the final barrier waits for the other input"
    );
    assert_eq!(r.rx.deadline(), None, "and never switches to unaligned");
    r.rx.poll();
    assert_eq!(
        take(&r.seen),
        vec![
            Seen::Data(1),
            Seen::Data(2),
            Seen::Control(Control::Barrier(last))
        ],
        "everything ahead of it is processed before it"
    );
    assert_eq!(r.core.borrow().channel_records(CheckpointId(1)), Some(0));
}
