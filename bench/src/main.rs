//! rill-bench: runs the built-in latency job (open-loop generator → key_by → keyed count
//! → latency sink) at one or more target rates on every available CPU and reports the
//! latency percentiles and the achieved rate of each run, as a table and optionally as
//! JSON. Each run is a fresh job; warm-up events are processed but not measured.
//!
//! This is the first slice of the harness: scenarios, sweeps over other parameters,
//! plots and peer runs are not here yet.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Parser;
use rill_engine::config::{available_cpus, JobSpec};
use rill_engine::pipelines;
use rill_engine::runtime::Job;

#[derive(Parser)]
#[command(
    name = "rill-bench",
    about = "Open-loop latency runs of rill's default job"
)]
struct Args {
    /// Target rates, events per second (repeatable).
    #[arg(long = "rate", default_values_t = [100_000u64, 1_000_000])]
    rates: Vec<u64>,
    /// Length of each run, seconds (including the warm-up).
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Warm-up excluded from the percentiles, seconds.
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Runs per rate (each reported; medians are printed when there are several).
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    /// Extra `table.key=value` overrides of the job, like `rill run --set`.
    #[arg(long = "set")]
    overrides: Vec<String>,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

struct Row {
    rate: u64,
    achieved: f64,
    p50: f64,
    p99: f64,
    p999: f64,
    p9999: f64,
    max: f64,
    samples: u64,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.warmup >= args.duration {
        bail!(
            "--warmup ({}) must be below --duration ({})",
            args.warmup,
            args.duration
        );
    }
    let cpus = available_cpus();
    eprintln!(
        "rill-bench: CPUs {cpus:?}, {} s per run ({} s warm-up)",
        args.duration, args.warmup
    );
    let mut rows = Vec::new();
    for &rate in &args.rates {
        for i in 0..args.repeat {
            let mut overrides = vec![
                format!("generator.rate_eps={rate}"),
                format!("generator.duration_ms={}", args.duration * 1000),
                format!("generator.warmup_ms={}", args.warmup * 1000),
            ];
            overrides.extend(args.overrides.iter().cloned());
            let spec = JobSpec::builtin_default(&cpus, &overrides)?;
            let graph = pipelines::build(&spec)?;
            let r = Job::new(spec, graph)
                .run()
                .context("the benchmark job failed")?;
            let row = Row {
                rate,
                achieved: r.sink_throughput_eps(),
                p50: r.latency_us(0.5),
                p99: r.latency_us(0.99),
                p999: r.latency_us(0.999),
                p9999: r.latency_us(0.9999),
                max: r.latency.max() as f64 / 1000.0,
                samples: r.latency.len(),
            };
            eprintln!(
                "  rate {rate} run {}: p50 {:.1} us, p99.9 {:.1} us",
                i + 1,
                row.p50,
                row.p999
            );
            if row.achieved < 0.95 * rate as f64 {
                eprintln!(
                    "  WARNING: achieved {:.0} events/s, below the {rate} target: the engine did not keep up",
                    row.achieved
                );
            }
            rows.push(row);
        }
    }
    println!(
        "{:>10} {:>12} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10}",
        "rate", "achieved", "p50 us", "p99 us", "p99.9 us", "p99.99", "max us", "samples"
    );
    for r in &rows {
        println!(
            "{:>10} {:>12.0} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>10}",
            r.rate, r.achieved, r.p50, r.p99, r.p999, r.p9999, r.max, r.samples
        );
    }
    if let Some(path) = &args.json {
        let runs: Vec<_> = rows
            .iter()
            .map(|r| {
                serde_json::json!({
                    "rate_eps": r.rate,
                    "throughput_eps": r.achieved,
                    "latency_us": {"p50": r.p50, "p99": r.p99, "p999": r.p999,
                                   "p9999": r.p9999, "max": r.max},
                    "samples": r.samples,
                })
            })
            .collect();
        let doc = serde_json::json!({"cpus": cpus, "duration_s": args.duration,
                                     "warmup_s": args.warmup, "runs": runs});
        std::fs::write(path, serde_json::to_string_pretty(&doc)?)
            .with_context(|| format!("write {}", path.display()))?;
    }
    Ok(())
}
