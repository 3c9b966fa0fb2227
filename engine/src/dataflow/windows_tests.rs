//! Each window kind against a brute-force reference on random out-of-order input with
//! watermarks and late records. The references share no code with the operator: they
//! keep every accepted record and recompute each window from its records.

use std::collections::BTreeMap;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::super::ops::testing::Seen;
use super::super::timers::testing::Harness;
use super::*;

/// An input event: a record (key, event time, value) or a watermark.
#[derive(Clone, Debug)]
enum Ev {
    Rec(u32, u64, i64),
    Wm(u64),
}

/// Out-of-order records around an advancing clock, with watermarks that trail the
/// maximum by less than the disorder (so some records are late).
fn input(seed: u64, n: usize) -> Vec<Ev> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut evs = Vec::new();
    let mut clock = 0u64;
    let mut max = 0u64;
    for _ in 0..n {
        clock += rng.gen_range(0..30);
        let ts = clock.saturating_sub(rng.gen_range(0..120));
        max = max.max(ts);
        evs.push(Ev::Rec(rng.gen_range(0..4), ts, rng.gen_range(1..100)));
        if rng.gen_bool(0.15) {
            evs.push(Ev::Wm(max.saturating_sub(rng.gen_range(0..60))));
        }
    }
    evs
}

type Res = (u32, i64, u64, i64);

/// A reference session: start, end, sum and its records.
type RefSession = (u64, u64, i64, Vec<(u64, i64)>);

fn run(spec: WindowSpec, evs: &[Ev]) -> (Vec<Res>, Vec<(u32, u64, i64)>, u64) {
    let mut h = Harness::new(16, move |init| {
        WindowProcess::declare(
            init,
            spec,
            Arc::new(SumBy(|v: &(u64, i64)| v.1)),
            Arc::new(|v: &(u64, i64)| v.0),
            true,
        )
    });
    for e in evs {
        match *e {
            Ev::Rec(k, ts, v) => h.record(k, (ts, v)),
            Ev::Wm(w) => h.watermark(w),
        }
    }
    h.end();
    let mut res = Vec::new();
    let mut late = Vec::new();
    for s in h.out.borrow().iter() {
        match s {
            Seen::Data(WindowOutput::Result(r)) => res.push((r.key, r.start, r.end, r.value)),
            Seen::Data(WindowOutput::Late((ts, v))) => late.push((0, *ts, *v)),
            _ => {}
        }
    }
    res.sort_unstable();
    late.sort_unstable();
    let counted = h
        .metrics()
        .report(crate::ids::CoreId(0))
        .counters
        .get("late_records")
        .copied()
        .unwrap_or(0);
    (res, late, counted)
}

/// Brute force for tumbling/sliding windows: per window, the set of records accepted
/// into it; fired when the watermark passes its end − 1, again on each accepted late
/// record, never after end − 1 + lateness.
fn reference_panes(
    size: u64,
    slide: u64,
    lateness: u64,
    evs: &[Ev],
) -> (Vec<Res>, Vec<(u32, u64, i64)>) {
    let mut wins: BTreeMap<(u32, i64), Vec<i64>> = BTreeMap::new();
    let mut wm: Option<u64> = None;
    let mut res = Vec::new();
    let mut late = Vec::new();
    let sum = |v: &Vec<i64>| v.iter().sum::<i64>();
    let mut advance = |to: u64, wm: &mut Option<u64>, wins: &BTreeMap<(u32, i64), Vec<i64>>| {
        if wm.is_some_and(|w| w >= to) {
            return;
        }
        for ((k, s), v) in wins {
            let end = (s + size as i64) as u64;
            let fire_at = end - 1;
            if fire_at <= to && wm.map_or(true, |w| fire_at > w) {
                res.push((*k, *s, end, sum(v)));
            }
        }
        *wm = Some(to);
    };
    let mut refires = Vec::new();
    for e in evs {
        match *e {
            Ev::Wm(w) => advance(w, &mut wm, &wins),
            Ev::Rec(k, ts, v) => {
                // Every multiple of the slide whose window holds `ts`, also before 0.
                let (ts_i, size_i, slide_i) = (ts as i64, size as i64, slide as i64);
                let starts: Vec<i64> = (-(size_i / slide_i) - 1..=ts_i / slide_i)
                    .map(|i| i * slide_i)
                    .filter(|s| *s <= ts_i && s + size_i > ts_i)
                    .collect();
                let end = |s: i64| (s + size_i) as u64;
                let alive: Vec<i64> = starts
                    .iter()
                    .copied()
                    .filter(|s| !wm.is_some_and(|w| end(*s) - 1 + lateness <= w))
                    .collect();
                if alive.is_empty() {
                    late.push((0, ts, v));
                    continue;
                }
                for s in alive {
                    let set = wins.entry((k, s)).or_default();
                    set.push(v);
                    if wm.is_some_and(|w| end(s) - 1 <= w) {
                        refires.push((k, s, end(s), sum(set)));
                    }
                }
            }
        }
    }
    advance(crate::message::Watermark::MAX.0, &mut wm, &wins);
    res.extend(refires);
    res.sort_unstable();
    late.sort_unstable();
    (res, late)
}

/// Brute force for sessions (no lateness): the accepted, not yet emitted records of a
/// key are grouped from scratch (sorted by time, split where the next record starts
/// after the previous session's end); a session is emitted when the watermark passes
/// its end − 1; a record is late when it joins no pending session and its own window
/// is already past.
fn reference_sessions(gap: u64, evs: &[Ev]) -> (Vec<Res>, Vec<(u32, u64, i64)>) {
    let mut pending: BTreeMap<u32, Vec<(u64, i64)>> = BTreeMap::new();
    let mut wm: Option<u64> = None;
    let mut res = Vec::new();
    let mut late = Vec::new();
    fn group(recs: &[(u64, i64)], gap: u64) -> Vec<RefSession> {
        let mut r = recs.to_vec();
        r.sort_unstable();
        let mut out: Vec<RefSession> = Vec::new();
        for (ts, v) in r {
            match out.last_mut() {
                Some(last) if ts <= last.1 => {
                    last.1 = last.1.max(ts + gap);
                    last.2 += v;
                    last.3.push((ts, v));
                }
                _ => out.push((ts, ts + gap, v, vec![(ts, v)])),
            }
        }
        out
    }
    let mut advance =
        |to: u64, wm: &mut Option<u64>, pending: &mut BTreeMap<u32, Vec<(u64, i64)>>| {
            if wm.is_some_and(|w| w >= to) {
                return;
            }
            for (k, recs) in pending.iter_mut() {
                let mut keep = Vec::new();
                for (s, e, sum, members) in group(recs, gap) {
                    if e - 1 <= to {
                        res.push((*k, s as i64, e, sum));
                    } else {
                        keep.extend(members);
                    }
                }
                *recs = keep;
            }
            *wm = Some(to);
        };
    for e in evs {
        match *e {
            Ev::Wm(w) => advance(w, &mut wm, &mut pending),
            Ev::Rec(k, ts, v) => {
                let recs = pending.entry(k).or_default();
                let joins = group(recs, gap)
                    .iter()
                    .any(|(s, e, _, _)| *s <= ts + gap && *e >= ts);
                if !joins && wm.is_some_and(|w| ts + gap - 1 <= w) {
                    late.push((0, ts, v));
                } else {
                    recs.push((ts, v));
                }
            }
        }
    }
    advance(crate::message::Watermark::MAX.0, &mut wm, &mut pending);
    res.sort_unstable();
    late.sort_unstable();
    (res, late)
}

fn check(spec: WindowSpec, reference: impl Fn(&[Ev]) -> (Vec<Res>, Vec<(u32, u64, i64)>)) {
    let mut total_late = 0;
    for seed in 0..40u64 {
        let evs = input(seed, 300);
        let (got, got_late, counted) = run(spec, &evs);
        let (want, want_late) = reference(&evs);
        assert_eq!(got, want, "{spec:?} seed {seed}: window results");
        assert_eq!(
            got_late, want_late,
            "{spec:?} seed {seed}: late side output"
        );
        assert_eq!(counted, want_late.len() as u64, "seed {seed}: late counter");
        total_late += want_late.len();
    }
    assert!(total_late > 0, "the input has late records");
}

#[test]
fn tumbling_windows_match_the_brute_force_reference() {
    let spec = WindowSpec::tumbling(Duration::from_millis(100));
    check(spec, |e| reference_panes(100, 100, 0, e));
}

#[test]
fn tumbling_windows_with_allowed_lateness_refire_and_match_the_reference() {
    let spec = WindowSpec::tumbling(Duration::from_millis(100))
        .with_allowed_lateness(Duration::from_millis(40));
    check(spec, |e| reference_panes(100, 100, 40, e));
}

#[test]
fn sliding_windows_match_the_brute_force_reference() {
    let spec = WindowSpec::sliding(Duration::from_millis(50), Duration::from_millis(20));
    check(spec, |e| reference_panes(50, 20, 0, e));
}

#[test]
fn sliding_windows_with_allowed_lateness_match_the_reference() {
    let spec = WindowSpec::sliding(Duration::from_millis(60), Duration::from_millis(20))
        .with_allowed_lateness(Duration::from_millis(20));
    check(spec, |e| reference_panes(60, 20, 20, e));
}

#[test]
fn session_windows_match_the_brute_force_reference() {
    let spec = WindowSpec::session(Duration::from_millis(40));
    check(spec, |e| reference_sessions(40, e));
}

#[test]
fn a_sliding_window_merges_panes_instead_of_keeping_records() {
    // One key, 1000 records in one 1 s window sliding by 100 ms: 10 panes of state.
    let spec = WindowSpec::sliding(Duration::from_millis(1_000), Duration::from_millis(100));
    let mut h = Harness::new(4, move |init| {
        WindowProcess::declare(init, spec, Arc::new(Count), Arc::new(|v: &u64| *v), false)
    });
    for ts in 0..1_000u64 {
        h.record(7u32, ts);
    }
    let panes = h.op.core.borrow().f.panes.clone();
    let kc = crate::state::KeyCtx::new(&7u32, crate::keys::key_group_of(&7u32, 4));
    assert_eq!(panes.len(&kc), 10);
    h.end();
}

#[test]
fn a_record_near_time_zero_is_in_every_sliding_window_holding_it_also_those_before_zero() {
    // Size 10 s, slide 2 s: a record at 1 s is in the windows starting at −8, −6, −4, −2
    // and 0 s (as Flink's and Beam's sliding assigners put it).
    let spec = WindowSpec::sliding(Duration::from_secs(10), Duration::from_secs(2));
    let mut h = Harness::new(4, move |init| {
        WindowProcess::declare(init, spec, Arc::new(Count), Arc::new(|v: &u64| *v), false)
    });
    h.record(7u32, 1_000u64);
    h.end();
    let windows: Vec<(i64, u64, u64)> = h
        .out
        .borrow()
        .iter()
        .filter_map(|s| match s {
            Seen::Data(WindowOutput::Result(r)) => Some((r.start, r.end, r.value)),
            _ => None,
        })
        .collect();
    assert_eq!(
        windows,
        vec![
            (-8_000, 2_000, 1),
            (-6_000, 4_000, 1),
            (-4_000, 6_000, 1),
            (-2_000, 8_000, 1),
            (0, 10_000, 1)
        ]
    );
}
