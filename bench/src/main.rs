//! The `rill-bench` command: `run`, `sweep`, `compare` and `list`. Argument parsing and
//! printing only; the work is in the `rill_bench` library (see bench/README.md).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use rill_bench::flink::{self, FlinkLoad};
use rill_bench::noise::{self, Noise};
use rill_bench::peer::{run_timely, PeerLoad, PeerResult};
use rill_bench::report::{
    expected_samples, keep_up_problems, latency_maps, Cpu, PeerSection, RunReport,
};
use rill_bench::scenario::{LoadArgs, Scenario, Settings};
use rill_bench::stats::{spectrum, LatencySummary};
use rill_bench::sweep::{self, SweepKind, SweepReport, SweepRun};
use rill_bench::{compare, plot, runner};

#[derive(Parser)]
#[command(
    name = "rill-bench",
    about = "rill's open-loop latency benchmark harness: scenarios, sweeps, plots, peers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a scenario once and print its latency, throughput, CPU and checkpoint summary.
    Run {
        #[command(flatten)]
        common: Common,
        /// Also run the same job on another system under the same load: `timely` (the
        /// latency job) or `flink` (latency and keyed-async; needs a JDK).
        #[arg(long)]
        peer: Option<String>,
        /// Do not pin the peer's workers (Flink: its JVM) to rill's CPUs.
        #[arg(long)]
        no_pin: bool,
        /// Measure the machine's floor for this many seconds right before the job: a
        /// thread pinned to each of the job's CPUs reads the clock in a loop and records
        /// the gaps (p99.9, max); 0: off.
        #[arg(long, default_value_t = 2.0)]
        floor: f64,
    },
    /// Run a scenario once per value of one parameter.
    Sweep {
        #[command(flatten)]
        common: Common,
        /// The parameter: a job.toml key, `rate`, `cores` or `core.KEY`.
        #[arg(long)]
        param: String,
        /// Comma-separated values; `off` removes a job.toml key for that run.
        #[arg(long, value_delimiter = ',', required = true)]
        values: Vec<String>,
        /// The p99.9 target, microseconds.
        #[arg(long, default_value_t = 1000.0)]
        target_p999_us: f64,
        /// Mean IO time for the N/t model of an async-capacity sweep, ms.
        #[arg(long)]
        io_time_ms: Option<f64>,
        /// Runs per value; the row shows the run with the median p99.9.
        #[arg(long, default_value_t = 1)]
        repeat: usize,
    },
    /// Compare two run reports (JSON) and flag regressions beyond a noise band.
    Compare {
        /// The earlier report.
        a: PathBuf,
        /// The later report.
        b: PathBuf,
        /// Relative changes within ±NOISE are noise.
        #[arg(long, default_value_t = compare::DEFAULT_NOISE)]
        noise: f64,
    },
    /// List the shipped scenarios.
    List,
    /// Kafka -> rill -> Kafka open loop on a Tansu broker it starts (exactly-once,
    /// at-least-once), next to a plain consume-produce loop (see bench/README.md).
    Kafka(rill_bench::kafka_cmd::KafkaArgs),
}

#[derive(Args)]
struct Common {
    /// A scenario name under bench/scenarios/, or a scenario directory.
    scenario: String,
    /// Offered rate, events per second (overrides load.toml), or `max`: flat out, as fast
    /// as the job goes for `--duration` seconds after `--warmup`; throughput is the
    /// source's events in that window over its length (Nexmark event time then advances
    /// at 1 M events per second).
    #[arg(long)]
    rate: Option<String>,
    #[command(flatten)]
    load: LoadArgs,
    /// Write the report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write SVG plots into this directory.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// No progress line.
    #[arg(long, short)]
    quiet: bool,
    /// Abort a run that has not finished after this many seconds (default: twice the
    /// schedule plus 30 s).
    #[arg(long)]
    timeout: Option<f64>,
    /// Run N CPU-bound processes beside the job (unpinned, normal priority) for the
    /// whole run, rill's and the peer's (a sweep: all its runs).
    #[arg(long, default_value_t = 0)]
    noise: usize,
}

/// Starts the `--noise` processes (none for 0).
fn start_noise(n: usize, quiet: bool) -> Result<Option<Noise>> {
    if n == 0 {
        return Ok(None);
    }
    let exe = std::env::current_exe().context("find the rill-bench executable")?;
    let noise = Noise::start(n, &exe)?;
    if !quiet {
        eprintln!(
            "rill-bench: {n} noise process{} running (pids {:?})",
            if n == 1 { "" } else { "es" },
            noise.pids()
        );
    }
    Ok(Some(noise))
}

impl Common {
    fn settings(&self) -> Result<Settings> {
        let mut s = Settings {
            timeout_s: self.timeout,
            ..self.load.settings()?
        };
        match self.rate.as_deref() {
            None => {}
            Some("max") => s.flat_out = true,
            Some(r) => {
                s.rate_eps = Some(
                    r.parse()
                        .with_context(|| format!("--rate {r}: events per second or `max`"))?,
                )
            }
        }
        Ok(s)
    }
}

fn write_json(path: &PathBuf, v: &impl serde::Serialize) -> Result<()> {
    std::fs::write(path, serde_json::to_string_pretty(v)? + "\n")
        .with_context(|| format!("write {}", path.display()))?;
    eprintln!("rill-bench: wrote {}", path.display());
    Ok(())
}

fn cmd_run(common: &Common, peer: Option<&str>, no_pin: bool, floor_s: f64) -> Result<()> {
    let scenario = Scenario::find(&common.scenario)?;
    let settings = common.settings()?;
    let pipeline = scenario.pipeline()?;
    let pipeline = pipeline.as_str();
    if !(0.0..=600.0).contains(&floor_s) || floor_s.is_nan() {
        bail!("--floor {floor_s}: seconds, 0 (off) to 600");
    }
    if let Some(p) = peer {
        if settings.flat_out {
            bail!("--peer {p} runs the open-loop schedule; it has no flat-out (--rate max) mode");
        }
        match p {
            "timely" if pipeline != "latency" => bail!(
                "--peer timely runs the default latency job; scenario {} is not one",
                scenario.name
            ),
            "timely" => {}
            "flink" if !matches!(pipeline, "latency" | "keyed-async") => bail!(
                "--peer flink runs the latency and keyed-async jobs; scenario {} runs {pipeline}",
                scenario.name
            ),
            "flink" => {
                if let Some(m) = flink::java_missing() {
                    bail!("--peer flink: {m}");
                }
            }
            other => bail!("--peer {other}: the peers are `timely` and `flink`"),
        }
    }
    let noise = start_noise(common.noise, common.quiet)?;
    let mut floor = None;
    let mut flink_job: Option<(FlinkLoad, flink::Prepared)> = None;
    let outcome = runner::run_with(&scenario, &settings, !common.quiet, |spec| {
        if peer == Some("flink") {
            // Before rill runs: a job the Flink side cannot mirror, a missing JDK or jars
            // that cannot be installed end the command here, not after rill's run.
            let cpus: Vec<usize> = spec.cores.iter().map(|c| c.cpu.0).collect();
            let load = FlinkLoad::from_spec(spec, cpus, !no_pin)?;
            flink_job = Some((load, flink::prepare()?));
        }
        if floor_s > 0.0 {
            let cpus: Vec<usize> = spec.cores.iter().map(|c| c.cpu.0).collect();
            floor = Some(noise::measure_floor(
                &cpus,
                std::time::Duration::from_secs_f64(floor_s),
                common.noise,
            )?);
        }
        Ok(())
    })?;
    let mut report = RunReport::new(&outcome);
    report.noise = common.noise;
    report.floor = floor;
    let mut spectra = vec![("rill".to_string(), spectrum(&outcome.report.latency))];
    if let Some(system) = peer {
        let cpus = report.load.cpus.clone();
        let pin = !no_pin;
        let cpu_before = rill_bench::machine::process_cpu_s();
        let g = outcome.spec.job.generator.clone().unwrap_or_default();
        let r: PeerResult = if let Some((load, prepared)) = flink_job.take() {
            // No expected end: the JVM's and the MiniCluster's start-up come first.
            let progress = runner::Progress::new(
                format!(
                    "rill-bench: flink peer, parallelism {} ({:.1} s schedule after start-up)",
                    cpus.len(),
                    load.duration_ms as f64 / 1e3
                ),
                None,
                !common.quiet,
            );
            progress.around(move || flink::run_flink(&load, &prepared))??
        } else {
            let load = PeerLoad {
                rate_eps: g.rate_eps,
                duration_ms: g.duration_ms,
                warmup_ms: g.warmup_ms,
                keys: g.keys,
                cpus: cpus.clone(),
                pin,
            };
            let progress = runner::Progress::new(
                format!("rill-bench: timely peer, {} workers", cpus.len()),
                Some(std::time::Duration::from_millis(load.duration_ms)),
                !common.quiet,
            );
            progress.around(move || run_timely(&load))??
        };
        let summary = LatencySummary::of(&r.latency);
        let (latency_us, _) = latency_maps(&summary);
        spectra.push((system.to_string(), spectrum(&r.latency)));
        let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
        let ratios = latency_us
            .iter()
            .filter(|(k, _)| k.as_str() != "mean")
            .map(|(k, v)| {
                (
                    k.clone(),
                    ratio(report.latency_us.get(k).copied().unwrap_or(0.0), *v),
                )
            })
            .collect();
        let problems = keep_up_problems(
            g.rate_eps as f64,
            r.throughput_eps,
            summary.samples,
            expected_samples(g.rate_eps, g.duration_ms, g.warmup_ms),
            r.end_lag_ms.unwrap_or(0.0),
            g.duration_ms as f64,
        );
        report.peer = Some(PeerSection {
            system: system.into(),
            workers: cpus.len(),
            pinned: r.pinned,
            throughput_eps: r.throughput_eps,
            p999_ratio: ratio(report.p999_us(), summary.p999()),
            throughput_ratio: ratio(report.throughput_eps, r.throughput_eps),
            latency_samples: summary.samples,
            latency_us,
            cpu: Cpu {
                per_core_s: r.cpu_s.iter().cloned().collect(),
                process_s: r
                    .process_cpu_s
                    .unwrap_or_else(|| rill_bench::machine::process_cpu_s() - cpu_before),
                wall_s: r.wall.as_secs_f64(),
            },
            ratios,
            kept_up: Some(problems.is_empty()),
            keep_up_problems: problems,
            end_lag_ms: r.end_lag_ms,
            details: r.details.clone(),
        });
    }
    if let Some(n) = noise {
        report.noise_cpu_s = n.stop();
    }
    print!("{}", report.summary());
    if let Some(path) = &common.json {
        write_json(path, &report)?;
    }
    if let Some(dir) = &common.plot {
        plot::ensure_dir(dir)?;
        let title = format!(
            "{} at {} eps",
            scenario.name,
            report.load.offered_eps.unwrap_or(0)
        );
        let mut files = Vec::new();
        if !outcome.report.latency.is_empty() {
            files.push(plot::spectrum(dir, &title, spectra)?);
        }
        if !report.timeline.is_empty() {
            files.extend(plot::timeline(
                dir,
                &title,
                &report.timeline,
                &report.checkpoint_times_s,
            )?);
        }
        for f in files {
            eprintln!("rill-bench: wrote {}", f.display());
        }
    }
    Ok(())
}

fn cmd_sweep(
    common: &Common,
    param: &str,
    values: &[String],
    target: f64,
    io_time_ms: Option<f64>,
    repeat: usize,
) -> Result<()> {
    let scenario = Scenario::find(&common.scenario)?;
    let base = common.settings()?;
    let kind = SweepKind::of(param);
    if repeat == 0 {
        bail!("--repeat 0: each value runs at least once");
    }
    let noise = start_noise(common.noise, common.quiet)?;
    let mut runs = Vec::new();
    for (i, value) in values.iter().enumerate() {
        let mut settings = base.clone();
        sweep::apply(&mut settings, param, value)?;
        let mut reports = Vec::new();
        for k in 0..repeat {
            if !common.quiet {
                eprintln!(
                    "rill-bench: [{}/{}] {param} = {value}{}",
                    i + 1,
                    values.len(),
                    if repeat > 1 {
                        format!(" (run {}/{repeat})", k + 1)
                    } else {
                        String::new()
                    }
                );
            }
            let outcome = runner::run(&scenario, &settings, !common.quiet)?;
            let mut report = RunReport::new(&outcome);
            report.noise = common.noise;
            if !report.kept_up {
                eprintln!(
                    "rill-bench: {param} = {value}: THE ENGINE DID NOT KEEP UP: {}",
                    report.keep_up_problems.join("; ")
                );
            }
            reports.push(report);
        }
        runs.push(SweepRun::from_repeats(value, reports));
    }
    drop(noise);
    let best = sweep::best(&runs, target).map(|r| match kind {
        SweepKind::Rate => r
            .report
            .load
            .offered_eps
            .map_or(r.value.clone(), |o| o.to_string()),
        _ => r.value.clone(),
    });
    let models = sweep::model_rows(param, kind, &runs, io_time_ms);
    let report = SweepReport {
        schema: sweep::SCHEMA.into(),
        param: param.into(),
        kind,
        target_p999_us: target,
        best,
        models,
        runs,
    };
    println!("scenario {} — sweep over {param}", scenario.name);
    print!("{}", report.table());
    if let Some(path) = &common.json {
        write_json(path, &report)?;
    }
    if let Some(dir) = &common.plot {
        for f in report.plots(dir, &scenario.name)? {
            eprintln!("rill-bench: wrote {}", f.display());
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == noise::SPIN_ARG)
    {
        // A `--noise` process: spin until the harness kills it.
        noise::spin_forever();
    }
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Run {
            common,
            peer,
            no_pin,
            floor,
        } => cmd_run(common, peer.as_deref(), *no_pin, *floor).map(|_| ExitCode::SUCCESS),
        Command::Sweep {
            common,
            param,
            values,
            target_p999_us,
            io_time_ms,
            repeat,
        } => cmd_sweep(common, param, values, *target_p999_us, *io_time_ms, *repeat)
            .map(|_| ExitCode::SUCCESS),
        Command::Compare { a, b, noise } => (|| {
            let c = compare::compare(&compare::read(a)?, &compare::read(b)?, *noise);
            print!("{}", c.text);
            Ok(if c.regressions > 0 {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        })(),
        Command::Kafka(a) => rill_bench::kafka_cmd::main(a).map(|_| ExitCode::SUCCESS),
        Command::List => {
            for s in rill_bench::scenario::shipped() {
                println!("{s}");
            }
            Ok(ExitCode::SUCCESS)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("rill-bench: error: {e:#}");
            ExitCode::from(2)
        }
    }
}
