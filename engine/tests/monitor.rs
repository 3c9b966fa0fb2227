//! The job's monitor in whole jobs on (up to) 2 pinned cores: a planted blocking call is
//! reported by the stall detector with its operator, and the metrics endpoint serves
//! Prometheus text that an independent parser (the `prometheus-parse` crate) accepts,
//! with the per-core counters, latency, async and checkpoint figures in it.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rill_engine::config::{
    available_cpus, CoreConfig, DiagnosticsConfig, JobConfig, JobSpec, MetricsConfig,
};
use rill_engine::connectors::{Generator, LatencySink};
use rill_engine::dataflow::{Out, Pipeline};
use rill_engine::monitor::stall::ThreadState;
use rill_engine::pipelines;
use rill_engine::runtime::Job;

/// Jobs pin executors to the same CPUs; run them one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn cpus() -> Vec<usize> {
    available_cpus().into_iter().take(2).collect()
}

fn diagnosed(threshold_ms: u64) -> JobConfig {
    JobConfig {
        diagnostics: Some(DiagnosticsConfig {
            stall_threshold_ms: threshold_ms,
        }),
        metrics: Some(MetricsConfig {
            listen: "off".into(),
            ..MetricsConfig::default()
        }),
        ..JobConfig::default()
    }
}

/// generator → map `name` (calling `f`) → key_by → keyed count → sink.
fn sleepy_job(dir: &Path, name: &str, f: fn(u64) -> u64, job: JobConfig) -> Job {
    let p = Pipeline::new(128);
    p.source("gen", Generator::new(200_000, 20_000, 0, |t| t.seq))
        .map(name, f)
        .key_by("k", |x: &u64| *x % 64)
        .process("count", |_init| {
            |_ctx, x: u64, out: &mut Out<'_, u64>| out.emit(x)
        })
        .sink("sink", LatencySink::new(|_: &u64| (0, false)));
    let graph = p.build(2).unwrap();
    Job::new(
        JobSpec::with_cores(dir, job, &cpus(), CoreConfig::default()),
        graph,
    )
}

fn blocks_once(x: u64) -> u64 {
    if x == 7_777 {
        // The planted blocking call: what a synchronous lookup in an operator does.
        std::thread::sleep(Duration::from_millis(120));
    }
    x
}

#[test]
fn a_planted_blocking_call_is_reported_with_its_operator() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let job = sleepy_job(dir.path(), "enrich-sync", blocks_once, diagnosed(20));
    let monitor = job.monitor_handle();
    let r = job.run().unwrap();
    assert_eq!(r.counter("sink_records"), 20_000);
    // A loaded 2-core VM may also deschedule a core inside the operator (a `Running`
    // stall); the planted call is the one stall asleep in it.
    let ours: Vec<_> = r
        .monitor
        .stalls
        .iter()
        .filter(|s| {
            s.operator.as_deref() == Some("enrich-sync") && s.thread == ThreadState::Sleeping
        })
        .collect();
    assert_eq!(
        ours.len(),
        1,
        "one sleeping stall in the planted operator: {:?}",
        r.monitor.stalls
    );
    let s = ours[0];
    // 120 ms asleep, sampled every 5 ms: at least ~115 ms of it is seen.
    assert!(s.duration_ms >= 60.0 && s.duration_ms <= 60_000.0, "{s:?}");
    assert!(s.partition.is_some());
    assert!(s.describe().contains("`enrich-sync`"), "{}", s.describe());
    assert!(
        r.to_string().contains("enrich-sync"),
        "the run report tells it:\n{r}"
    );
    // The handle keeps what the monitor saw for callers whose run failed.
    assert_eq!(monitor.outcome().unwrap(), r.monitor);
    assert_eq!(monitor.outcome().unwrap().stall_threshold_ms, Some(20.0));
}

#[test]
fn without_a_blocking_call_no_operator_sleeps_through_a_stall() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let r = sleepy_job(dir.path(), "pure", |x| x, diagnosed(20))
        .run()
        .unwrap();
    assert_eq!(r.counter("sink_records"), 20_000);
    // A shared VM can deschedule a core (a `Running` stall); only a blocking call sleeps.
    assert!(
        r.monitor
            .stalls
            .iter()
            .all(|s| s.thread != ThreadState::Sleeping),
        "{:?}",
        r.monitor.stalls
    );
}

#[test]
fn with_the_detector_off_nothing_is_reported() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let job = sleepy_job(dir.path(), "enrich-sync", blocks_once, diagnosed(0));
    let monitor = job.monitor_handle();
    let r = job.run().unwrap();
    assert!(r.monitor.stalls.is_empty(), "{:?}", r.monitor.stalls);
    assert_eq!(monitor.outcome().unwrap().stall_threshold_ms, None);
}

fn get(addr: SocketAddr, path: &str) -> (String, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("a header and a body");
    (head.to_string(), body.to_string())
}

const KEYED_ASYNC: &str = r#"
pipeline = "keyed-async"
[generator]
rate_eps = 5000
duration_ms = 4000
warmup_ms = 0
[source]
keys = 100
[async]
mode = "ordered"
capacity = 50
[lookup]
kind = "simulated"
delay_us = 1000
[checkpoint]
interval_ms = 200
dir = "ckpt"
[metrics]
listen = "127.0.0.1:0"
publish_ms = 50
"#;

#[test]
fn the_metrics_endpoint_serves_prometheus_text_a_parser_accepts() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let job: JobConfig = toml::from_str(KEYED_ASYNC).unwrap();
    job.validate(Path::new("job.toml")).unwrap();
    let spec = JobSpec::with_cores(dir.path(), job, &cpus(), CoreConfig::default());
    let graph = pipelines::build(&spec).unwrap();
    let job = Job::new(spec, graph);
    let monitor = job.monitor_handle();
    let stop = job.stop_handle();
    let run = std::thread::spawn(move || job.run());

    let deadline = Instant::now() + Duration::from_secs(60);
    let addr = loop {
        if let Some(a) = monitor.metrics_addr() {
            break a;
        }
        assert!(Instant::now() < deadline, "the endpoint never came up");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(addr.ip().is_loopback());
    // Scrape until every family we check has shown up (checkpoints take a moment).
    let mut families: BTreeMap<String, Vec<prometheus_parse::Sample>> = BTreeMap::new();
    let mut text = String::new();
    while Instant::now() < deadline {
        let (head, body) = get(addr, "/metrics");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(head.contains("text/plain; version=0.0.4"), "{head}");
        let lines = body.lines().map(|l| Ok(l.to_string()));
        let scrape = prometheus_parse::Scrape::parse(lines).expect("valid exposition text");
        families.clear();
        for s in scrape.samples {
            families.entry(s.metric.clone()).or_default().push(s);
        }
        text = body;
        let completed = families
            .get("rill_checkpoints_completed_total")
            .and_then(|v| v.first())
            .map(|s| matches!(s.value, prometheus_parse::Value::Counter(c) if c >= 1.0));
        if completed == Some(true) && families.contains_key("rill_async_in_flight") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let (head, _) = get(addr, "/nothing");
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    stop.stop();
    let report = run.join().unwrap().unwrap();
    assert!(report.counter("sink_records") > 0);

    let value = |name: &str| -> Vec<f64> {
        families
            .get(name)
            .unwrap_or_else(|| panic!("{name} missing from:\n{text}"))
            .iter()
            .map(|s| match &s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => *v,
                other => panic!("{name}: unexpected {other:?}"),
            })
            .collect()
    };
    assert_eq!(value("rill_up"), vec![1.0]);
    let cores = cpus().len();
    assert_eq!(
        value("rill_source_records_total").len(),
        cores,
        "one sample per core"
    );
    assert!(value("rill_source_records_total").iter().sum::<f64>() > 0.0);
    assert!(value("rill_checkpoints_completed_total")[0] >= 1.0);
    assert!(value("rill_checkpoint_last_size_bytes")[0] > 0.0);
    for s in &families["rill_async_in_flight"] {
        assert_eq!(s.labels.get("operator"), Some("lookup"), "{:?}", s.labels);
    }
    assert!(value("rill_async_capacity").iter().all(|c| *c == 50.0));
    assert!(value("rill_process_resident_bytes")[0] > 0.0);
    assert_eq!(value("rill_stalls_total").len(), cores);
    // Summaries parse as summaries, with their quantiles.
    let lat = &families["rill_latency_seconds"];
    let io = &families["rill_async_io_seconds"];
    for s in lat.iter().chain(io) {
        let prometheus_parse::Value::Summary(qs) = &s.value else {
            panic!("{} is not a summary: {:?}", s.metric, s.value);
        };
        assert!(qs.iter().any(|q| q.quantile == 0.99), "{qs:?}");
    }
    // The simulated IO takes 1 ms: its median is about that.
    let prometheus_parse::Value::Summary(qs) = &io[0].value else {
        unreachable!()
    };
    let p50 = qs.iter().find(|q| q.quantile == 0.5).unwrap().count;
    assert!((0.0009..0.1).contains(&p50), "IO p50 {p50} s");
}

static STUCK_ONCE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
static STUCK_CPU: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Blocks for a second once, on the core pinned to `STUCK_CPU`, a quarter into the input.
fn stuck_for_a_second(x: u64) -> u64 {
    use std::sync::atomic::Ordering;
    #[allow(unsafe_code)]
    // SAFETY: sched_getcpu has no preconditions.
    let cpu = unsafe { libc::sched_getcpu() };
    if x >= 5_000
        && cpu as usize == STUCK_CPU.load(Ordering::SeqCst)
        && !STUCK_ONCE.swap(true, Ordering::SeqCst)
    {
        std::thread::sleep(Duration::from_millis(1_000));
    }
    x
}

/// A blocking call on the second core while checkpoints run every 100 ms with a 300 ms
/// timeout: the checkpoints it holds up expire, and their failure says which cores did not
/// ack, which participants they owed, and which alignment waited on which input and for
/// how long.
#[test]
fn an_expired_checkpoint_names_the_core_the_participants_and_the_alignment_it_waited_on() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let cpus = cpus();
    if cpus.len() < 2 {
        // The coordinator runs on the first core: a second core must be the stuck one.
        eprintln!("skipped: needs 2 CPUs");
        return;
    }
    STUCK_CPU.store(cpus[1], std::sync::atomic::Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let mut job: JobConfig = toml::from_str(
        r#"
        [checkpoint]
        interval_ms = 100
        timeout_ms = 300
        tolerable_failures = 1000
        dir = "ckpt"
        [metrics]
        listen = "off"
        "#,
    )
    .unwrap();
    job.diagnostics = Some(DiagnosticsConfig {
        stall_threshold_ms: 50,
    });
    let p = Pipeline::new(128);
    p.source("gen", Generator::new(10_000, 20_000, 0, |t| t.seq))
        .map("stuck", stuck_for_a_second)
        .key_by("k", |x: &u64| *x % 64)
        .process("count", |_init| {
            |_ctx, x: u64, out: &mut Out<'_, u64>| out.emit(x)
        })
        .sink("sink", LatencySink::new(|_: &u64| (0, false)));
    let graph = p.build(2).unwrap();
    let spec = JobSpec::with_cores(dir.path(), job, &cpus, CoreConfig::default());
    let r = Job::new(spec, graph).run().unwrap();
    assert_eq!(r.counter("sink_records"), 20_000);
    assert!(
        r.checkpoints_completed() >= 1,
        "checkpoints resume after the stall"
    );
    let failed: Vec<&str> = r
        .checkpoints
        .iter()
        .filter_map(|c| c.failure.as_deref())
        .collect();
    assert!(
        !failed.is_empty(),
        "a checkpoint expired: {:?}",
        r.checkpoints
    );
    assert!(
        failed
            .iter()
            .all(|f| f.contains("expired after") && f.contains("without an ack from core")),
        "{failed:#?}"
    );
    // The participants owed, and the first core aligning on the stuck one's input, for
    // how long.
    assert!(
        failed
            .iter()
            .any(|f| f.contains("was waiting on: operator `count`")
                && f.contains("alignment at `k")
                && (f.contains("still waiting after") || f.contains("aligned after"))),
        "{failed:#?}"
    );
    assert!(
        r.monitor
            .stalls
            .iter()
            .any(|s| s.operator.as_deref() == Some("stuck") && s.duration_ms >= 500.0),
        "{:?}",
        r.monitor.stalls
    );
}
