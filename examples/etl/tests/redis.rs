//! The etl job's enrichment against a real `redis-server` started on loopback (a free
//! port, no persistence). Without `redis-server` the test fails with how to install it.

use std::path::Path;
use std::sync::Mutex;

use rill_engine::app::Ctx;
use rill_engine::config::{available_cpus, CoreConfig, JobConfig, JobSpec};
use rill_engine::runtime::Job;
use rill_testkit::Redis;

static SERIAL: Mutex<()> = Mutex::new(());

fn cpus() -> Vec<usize> {
    available_cpus().into_iter().take(2).collect()
}

fn b(s: impl Into<String>) -> Vec<u8> {
    s.into().into_bytes()
}

/// Review finding (issue 13 item 7): an etl job with `[enrich]` and `[lookup] kind =
/// "redis"` was accepted and still used the simulated lookup. Each user's segment is now
/// the value of `GET key:<user>`.
#[test]
fn etl_enrichment_against_redis_takes_each_segment_from_redis() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let server = Redis::start();
    let users = 20;
    let cmds: Vec<_> = (0..users)
        .map(|u| {
            vec![
                b("SET"),
                b(format!("key:u{u}")),
                b(format!("tier-{}", u * 7)),
            ]
        })
        .collect();
    server.run(&cmds);
    let dir = tempfile::tempdir().unwrap();
    let input: String = (0..400)
        .map(|i| {
            format!(
                "{{\"ts\": {i}, \"user\": \"u{}\", \"amount_cents\": 5}}\n",
                i % users
            )
        })
        .collect();
    std::fs::write(dir.path().join("input.jsonl"), input).unwrap();
    let job: JobConfig = toml::from_str(&format!(
        "pipeline = \"etl\"\n[params.enrich]\n[async]\ncapacity = 16\n\
         [lookup]\nkind = \"redis\"\naddr = \"{}\"\n",
        server.addr
    ))
    .unwrap();
    job.validate(Path::new("job.toml")).unwrap();
    let spec = JobSpec::with_cores(dir.path(), job, &cpus(), CoreConfig::default());
    let graph = etl::build(&Ctx::new(&spec))
        .unwrap()
        .build(spec.default_parallelism())
        .unwrap();
    let r = Job::new(spec, graph).run().unwrap();
    assert_eq!(r.counter("async_attempts"), 400);
    let mut rows = 0;
    for entry in std::fs::read_dir(dir.path().join("out")).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for line in text.lines() {
            let f: Vec<&str> = line.split(',').collect();
            let u: u32 = f[0].trim_start_matches('u').parse().unwrap();
            assert_eq!(f[3], format!("tier-{}", u * 7), "{line}");
            rows += 1;
        }
    }
    assert_eq!(rows, 400);
}
