//! The profile lookup against a real `redis-server` started on loopback (a free port, no
//! persistence): each alert's tier and home come from `GET key:<account>`, checked by
//! `check.py --profiles` with what the test stored. Without `redis-server` the test fails
//! with how to install it.

use std::collections::BTreeMap;

use rill_engine::app::Ctx;
use rill_engine::config::{CoreConfig, JobConfig, JobSpec};
use rill_engine::runtime::Job;
use rill_testkit::Redis;

mod common;
use common::{assert_checked, committed, cpus, generate, job_dir};

#[test]
fn profiles_come_from_redis() {
    let server = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input.jsonl");
    generate(&input, 10_000, 21, &[]);
    // Every account of the input, with a profile the simulated lookup never gives (home
    // BR or JP; tiers in another pattern).
    let mut profiles: BTreeMap<String, String> = BTreeMap::new();
    for line in std::fs::read_to_string(&input).unwrap().lines() {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
            if let Some(a) = v["account"].as_str() {
                let n = profiles.len();
                profiles.entry(a.to_string()).or_insert_with(|| {
                    let tier = ["watch", "standard", "trusted"][n % 3];
                    let home = ["BR", "JP"][n % 2];
                    format!("{tier},{home}")
                });
            }
        }
    }
    let cmds: Vec<Vec<Vec<u8>>> = profiles
        .iter()
        .map(|(a, p)| {
            vec![
                b"SET".to_vec(),
                format!("key:{a}").into_bytes(),
                p.clone().into_bytes(),
            ]
        })
        .collect();
    server.run(&cmds);
    let profiles_file = dir.path().join("profiles.json");
    std::fs::write(&profiles_file, serde_json::to_string(&profiles).unwrap()).unwrap();

    job_dir(
        dir.path(),
        &cpus(),
        &format!(
            "[params]\nwindow_ms = 10000\n[async]\ncapacity = 16\n\
             [lookup]\nkind = \"redis\"\naddr = \"{}\"\n",
            server.addr
        ),
    );
    let job: JobConfig =
        toml::from_str(&std::fs::read_to_string(dir.path().join("job.toml")).unwrap()).unwrap();
    let spec = JobSpec::with_cores(dir.path(), job, &cpus(), CoreConfig::default());
    let graph = risk_control::build(&Ctx::new(&spec))
        .unwrap()
        .build(spec.default_parallelism())
        .unwrap();
    let report = Job::new(spec, graph).run().unwrap();
    let rows = committed(dir.path());
    assert!(!rows.is_empty());
    assert!(report.counter("async_attempts") as usize >= rows.len());
    // Homes only Redis knows: the simulated lookup was not used.
    assert!(
        rows.iter()
            .all(|r| r.contains(",BR,") || r.contains(",JP,")),
        "{:?}",
        &rows[..3.min(rows.len())]
    );
    eprintln!("{}", assert_checked(dir.path(), Some(&profiles_file)));
}
