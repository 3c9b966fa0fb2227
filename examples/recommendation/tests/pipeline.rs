//! The recommendation job in-process on (up to) 2 pinned cores, checked against the
//! naive reference of `common`: every user's rows exactly, in order, with one source
//! partition; every malformed line in the dead-letter file with its offset.

use std::path::Path;
use std::sync::Mutex;

use rill_engine::app::Ctx;
use rill_engine::config::{CoreConfig, JobConfig, JobSpec};
use rill_engine::runtime::Job;

mod common;
use common::{assert_rows_eq, committed, cpus, reference, simulated, Knobs};
use rill_testkit::dead_letters;

/// Jobs pin executors to the same CPUs; run them one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn run(
    dir: &Path,
    job: &str,
    core: CoreConfig,
) -> rill_engine::Result<rill_engine::metrics::JobReport> {
    let job: JobConfig = toml::from_str(job).unwrap();
    job.validate(Path::new("job.toml")).unwrap();
    let spec = JobSpec::with_cores(dir, job, &cpus(), core);
    let graph = recommendation::build(&Ctx::new(&spec))?.build(spec.default_parallelism())?;
    Job::new(spec, graph).run()
}

/// The job with `k`'s parameters; `async_keys` go into its `[async]` table.
fn job(k: &Knobs, async_keys: &str) -> String {
    format!(
        "pipeline = \"recommendation\"\n[params]\n{}\n[lookup]\ndelay_us = 100\n\
         [async]\n{TIMEOUT}{async_keys}",
        k.params()
    )
}

/// The lookups' timeout: far above any delay (the shared test machine has stalled whole
/// processes for 8 s), so that no test depends on how fast the machine is.
const TIMEOUT: &str = "timeout_ms = 120000\n";

#[test]
fn one_source_partition_gives_every_users_recommendations_in_order() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let input = common::write_input(
        &dir.path().join("input.jsonl"),
        20_000,
        7,
        300,
        400,
        3,
        true,
    );
    let k = Knobs::default();
    let report = run(dir.path(), &job(&k, ""), CoreConfig::default()).unwrap();
    let want = reference(&input.events, &k, &|i| simulated(i, k.categories));
    let rows: usize = want.values().map(Vec::len).sum();
    assert_eq!(report.counter("dead_letters"), input.bad.len() as u64);
    assert_eq!(report.counter("sink_records"), rows as u64);
    assert_rows_eq(&committed(dir.path()), &want, "committed output");
    assert_eq!(dead_letters(dir.path()), input.bad);

    // The reference is not trivial: full lists, empty ones (everything clicked), and
    // rankings that change as a user's interest moves.
    let all: Vec<&Vec<String>> = want.values().flatten().map(|r| &r.2).collect();
    assert!(
        all.iter().any(|i| i.len() == k.top_n),
        "some lists are full"
    );
    assert!(all.iter().any(|i| i.is_empty()), "some lists are empty");
    let distinct: std::collections::BTreeSet<_> = all.iter().collect();
    assert!(
        distinct.len() > rows / 4,
        "{} distinct lists",
        distinct.len()
    );
    assert!(want.contains_key("name, with \"comma\""));
}

#[test]
fn every_m_events_a_short_history_and_other_weights_with_small_rings() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let input = common::write_input(
        &dir.path().join("input.jsonl"),
        15_000,
        11,
        200,
        300,
        1,
        false,
    );
    let k = Knobs {
        history: 4,
        top_n: 5,
        every: 3,
        click_weight: 0,
        view_weight: 7,
        decay_permille: 1000,
        categories: 3,
    };
    // Small rings and batches and few requests in flight: backpressure on every edge.
    let core = CoreConfig {
        ring_capacity: 4,
        batch_max: 8,
        ..CoreConfig::default()
    };
    run(dir.path(), &job(&k, "capacity = 4\n"), core).unwrap();
    let want = reference(&input.events, &k, &|i| simulated(i, k.categories));
    assert_rows_eq(&committed(dir.path()), &want, "committed output");
    assert!(want.values().flatten().all(|r| r.0 % 3 == 0));
    assert_eq!(dead_letters(dir.path()), input.bad);
}

#[test]
fn two_source_partitions_recommend_on_each_users_events_1_to_n() {
    // A user's events from two byte ranges interleave in any order, so the lists differ
    // from the input-order reference; each event still triggers exactly one row.
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let input = common::write_input(
        &dir.path().join("input.jsonl"),
        15_000,
        13,
        200,
        300,
        1,
        false,
    );
    let k = Knobs::default();
    let params = format!("{}partitions = 2\n", k.params());
    run(
        dir.path(),
        &format!("pipeline = \"recommendation\"\n[params]\n{params}[async]\n{TIMEOUT}"),
        CoreConfig::default(),
    )
    .unwrap();
    let want = reference(&input.events, &k, &|i| simulated(i, k.categories));
    let got = committed(dir.path());
    assert_eq!(got.len(), want.len());
    for (user, rows) in &want {
        let mut seqs: Vec<u64> = got[user].iter().map(|r| r.0).collect();
        seqs.sort_unstable();
        assert_eq!(seqs, (1..=rows.len() as u64).collect::<Vec<_>>(), "{user}");
    }
    assert_eq!(dead_letters(dir.path()), input.bad);
}

#[test]
fn a_missing_input_file_fails_the_job_with_its_path() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let err = run(
        dir.path(),
        &job(&Knobs::default(), ""),
        CoreConfig::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("input.jsonl"), "{err}");
}
