//! Each join against a nested-loop reference on random out-of-order input with late
//! records (the reference drops a record late by the same rule, then pairs by loops).

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::super::ops::testing::Seen;
use super::super::timers::testing::Harness;
use super::*;

#[derive(Clone, Debug)]
enum Ev {
    L(u32, u64, u32),
    R(u32, u64, u32),
    Wm(u64),
}

fn input(seed: u64) -> Vec<Ev> {
    let mut rng = StdRng::seed_from_u64(seed);
    let (mut clock, mut max, mut evs) = (0u64, 0u64, Vec::new());
    for id in 0..200u32 {
        clock += rng.gen_range(0..20);
        let ts = clock.saturating_sub(rng.gen_range(0..80));
        max = max.max(ts);
        let k = rng.gen_range(0..3);
        evs.push(if rng.gen_bool(0.5) {
            Ev::L(k, ts, id)
        } else {
            Ev::R(k, ts, id)
        });
        if rng.gen_bool(0.2) {
            evs.push(Ev::Wm(max.saturating_sub(rng.gen_range(0..40))));
        }
    }
    evs
}

type Pair = (u32, u32, u32);

fn run(kind: JoinKind, evs: &[Ev]) -> Vec<Pair> {
    let mut h = Harness::new(8, move |init| {
        JoinProcess::declare(
            init,
            kind,
            Arc::new(|l: &(u64, u32)| l.0),
            Arc::new(|r: &(u64, u32)| r.0),
            Arc::new(|k: &u32, l: &(u64, u32), r: &(u64, u32)| (*k, l.1, r.1)),
        )
    });
    for e in evs {
        match *e {
            Ev::L(k, ts, id) => h.record(k, Side::Left((ts, id))),
            Ev::R(k, ts, id) => h.record(k, Side::Right((ts, id))),
            Ev::Wm(w) => h.watermark(w),
        }
    }
    h.end();
    let mut got: Vec<Pair> = h
        .out
        .borrow()
        .iter()
        .filter_map(|s| match s {
            Seen::Data(p) => Some(*p),
            _ => None,
        })
        .collect();
    got.sort_unstable();
    got
}

/// Drops late records (the operator's rule: `late_at(ts) <= watermark`), then pairs
/// every left with every right of the same key for which `pairs` holds.
fn reference(
    evs: &[Ev],
    late_at: impl Fn(u64) -> u64,
    pairs: impl Fn(u64, u64) -> bool,
) -> Vec<Pair> {
    let mut wm: Option<u64> = None;
    let (mut ls, mut rs) = (Vec::new(), Vec::new());
    for e in evs {
        match *e {
            Ev::Wm(w) => wm = Some(wm.map_or(w, |x| x.max(w))),
            Ev::L(k, ts, id) if !wm.is_some_and(|w| late_at(ts) <= w) => ls.push((k, ts, id)),
            Ev::R(k, ts, id) if !wm.is_some_and(|w| late_at(ts) <= w) => rs.push((k, ts, id)),
            _ => {}
        }
    }
    let mut want = Vec::new();
    for (lk, lt, li) in &ls {
        for (rk, rt, ri) in &rs {
            if lk == rk && pairs(*lt, *rt) {
                want.push((*lk, *li, *ri));
            }
        }
    }
    want.sort_unstable();
    want
}

#[test]
fn interval_join_matches_the_nested_loop_reference() {
    for (lower, upper) in [(-30i64, 20i64), (0, 50), (-60, -10)] {
        for seed in 0..30 {
            let evs = input(seed);
            let got = run(JoinKind::Interval { lower, upper }, &evs);
            let want = reference(
                &evs,
                |t| t,
                |l, r| l as i64 + lower <= r as i64 && r as i64 <= l as i64 + upper,
            );
            assert!(!want.is_empty(), "seed {seed}");
            assert_eq!(got, want, "[{lower}, {upper}] seed {seed}");
        }
    }
}

#[test]
fn window_join_matches_the_nested_loop_reference() {
    for seed in 0..30 {
        let evs = input(seed);
        let got = run(JoinKind::Window { size: 50 }, &evs);
        let want = reference(&evs, |t| t - t % 50 + 49, |l, r| l / 50 == r / 50);
        assert!(!want.is_empty(), "seed {seed}");
        assert_eq!(got, want, "seed {seed}");
    }
}

#[test]
fn regular_join_pairs_everything_once_and_ttl_forgets() {
    for seed in 0..10 {
        let evs = input(seed);
        let got = run(JoinKind::Regular { ttl: None }, &evs);
        let want = reference(&evs, |_| u64::MAX, |_, _| true);
        assert_eq!(got, want, "seed {seed}");
    }
    // With a TTL, records buffered before it expired do not join later ones.
    let mut h = Harness::new(4, |init| {
        JoinProcess::declare(
            init,
            JoinKind::Regular { ttl: Some(1) },
            Arc::new(|_: &u32| 0),
            Arc::new(|_: &u32| 0),
            Arc::new(|k: &u32, l: &u32, r: &u32| (*k, *l, *r)),
        )
    });
    h.record(1u32, Side::Left(10u32));
    h.record(1, Side::Right(20));
    assert!(h.fire_processing(u64::MAX) >= 1, "the TTL timers fire");
    h.record(1, Side::Right(21));
    h.end();
    let out: Vec<_> = h
        .out
        .borrow()
        .iter()
        .filter_map(|s| match s {
            Seen::Data(p) => Some(*p),
            _ => None,
        })
        .collect();
    assert_eq!(out, vec![(1, 10, 20)]);
}
