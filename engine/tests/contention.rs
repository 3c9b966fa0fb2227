//! Diagnostics that tell CPU contention from blocking, in whole jobs on (up to) 2 pinned
//! cores: a job crowded by busy threads is diagnosed by `rill doctor` as contention (with
//! its advice) and never as a blocking call, and says so once instead of once per stall;
//! a job whose operator really sleeps is diagnosed as a blocking call. No assertion is
//! on a timing: only on what the diagnostics conclude.

/// The `rill` binary.
fn rill() -> &'static str {
    env!("CARGO_BIN_EXE_rill")
}

/// The CPUs a test may use: at most two.
fn cpus() -> Vec<usize> {
    let mut v = rill_engine::config::available_cpus();
    v.truncate(2);
    v
}

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rill_engine::config::{CoreConfig, DiagnosticsConfig, JobConfig, JobSpec, MetricsConfig};
use rill_engine::connectors::{Generator, LatencySink};
use rill_engine::dataflow::{Out, Pipeline};
use rill_engine::doctor::{diagnose, RunDigest, Verdict};
use rill_engine::monitor::stall::StallCause;
use rill_engine::runtime::Job;

/// Jobs pin executors to the same CPUs; run them one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// `n` CPU-bound threads, unpinned and at normal priority, until dropped.
struct Busy {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Busy {
    fn start(n: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..n)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut x = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(1));
                    }
                })
            })
            .collect();
        Self { stop, threads }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// One answer of `rill doctor --json`: question, verdict, findings (verdict, text).
type AnswerText = (String, String, Vec<(String, String)>);

fn answers_of(doctor_json: &str) -> Vec<AnswerText> {
    let v: serde_json::Value = serde_json::from_str(doctor_json).expect("doctor --json");
    v["answers"]
        .as_array()
        .expect("answers")
        .iter()
        .map(|a| {
            let findings = a["findings"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| {
                    (
                        f[0].as_str().unwrap().to_string(),
                        f[1].as_str().unwrap().to_string(),
                    )
                })
                .collect();
            (
                a["question"].as_str().unwrap().to_string(),
                a["verdict"].as_str().unwrap().to_string(),
                findings,
            )
        })
        .collect()
}

#[test]
fn a_job_crowded_by_busy_threads_is_diagnosed_as_contention_not_blocking() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let cpus = cpus();
    std::fs::create_dir_all(dir.path().join("cores")).unwrap();
    for c in &cpus {
        // The spin as it was before it adapted: a core that never parks under load is a
        // CPU hog to the scheduler, so the busy threads surely take its CPU in long
        // slices (with the default the core parks, and stalls become rare).
        std::fs::write(
            dir.path().join("cores").join(format!("{c}.toml")),
            "spin_adaptive = false\nsched_slice_us = 0\n",
        )
        .unwrap();
    }
    std::fs::write(
        dir.path().join("job.toml"),
        "pipeline = \"latency\"\n\
         [generator]\nrate_eps = 100000\nduration_ms = 4000\nwarmup_ms = 0\n\
         [diagnostics]\nstall_threshold_ms = 4\n\
         [metrics]\nlisten = \"off\"\n",
    )
    .unwrap();
    let busy = Busy::start(4 * cpus.len());
    let run = Command::new(rill())
        .args(["run", dir.path().to_str().unwrap(), "--fresh"])
        .output()
        .unwrap();
    drop(busy);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "rill run failed:\n{stderr}");
    // One line for contention however many stalls it caused, and no blocking call.
    let contention_lines = stderr
        .lines()
        .filter(|l| l.contains("stall:") && l.contains("CPU contention"))
        .count();
    assert!(
        contention_lines <= 1,
        "contention is logged once:\n{stderr}"
    );
    // Contention is what the run is summarised as, and nothing is called a blocking call
    // (a producer core used to sleep on the doorbell's mutex while the consumer core
    // holding it was preempted; the doorbell is lock-free now).
    let summary = |what: &str| -> u64 {
        stderr
            .lines()
            .filter(|l| l.contains("stalls: ") && l.contains(what))
            .filter_map(|l| {
                l.split("stalls: ")
                    .nth(1)?
                    .split(' ')
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .sum()
    };
    let contention = summary("CPU contention");
    let blocking = summary("a blocking call");
    assert!(
        contention > 0 && blocking == 0,
        "contention {contention} stalls, blocking {blocking}:\n{stderr}"
    );

    let doctor = Command::new(rill())
        .args(["doctor", dir.path().to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    assert!(
        doctor.status.success(),
        "{}",
        String::from_utf8_lossy(&doctor.stderr)
    );
    let text = String::from_utf8_lossy(&doctor.stdout);
    let answers = answers_of(&text);
    let (question, verdict, findings) = &answers[2];
    assert!(question.contains("CPU taken"), "{question}");
    assert!(
        verdict != "problem" || findings.iter().all(|(v, _)| v != "problem"),
        "contention is not the job's fault: {findings:?}"
    );
    let all: Vec<&str> = findings.iter().map(|(_, t)| t.as_str()).collect();
    assert!(
        all.iter().any(|t| t.starts_with("CPU contention")),
        "the doctor names contention: {all:?}"
    );
    assert!(
        all.iter()
            .filter(|t| t.starts_with("CPU contention"))
            .all(|t| t.contains("fewer cores than the machine has") && t.contains("isolate")),
        "with its advice: {all:?}"
    );
    assert!(
        all.iter().all(|t| !t.contains("blocking call")),
        "no blocking call: {all:?}"
    );
    // The digest's stalls: none is called a blocking call.
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    for s in v["run"]["stalls"].as_array().unwrap() {
        assert_ne!(s["cause"], "blocking", "{s}");
        assert_ne!(s["cause"], "disk-wait", "{s}");
    }
    // The first question's blocking-call line holds no stall against the operators.
    let ckpt = &answers[0].2;
    assert!(
        ckpt.iter()
            .all(|(v, t)| !(t.contains("blocking calls") && v == "problem")),
        "{ckpt:?}"
    );
}

fn sleeps_once(x: u64) -> u64 {
    if x == 7_777 {
        // The planted blocking call: what a synchronous lookup in an operator does.
        std::thread::sleep(Duration::from_millis(150));
    }
    x
}

#[test]
fn a_sleep_in_a_map_is_diagnosed_as_a_blocking_call() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let job = JobConfig {
        diagnostics: Some(DiagnosticsConfig {
            stall_threshold_ms: 20,
        }),
        metrics: Some(MetricsConfig {
            listen: "off".into(),
            ..MetricsConfig::default()
        }),
        ..JobConfig::default()
    };
    let p = Pipeline::new(128);
    p.source("gen", Generator::new(200_000, 20_000, 0, |t| t.seq))
        .map("lookup-sync", sleeps_once)
        .key_by("k", |x: &u64| *x % 64)
        .process("count", |_init| {
            |_ctx, x: u64, out: &mut Out<'_, u64>| out.emit(x)
        })
        .sink("sink", LatencySink::new(|_: &u64| (0, false)));
    let graph = p.build(2).unwrap();
    let spec = JobSpec::with_cores(dir.path(), job.clone(), &cpus(), CoreConfig::default());
    let r = Job::new(spec, graph).run().unwrap();
    let planted: Vec<_> = r
        .monitor
        .stalls
        .iter()
        .filter(|s| s.operator.as_deref() == Some("lookup-sync"))
        .filter(|s| s.cause == StallCause::Blocking)
        .collect();
    assert_eq!(planted.len(), 1, "{:?}", r.monitor.stalls);
    let answers = diagnose(&RunDigest::of_report(&r, 0), &job, &[]);
    let a = &answers[2];
    assert_eq!(a.verdict, Verdict::Problem, "{a}");
    let (v, text) = a
        .findings
        .iter()
        .find(|(_, t)| t.contains("`lookup-sync`"))
        .unwrap_or_else(|| panic!("the operator is named: {a}"));
    assert_eq!(*v, Verdict::Problem);
    assert!(text.contains("a blocking call"), "{text}");
    assert!(!text.contains("contention"), "{text}");
}
