//! The etl job in-process on (up to) 2 pinned cores, checked against a naive reference:
//! file by file with one source partition, counts 1..n per user with two, every
//! malformed line in the dead-letter file with its offset.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

use rand::{Rng, SeedableRng};
use rill_engine::app::Ctx;
use rill_engine::config::{available_cpus, CoreConfig, JobConfig, JobSpec};
use rill_engine::keys::key_group_of;
use rill_engine::runtime::Job;

/// Jobs pin executors to the same CPUs; run them one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn cpus() -> Vec<usize> {
    available_cpus().into_iter().take(2).collect()
}

fn spec(dir: &Path, job: JobConfig, core: CoreConfig) -> JobSpec {
    JobSpec::with_cores(dir, job, &cpus(), core)
}

/// Writes an etl input of `n` lines with malformed ones mixed in; returns the reference
/// rows per user (in input order) and the malformed lines' offsets.
fn etl_input(path: &Path, n: usize, seed: u64) -> (Vec<(String, u64, i128)>, Vec<u64>) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut text = String::new();
    let mut rows = Vec::new();
    let mut bad = Vec::new();
    let mut state: BTreeMap<String, (u64, i128)> = BTreeMap::new();
    for i in 0..n {
        let offset = text.len() as u64;
        let user = match rng.gen_range(0..20) {
            0 => "name, with \"comma\"".to_string(),
            1 => "ünïcode-user".to_string(),
            _ => format!("u{}", rng.gen_range(0..300)),
        };
        let amount: i64 = rng.gen_range(-50..1000);
        match rng.gen_range(0..40) {
            0 => text.push_str("{not json\n"),
            1 => text.push('\n'),
            2 => text.push_str(&format!("{{\"ts\": {i}, \"user\": \"{user}\"}}\n")),
            3 => text.push_str(&format!(
                "{{\"ts\": \"x\", \"user\": \"u\", \"amount_cents\": {amount}}}\n"
            )),
            _ => {
                let line = serde_json::json!({"ts": i, "user": user, "amount_cents": amount});
                text.push_str(&line.to_string());
                text.push('\n');
                if amount > 0 {
                    let s = state.entry(user.clone()).or_default();
                    s.0 += 1;
                    s.1 += i128::from(amount);
                    rows.push((user, s.0, s.1));
                }
                continue;
            }
        }
        bad.push(offset);
    }
    std::fs::write(path, text).unwrap();
    (rows, bad)
}

fn csv_user(user: &str) -> String {
    let mut v = Vec::new();
    rill_engine::connectors::csv_field(user, &mut v);
    String::from_utf8(v).unwrap()
}

fn etl_job(source_partitions: u32) -> JobConfig {
    toml::from_str(&format!(
        "pipeline = \"etl\"\n[params]\ninput = \"input.jsonl\"\npartitions = {source_partitions}\n\
         out = \"out\"\ndead_letter = \"dead-letter.jsonl\"\n"
    ))
    .unwrap()
}

/// The etl graph of `spec`, built as its binary builds it.
fn graph(spec: &JobSpec) -> rill_engine::dataflow::JobGraph {
    etl::build(&Ctx::new(spec))
        .unwrap()
        .build(spec.default_parallelism())
        .unwrap()
}

fn run_etl(
    dir: &Path,
    source_partitions: u32,
    core: CoreConfig,
) -> rill_engine::metrics::JobReport {
    let spec = spec(dir, etl_job(source_partitions), core);
    let graph = graph(&spec);
    Job::new(spec, graph).run().unwrap()
}

fn check_dead_letters(dir: &Path, bad: &[u64]) {
    let text = std::fs::read_to_string(dir.join("dead-letter.jsonl")).unwrap();
    let mut offsets: Vec<u64> = text
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["offset"]
                .as_u64()
                .unwrap()
        })
        .collect();
    offsets.sort_unstable();
    assert_eq!(offsets, bad, "every malformed line, once, with its offset");
}

#[test]
fn etl_with_one_source_partition_equals_the_reference_file_by_file() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let (rows, bad) = etl_input(&dir.path().join("input.jsonl"), 30_000, 7);
    let report = run_etl(dir.path(), 1, CoreConfig::default());
    assert_eq!(report.counter("dead_letters"), bad.len() as u64);
    assert_eq!(report.counter("sink_records"), rows.len() as u64);
    check_dead_letters(dir.path(), &bad);

    // Each user's rows go, in input order, to the partition owning its key group.
    let parallelism = cpus().len() as u32;
    let mut want: BTreeMap<String, String> = BTreeMap::new();
    for p in 0..parallelism {
        want.insert(format!("part-{p}.csv"), String::new());
    }
    for (user, count, total) in &rows {
        let p = key_group_of(user, 128).partition(parallelism, 128).0;
        let f = want.get_mut(&format!("part-{p}.csv")).unwrap();
        f.push_str(&format!("{},{count},{total}\n", csv_user(user)));
    }
    assert_eq!(rill_testkit::read_csv_parts(&dir.path().join("out")), want);
}

#[test]
fn etl_with_two_source_partitions_counts_each_user_1_to_n() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let (rows, bad) = etl_input(&dir.path().join("input.jsonl"), 30_000, 11);
    // Small rings and batches so that backpressure and batching both happen.
    let core = CoreConfig {
        ring_capacity: 4,
        batch_max: 8,
        ..CoreConfig::default()
    };
    run_etl(dir.path(), 2, core);
    check_dead_letters(dir.path(), &bad);
    let mut counts: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for text in rill_testkit::read_csv_parts(&dir.path().join("out")).values() {
        for line in text.lines() {
            let (user, rest) = line.rsplit_once(',').unwrap();
            let (user, count) = user.rsplit_once(',').unwrap();
            let _total: i128 = rest.parse().unwrap();
            counts
                .entry(user.to_string())
                .or_default()
                .push(count.parse().unwrap());
        }
    }
    let mut want: BTreeMap<String, (u64, i128)> = BTreeMap::new();
    for (user, count, total) in &rows {
        want.insert(csv_user(user), (*count, *total));
    }
    assert_eq!(counts.len(), want.len());
    for (user, seq) in &counts {
        let n = want[user].0;
        assert_eq!(*seq, (1..=n).collect::<Vec<_>>(), "user {user}");
    }
    // Final totals: the row with count n carries the user's whole sum.
    for text in rill_testkit::read_csv_parts(&dir.path().join("out")).values() {
        for line in text.lines() {
            let (head, total) = line.rsplit_once(',').unwrap();
            let (user, count) = head.rsplit_once(',').unwrap();
            let (n, sum) = want[user];
            if count.parse::<u64>().unwrap() == n {
                assert_eq!(total.parse::<i128>().unwrap(), sum, "user {user}");
            }
        }
    }
}

#[test]
fn a_missing_input_file_fails_the_job_with_its_path() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let spec = spec(dir.path(), etl_job(1), CoreConfig::default());
    let graph = graph(&spec);
    let err = Job::new(spec, graph).run().unwrap_err().to_string();
    assert!(err.contains("input.jsonl"), "{err}");
}
