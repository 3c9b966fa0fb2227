//! Event time through whole pipelines on (up to) 2 cores: watermarks from several
//! source partitions combined in-band over the rings, windows fed by them, and keyed
//! timers that survive a restart from a checkpoint.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use rill_engine::config::{available_cpus, CoreConfig, JobConfig, JobSpec};
use rill_engine::connectors::{FileSink, Generator};
use rill_engine::dataflow::windows::{Count, WindowSpec};
use rill_engine::dataflow::{KeyedProcess, Out, Pipeline, TimeDomain, TimerCtx, WatermarkStrategy};
use rill_engine::runtime::Job;

/// Jobs pin executors to the same CPUs; run them one at a time.
fn cpus() -> Vec<usize> {
    available_cpus().into_iter().take(2).collect()
}

static SERIAL: Mutex<()> = Mutex::new(());

fn spec(dir: &Path, job: JobConfig) -> JobSpec {
    JobSpec::with_cores(dir, job, &cpus(), CoreConfig::default())
}

fn lines(dir: &Path) -> Vec<String> {
    let mut v = Vec::new();
    for f in rill_engine::connectors::committed_files(dir).unwrap() {
        v.extend(
            std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .map(str::to_string),
        );
    }
    v
}

fn strategy() -> WatermarkStrategy {
    WatermarkStrategy::bounded(Duration::ZERO).with_interval(Duration::from_millis(1))
}

#[test]
fn tumbling_counts_over_two_source_partitions_lose_nothing_to_lateness() {
    // Each partition is in order; the partitions interleave. The operator's watermark is
    // the minimum over both, so with a zero bound no record is late and every window
    // count is exact.
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let spec = spec(dir.path(), JobConfig::default());
    let p = Pipeline::new(spec.job.max_key_groups);
    p.source_with_watermarks(
        "gen",
        Generator::new(100_000, 20_000, 0, |t| t.seq),
        |s: &u64| *s,
        strategy(),
    )
    .parallelism(2)
    .key_by("by-key", |s: &u64| s % 7)
    .window(
        "count",
        WindowSpec::tumbling(Duration::from_millis(1_000)),
        |s: &u64| *s,
        Count,
    )
    .map("fmt", |r| format!("{},{},{}", r.key, r.start, r.value))
    .sink("out", FileSink::lines("out"));
    let graph = p.build(spec.default_parallelism()).unwrap();
    let report = Job::new(spec, graph).run().unwrap();
    assert_eq!(report.counter("late_records"), 0);
    let mut got: Vec<String> = lines(&dir.path().join("out"));
    got.sort();
    let mut want: BTreeMap<(u64, u64), u64> = BTreeMap::new();
    for s in 0..20_000u64 {
        *want.entry((s % 7, s - s % 1_000)).or_default() += 1;
    }
    let mut want: Vec<String> = want
        .into_iter()
        .map(|((k, w), n)| format!("{k},{w},{n}"))
        .collect();
    want.sort();
    assert_eq!(got, want);
}

/// Registers an event timer 5 ms after each record; emits `key,time` when it fires.
struct Later;

impl KeyedProcess<u64, u64, String> for Later {
    fn process(&mut self, ctx: &mut TimerCtx<'_, u64>, s: u64, _out: &mut Out<'_, String>) {
        ctx.register_event_timer(s + 5);
    }
    fn on_timer(
        &mut self,
        ctx: &mut TimerCtx<'_, u64>,
        at: u64,
        d: TimeDomain,
        out: &mut Out<'_, String>,
    ) {
        assert_eq!(d, TimeDomain::EventTime);
        out.emit(format!("{},{at}", ctx.key()));
    }
}

#[test]
fn event_timers_fire_exactly_once_across_a_restart_from_a_checkpoint() {
    use rill_engine::checkpoint::restore::StartFrom;
    use rill_engine::runtime::{supervise, Control};
    static ARMED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let job: JobConfig = toml::from_str(
        "[checkpoint]\ninterval_ms = 20\n[restart]\nstrategy = \"fixed-delay\"\nattempts = 2\ndelay_ms = 10\n",
    )
    .unwrap();
    let spec = spec(dir.path(), job);
    let build = |spec: &JobSpec| {
        let p = Pipeline::new(spec.job.max_key_groups);
        p.source_with_watermarks(
            "gen",
            Generator::new(100_000, 60_000, 0, |t| t.seq),
            |s: &u64| *s,
            strategy(),
        )
        .map("maybe-fail", |seq: u64| {
            if seq == 50_000 && ARMED.swap(false, std::sync::atomic::Ordering::SeqCst) {
                panic!("injected failure at seq {seq}");
            }
            seq
        })
        .key_by("by-key", |s: &u64| s % 100)
        .process_with_timers("later", |_init| Later)
        .sink("out", FileSink::lines("out"));
        p.build(spec.default_parallelism())
    };
    let report = supervise(
        &spec,
        &build,
        StartFrom::Newest,
        &Control::default(),
        |_| {},
    )
    .unwrap();
    assert_eq!(report.restarts, 1);
    assert!(
        report.restored_from.is_some(),
        "restarted from a checkpoint"
    );
    let mut got: Vec<(u64, u64)> = lines(&dir.path().join("out"))
        .iter()
        .map(|l| {
            let (k, t) = l.split_once(',').unwrap();
            (k.parse().unwrap(), t.parse().unwrap())
        })
        .collect();
    got.sort_unstable();
    let want: Vec<(u64, u64)> = (0..60_000u64).map(|s| (s % 100, s + 5)).collect();
    let mut want = want;
    want.sort_unstable();
    let missing: Vec<_> = want
        .iter()
        .filter(|w| got.binary_search(w).is_err())
        .take(20)
        .collect();
    assert_eq!(
        got.len(),
        want.len(),
        "each timer fired exactly once; missing {missing:?}"
    );
    assert_eq!(got, want);
}

#[test]
fn an_interval_join_of_two_sources_over_two_cores_matches_a_nested_loop() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let spec = spec(dir.path(), JobConfig::default());
    let p = Pipeline::new(spec.job.max_key_groups);
    let left = p
        .source_with_watermarks(
            "left",
            Generator::new(100_000, 2_000, 0, |t| t.seq),
            |s: &u64| *s,
            strategy(),
        )
        .key_by("left-by-key", |s: &u64| s % 10);
    let right = p
        .source_with_watermarks(
            "right",
            Generator::new(100_000, 2_000, 0, |t| t.seq * 3),
            |s: &u64| *s,
            strategy(),
        )
        .key_by("right-by-key", |s: &u64| s % 10);
    left.interval_join(
        "join",
        &right,
        -5,
        5,
        |l: &u64| *l,
        |r: &u64| *r,
        |_k: &u64, l: &u64, r: &u64| format!("{l},{r}"),
    )
    .sink("out", FileSink::lines("out"));
    let graph = p.build(spec.default_parallelism()).unwrap();
    let report = Job::new(spec, graph).run().unwrap();
    let mut got = lines(&dir.path().join("out"));
    got.sort();
    let mut want = Vec::new();
    for l in 0..2_000u64 {
        for r in (0..2_000u64).map(|s| s * 3) {
            if l % 10 == r % 10 && l + 5 >= r && r + 5 >= l {
                want.push(format!("{l},{r}"));
            }
        }
    }
    want.sort();
    // The right side's event time runs 3x ahead of the left's; the join's watermark is
    // the minimum over both, so with in-order sources and a zero bound nothing is late.
    assert_eq!(report.counter("late_records"), 0);
    assert_eq!(got, want);
}

/// Issue 15: a window's results are records like any other: they cross a `key_by` to a
/// keyed operator on another core (before, `WindowResult` had no rkyv derives and a
/// `key_by` after a window did not compile). Per-key counts re-keyed by window start
/// and summed there give each window's total.
#[test]
fn window_results_flow_through_a_key_by_into_a_further_keyed_operator() {
    use rill_engine::dataflow::windows::WindowResult;
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let spec = spec(dir.path(), JobConfig::default());
    let p = Pipeline::new(spec.job.max_key_groups);
    p.source_with_watermarks(
        "gen",
        Generator::new(100_000, 12_000, 0, |t| t.seq),
        |s: &u64| *s,
        strategy(),
    )
    .parallelism(2)
    .key_by("by-key", |s: &u64| s % 5)
    .window(
        "count",
        WindowSpec::tumbling(Duration::from_millis(1_000)),
        |s: &u64| *s,
        Count,
    )
    .key_by("by-window", |r: &WindowResult<u64, u64>| r.start)
    .process("total", |init| {
        let total = init.value::<u64>("total");
        move |ctx, r: WindowResult<u64, u64>, out: &mut Out<'_, String>| {
            let t = total.update(
                ctx,
                || 0,
                |t| {
                    *t += r.value;
                    *t
                },
            );
            out.emit(format!("{},{t}", r.start));
        }
    })
    .sink("out", FileSink::lines("out"));
    let graph = p.build(spec.default_parallelism()).unwrap();
    Job::new(spec, graph).run().unwrap();
    // The last running total of each window is the window's size: 1000 records each.
    let mut last: BTreeMap<i64, u64> = BTreeMap::new();
    for l in lines(&dir.path().join("out")) {
        let (w, t) = l.split_once(',').unwrap();
        let e = last.entry(w.parse().unwrap()).or_default();
        *e = (*e).max(t.parse().unwrap());
    }
    let want: BTreeMap<i64, u64> = (0..12).map(|w| (w * 1_000, 1_000)).collect();
    assert_eq!(last, want);
}
