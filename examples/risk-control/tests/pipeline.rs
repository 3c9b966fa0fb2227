//! The risk-control job in-process on (up to) 2 pinned cores, its committed alerts
//! checked by `check.py`, the independent reference: with one source partition every
//! alert exactly, with two everything but the order-dependent country-change alerts.
//! Also: the checker fails on a wrong output, and on an input it cannot decide.

use std::path::Path;
use std::sync::Mutex;

use rill_engine::app::Ctx;
use rill_engine::config::{CoreConfig, JobConfig, JobSpec};
use rill_engine::runtime::Job;

mod common;
use common::{assert_checked, check, committed, cpus, generate, job_dir};
use rill_testkit::dead_letters;

/// Jobs pin executors to the same CPUs; run them one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// Runs the job of `dir` (its job.toml) in-process to the end.
fn run(dir: &Path, core: CoreConfig) -> rill_engine::metrics::JobReport {
    let text = std::fs::read_to_string(dir.join("job.toml")).unwrap();
    let job: JobConfig = toml::from_str(&text).unwrap();
    let spec = JobSpec::with_cores(dir, job, &cpus(), core);
    let graph = risk_control::build(&Ctx::new(&spec))
        .unwrap()
        .build(spec.default_parallelism())
        .unwrap();
    Job::new(spec, graph).run().unwrap()
}

fn rules_seen(rows: &[String]) -> std::collections::BTreeSet<String> {
    rows.iter()
        .map(|r| {
            // The account may be quoted and hold commas: the rule follows its field.
            let rest = if let Some(q) = r.strip_prefix('"') {
                let end = q.find("\",").expect("closing quote");
                &q[end + 2..]
            } else {
                r.split_once(',').unwrap().1
            };
            rest.split(',').next().unwrap().to_string()
        })
        .collect()
}

#[test]
fn one_source_partition_gives_exactly_the_reference_alerts() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    generate(&dir.path().join("input.jsonl"), 40_000, 7, &[]);
    job_dir(dir.path(), &cpus(), "[params]\nwindow_ms = 20000\n");
    let report = run(dir.path(), CoreConfig::default());
    let out = assert_checked(dir.path(), None);
    eprintln!("{out}");
    let rows = committed(dir.path());
    // Every rule fired, so every path (window results flowing on, keyed state, the
    // lookup and the suppression) is covered by the comparison.
    let rules = rules_seen(&rows);
    for r in ["large", "country-change", "velocity", "volume", "geo"] {
        assert!(rules.contains(r), "no {r} alert in {rules:?}");
    }
    assert!(
        out.contains("suppressed") && !out.contains("suppressed 0,"),
        "{out}"
    );
    assert_eq!(report.counter("late_records"), 0);
    assert_eq!(
        report.counter("dead_letters"),
        dead_letters(dir.path()).len() as u64
    );
    assert!(report.counter("dead_letters") > 0);
}

#[test]
fn two_source_partitions_and_small_rings_give_the_reference_window_and_large_alerts() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    generate(&dir.path().join("input.jsonl"), 30_000, 11, &[]);
    job_dir(
        dir.path(),
        &cpus(),
        "[params]\npartitions = 2\nwindow_ms = 10000\nwatermark_interval_ms = 5\n\
         [async]\nmode = \"unordered\"\ncapacity = 8\n[lookup]\ndelay_us = 200\n",
    );
    // Small rings and batches: backpressure and batching both happen.
    let core = CoreConfig {
        ring_capacity: 4,
        batch_max: 8,
        ..CoreConfig::default()
    };
    run(dir.path(), core);
    let out = assert_checked(dir.path(), None);
    eprintln!("{out}");
}

#[test]
fn the_checker_rejects_a_lost_or_a_duplicated_alert() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    generate(&dir.path().join("input.jsonl"), 5_000, 3, &[]);
    job_dir(dir.path(), &cpus(), "[params]\nwindow_ms = 5000\n");
    run(dir.path(), CoreConfig::default());
    assert_checked(dir.path(), None);
    let file = rill_engine::connectors::committed_files(&dir.path().join("out"))
        .unwrap()
        .into_iter()
        .find(|f| std::fs::metadata(f).unwrap().len() > 0)
        .expect("some output");
    let text = std::fs::read_to_string(&file).unwrap();
    let first = text.lines().next().unwrap().to_string();
    // Duplicated.
    std::fs::write(&file, format!("{text}{first}\n")).unwrap();
    let out = check(dir.path(), None);
    assert_eq!(out.status.code(), Some(1), "{}", common::text(&out));
    // Lost.
    std::fs::write(&file, text.split_once('\n').unwrap().1).unwrap();
    let out = check(dir.path(), None);
    assert_eq!(out.status.code(), Some(1), "{}", common::text(&out));
}

#[test]
fn the_checker_refuses_an_input_more_out_of_order_than_the_bound() {
    let dir = tempfile::tempdir().unwrap();
    // Up to 9 s behind with a bound of 5 s: some transactions may be late.
    generate(
        &dir.path().join("input.jsonl"),
        2_000,
        5,
        &["--max-delay-ms", "9000"],
    );
    job_dir(
        dir.path(),
        &cpus(),
        "[params]\nwindow_ms = 1000\nout_of_orderness_ms = 5000\n",
    );
    std::fs::create_dir_all(dir.path().join("out")).unwrap();
    let out = check(dir.path(), None);
    assert_eq!(out.status.code(), Some(2), "{}", common::text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("out of order by more than"),
        "{}",
        common::text(&out)
    );
}

/// Window results are records like any other: here they go through an async operator
/// and across a `key_by` (a repartition, over the rings between the cores) into a keyed
/// `process`, in a pipeline built outside the engine from public items only.
#[test]
fn window_results_cross_an_async_operator_and_a_key_by() {
    use std::collections::{BTreeMap, BTreeSet};
    use std::time::Duration;

    use rill_engine::asyncio::service::Service;
    use rill_engine::connectors::{FileLine, FileSink, FileSource};
    use rill_engine::dataflow::windows::{WindowResult, WindowSpec};
    use rill_engine::dataflow::{Out, WatermarkStrategy};
    use risk_control::{event_time, parse, Stats, Txn, TxnStats};

    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input.jsonl");
    generate(&input, 8_000, 13, &[]);
    const W: u64 = 10_000;
    // The reference: per window start, the accounts with transactions in it and their
    // number.
    let mut want: BTreeMap<i64, (BTreeSet<String>, u64)> = BTreeMap::new();
    for line in std::fs::read_to_string(&input).unwrap().lines() {
        let l = FileLine {
            offset: 0,
            line: line.as_bytes().to_vec(),
        };
        if let Ok(t) = parse(&l) {
            let w = want.entry((t.ts - t.ts % W) as i64).or_default();
            w.0.insert(t.account);
            w.1 += 1;
        }
    }

    job_dir(dir.path(), &cpus(), "[async]\ncapacity = 16\n");
    let text = std::fs::read_to_string(dir.path().join("job.toml")).unwrap();
    let job: JobConfig = toml::from_str(&text).unwrap();
    let spec = JobSpec::with_cores(dir.path(), job, &cpus(), CoreConfig::default());
    let ctx = Ctx::new(&spec);
    let p = ctx.pipeline();
    let lookup = ctx.lookup();
    p.source_with_watermarks(
        "read",
        FileSource::new("input.jsonl"),
        event_time,
        WatermarkStrategy::bounded(Duration::from_millis(5_000)),
    )
    .parallelism(1)
    .flat_map("valid", |l: FileLine, out: &mut Out<'_, Txn>| {
        if let Ok(t) = parse(&l) {
            out.emit(t);
        }
    })
    .key_by("by-account", |t: &Txn| t.account.clone())
    .window(
        "window",
        WindowSpec::tumbling(Duration::from_millis(W)),
        |t: &Txn| t.ts,
        TxnStats,
    )
    .async_map("lookup", ctx.async_options(), move |actx| {
        let mut service = Service::new(&lookup, actx);
        move |r: WindowResult<String, Stats>| {
            let fut = service.get(r.key.clone(), r);
            async move { fut.await.map(|(r, _)| r) }
        }
    })
    .key_by("by-start", |r: &WindowResult<String, Stats>| r.start)
    .process("per-start", |init| {
        let seen = init.value::<(u64, u64)>("seen");
        move |ctx, r: WindowResult<String, Stats>, out: &mut Out<'_, String>| {
            let (n, total) = seen.update(
                ctx,
                || (0, 0),
                |s| {
                    s.0 += 1;
                    s.1 += r.value.count;
                    *s
                },
            );
            out.emit(format!("{},{n},{total}", r.start));
        }
    })
    .sink("out", FileSink::lines("out"));
    let graph = p.build(ctx.parallelism()).unwrap();
    Job::new(spec, graph).run().unwrap();

    // The last row of each window start has seen every account's result.
    let mut got: BTreeMap<i64, (u64, u64)> = BTreeMap::new();
    for text in rill_testkit::read_csv_parts(&dir.path().join("out")).values() {
        for line in text.lines() {
            let f: Vec<u64> = line.split(',').map(|x| x.parse().unwrap()).collect();
            let e = got.entry(f[0] as i64).or_default();
            *e = (e.0.max(f[1]), e.1.max(f[2]));
        }
    }
    let want: BTreeMap<i64, (u64, u64)> = want
        .into_iter()
        .map(|(s, (accounts, n))| (s, (accounts.len() as u64, n)))
        .collect();
    assert_eq!(got, want);
}
