//! `rill-bench kafka`: runs the Kafka scenario ([`crate::kafka`]) for each rate, repeat
//! and mode, alternating the modes so that peers run side by side under the same load of
//! the machine, then prints one row per run and a table of medians per (mode, rate), and
//! writes everything as JSON (`--json`).
//!
//! Must not: decide anything about a run (the verdicts are `kafka::kept_up`'s).

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use serde::Serialize;

use crate::kafka::{self, KafkaRun, Load, Mode};
use crate::machine::Machine;

/// The arguments of `rill-bench kafka`.
#[derive(Args, Debug)]
pub struct KafkaArgs {
    /// Modes, run in this order for every rate and repeat: exactly-once, at-least-once
    /// (the rill job with that sink), floor (a plain rdkafka consume-produce loop).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "exactly-once,at-least-once,floor"
    )]
    pub modes: Vec<String>,
    /// Offered rates, records per second (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "5000")]
    pub rates: Vec<u64>,
    /// Runs per rate and mode; the table shows medians.
    #[arg(long, default_value_t = 1)]
    pub repeat: usize,
    /// Measured seconds, after the warm-up.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Warm-up seconds (processed, not measured).
    #[arg(long, default_value_t = 3.0)]
    pub warmup: f64,
    /// The job's checkpoint interval, ms (exactly-once commits once per checkpoint).
    #[arg(long, default_value_t = 1000)]
    pub checkpoint_ms: u64,
    /// The job's executors: the first N available CPUs (default: all).
    #[arg(long)]
    pub cores: Option<usize>,
    /// Partitions of the input topic (the source runs one partition per Kafka
    /// partition).
    #[arg(long, default_value_t = 2)]
    pub in_partitions: u32,
    /// Partitions of the output topic (one consumer thread each).
    #[arg(long, default_value_t = 2)]
    pub out_partitions: u32,
    /// Bytes per record value.
    #[arg(long, default_value_t = 100)]
    pub value_bytes: usize,
    /// Distinct keys.
    #[arg(long, default_value_t = 10_000)]
    pub keys: u64,
    /// How long the measuring consumer's fetch may wait at the broker for data, ms
    /// (Tansu answers a fetch with no wait with nothing).
    #[arg(long, default_value_t = 1)]
    pub fetch_wait_ms: u64,
    /// librdkafka's `fetch.wait.max.ms` for the consumers under test (the rill source and
    /// the floor's consumer); librdkafka's default (500) when not given.
    #[arg(long)]
    pub client_fetch_wait_ms: Option<u64>,
    /// Transactions of the broker's commit probe (0: skip it).
    #[arg(long, default_value_t = 10)]
    pub probe: usize,
    /// Write the runs as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// No progress line.
    #[arg(long, short)]
    pub quiet: bool,
}

/// Everything `rill-bench kafka` measured.
#[derive(Serialize)]
struct Report {
    schema: &'static str,
    machine: Machine,
    load_avg_before: String,
    load_avg_after: String,
    commit_probe_ms: Vec<f64>,
    runs: Vec<KafkaRun>,
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn ms(r: &KafkaRun, name: &str) -> f64 {
    r.latency.us(name).unwrap_or(f64::NAN) / 1e3
}

/// Runs `rill-bench kafka`.
pub fn main(a: &KafkaArgs) -> Result<()> {
    let modes = a
        .modes
        .iter()
        .map(|m| Mode::parse(m))
        .collect::<Result<Vec<_>>>()?;
    if a.rates.contains(&0) || a.repeat == 0 || a.duration <= 0.0 || a.in_partitions == 0 {
        bail!("--rates, --repeat, --duration and --in-partitions must be above 0");
    }
    let mut cpus = rill_engine::config::available_cpus();
    if let Some(n) = a.cores {
        if n == 0 || n > cpus.len() {
            bail!("--cores {n}: 1 to {} on this machine", cpus.len());
        }
        cpus.truncate(n);
    }
    let before = loadavg();
    eprintln!("rill-bench kafka: load average {before}");
    let probe = if a.probe > 0 {
        let t = kafka::commit_probe(a.probe, 1000)?;
        let ms: Vec<f64> = t.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        println!(
            "commit probe: commit_transaction of {} transactions of 1000 records on Tansu: \
             median {:.1} ms, min {:.1}, max {:.1}",
            ms.len(),
            median(ms.clone()),
            ms.iter().copied().fold(f64::INFINITY, f64::min),
            ms.iter().copied().fold(0.0, f64::max)
        );
        ms
    } else {
        Vec::new()
    };
    println!(
        "{:<14} {:>7} {:>3} {:>9} {:>9} {:>8} {:>9} {:>9} {:>9} {:>9} {:>6} {:>7} {:>7} {:>7} {:>5}",
        "mode",
        "rate",
        "#",
        "tput/s",
        "seen",
        "dup",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "lag ms",
        "kept",
        "job cpu",
        "proc",
        "broker",
        "load"
    );
    let mut runs = Vec::new();
    for &rate in &a.rates {
        for i in 0..a.repeat {
            for &mode in &modes {
                let load = Load {
                    rate,
                    duration_s: a.duration,
                    warmup_s: a.warmup,
                    checkpoint_ms: a.checkpoint_ms,
                    cpus: cpus.clone(),
                    in_partitions: a.in_partitions,
                    out_partitions: a.out_partitions,
                    value_bytes: a.value_bytes,
                    keys: a.keys.max(1),
                    fetch_wait_ms: a.fetch_wait_ms.max(1),
                    client_fetch_wait_ms: a.client_fetch_wait_ms,
                };
                let r = kafka::run(mode, &load, a.quiet)?;
                println!(
                    "{:<14} {:>7} {:>3} {:>9.0} {:>9} {:>8} {:>9.1} {:>9.1} {:>9.1} {:>9.0} {:>6} {:>7.2} {:>7.2} {:>7.2} {:>5}",
                    mode.name(),
                    rate,
                    i + 1,
                    r.throughput_eps,
                    format!("{}/{}", r.seen, r.expected),
                    r.duplicates,
                    ms(&r, "p50"),
                    ms(&r, "p99"),
                    ms(&r, "p999"),
                    r.end_lag_ms,
                    if r.kept_up { "yes" } else { "NO" },
                    r.worker_cpu_s,
                    r.process_cpu_s,
                    r.broker_cpu_s,
                    loadavg().split_whitespace().next().unwrap_or("")
                );
                runs.push(r);
            }
        }
    }
    println!("\nmedians over {} run(s) per row (latency: due time to visible at a consumer of the output topic)", a.repeat);
    println!(
        "{:<14} {:>7} {:>10} {:>9} {:>9} {:>9} {:>9} {:>12}",
        "mode", "rate", "tput/s", "p50 ms", "p99 ms", "p99.9 ms", "kept up", "tput/core"
    );
    for &rate in &a.rates {
        for &mode in &modes {
            let rs: Vec<&KafkaRun> = runs
                .iter()
                .filter(|r| r.mode == mode && r.load.rate == rate)
                .collect();
            let med = |f: &dyn Fn(&KafkaRun) -> f64| median(rs.iter().map(|r| f(r)).collect());
            let tput = med(&|r| r.throughput_eps);
            println!(
                "{:<14} {:>7} {:>10.0} {:>9.1} {:>9.1} {:>9.1} {:>9} {:>12.0}",
                mode.name(),
                rate,
                tput,
                med(&|r| ms(r, "p50")),
                med(&|r| ms(r, "p99")),
                med(&|r| ms(r, "p999")),
                format!("{}/{}", rs.iter().filter(|r| r.kept_up).count(), rs.len()),
                tput / cpus.len() as f64
            );
        }
    }
    let after = loadavg();
    println!("load average before {before}, after {after}; job CPUs {cpus:?}");
    if let Some(path) = &a.json {
        let report = Report {
            schema: "rill-bench.kafka.v1",
            machine: Machine::detect(),
            load_avg_before: before,
            load_avg_after: after,
            commit_probe_ms: probe,
            runs,
        };
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
    }
    Ok(())
}
