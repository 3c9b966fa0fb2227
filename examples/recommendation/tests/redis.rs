//! The recommendation job's feature lookup against a real `redis-server` started on
//! loopback (a free port, no persistence): every item's features are `GET key:<item>`,
//! set here to values the simulated store would not give, and the committed output must
//! be the reference computed with them. An item Redis does not hold fails the job,
//! naming its key. Without `redis-server` the tests fail with how to install it.

use std::path::Path;
use std::sync::Mutex;

use rill_engine::app::Ctx;
use rill_engine::config::{CoreConfig, JobConfig, JobSpec};
use rill_engine::runtime::Job;
use rill_testkit::Redis;

mod common;
use common::{assert_rows_eq, committed, cpus, reference, Knobs};

static SERIAL: Mutex<()> = Mutex::new(());

const ITEMS: u32 = 300;

/// The features Redis holds for item `n`: 3 genres, popularity by a permutation.
fn features(n: u32) -> (String, u64) {
    (format!("genre-{}", n % 3), u64::from(n * 37 % 1000))
}

fn run(dir: &Path, addr: &str) -> rill_engine::Result<rill_engine::metrics::JobReport> {
    let job: JobConfig = toml::from_str(&format!(
        "pipeline = \"recommendation\"\n[params]\n{}\n[async]\ncapacity = 32\ntimeout_ms = 120000\n\
         [lookup]\nkind = \"redis\"\naddr = \"{addr}\"\n",
        Knobs::default().params()
    ))
    .unwrap();
    job.validate(Path::new("job.toml")).unwrap();
    let spec = JobSpec::with_cores(dir, job, &cpus(), CoreConfig::default());
    let graph = recommendation::build(&Ctx::new(&spec))?.build(spec.default_parallelism())?;
    Job::new(spec, graph).run()
}

fn set_features(server: &Redis, items: impl Iterator<Item = u32>) {
    let cmds: Vec<Vec<Vec<u8>>> = items
        .map(|n| {
            let (cat, pop) = features(n);
            vec![
                b"SET".to_vec(),
                format!("key:i{n}").into_bytes(),
                format!("{cat}:{pop}").into_bytes(),
            ]
        })
        .collect();
    server.run(&cmds);
}

#[test]
fn features_come_from_redis() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let server = Redis::start();
    set_features(&server, 0..ITEMS);
    let dir = tempfile::tempdir().unwrap();
    let input = common::write_input(
        &dir.path().join("input.jsonl"),
        4_000,
        3,
        100,
        ITEMS,
        1,
        false,
    );
    let r = run(dir.path(), &server.addr).unwrap();
    let k = Knobs::default();
    let from_redis = |item: &str| features(item.trim_start_matches('i').parse().unwrap());
    let want = reference(&input.events, &k, &from_redis);
    let rows: usize = want.values().map(Vec::len).sum();
    assert_eq!(r.counter("async_attempts"), rows as u64);
    assert_rows_eq(&committed(dir.path()), &want, "committed output");
    // The simulated store would have ranked differently: the values did come from Redis.
    let simulated = reference(&input.events, &k, &|i| common::simulated(i, k.categories));
    assert_ne!(simulated, want);
}

#[test]
fn an_item_redis_does_not_hold_fails_the_job_naming_its_key() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let server = Redis::start();
    set_features(&server, (0..ITEMS).filter(|n| *n != 7));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("input.jsonl"),
        "{\"ts\": 1, \"user\": \"u1\", \"item\": \"i1\", \"kind\": \"view\"}\n\
         {\"ts\": 2, \"user\": \"u1\", \"item\": \"i7\", \"kind\": \"view\"}\n",
    )
    .unwrap();
    let err = run(dir.path(), &server.addr).unwrap_err().to_string();
    assert!(err.contains("key:i7"), "{err}");
    assert!(err.contains("recommend"), "names the operator: {err}");
}
