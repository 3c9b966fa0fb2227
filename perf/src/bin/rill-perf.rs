//! `rill-perf`: the tuning advisor (`rill-perf tune JOB_DIR`). Argument parsing and
//! printing only; the advisor is `rill_perf::tune`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use rill_bench::scenario::{LoadArgs, Settings};
use rill_perf::tune::{self, Options, Targets};

#[derive(Parser)]
#[command(
    name = "rill-perf",
    about = "rill's tuning advisor: measure a job, apply the C/T and N/t models, write its config"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run JOB_DIR under the harness, choose async capacity, checkpoint interval, rings
    /// and flush deadline from what it measured, write them into the job's config files
    /// and run again to verify.
    Tune(TuneArgs),
}

#[derive(clap::Args)]
struct TuneArgs {
    /// A job directory (job.toml + cores/<cpu>.toml), a scenario directory (job.toml +
    /// load.toml + core.toml), or the name of a scenario under bench/scenarios/.
    job_dir: String,
    /// The largest fraction of time checkpointing may take (C/T).
    #[arg(long, default_value_t = 0.05)]
    overhead: f64,
    /// The longest time to be back after a failure (restart delay + T + C), seconds.
    #[arg(long = "recovery-s", default_value_t = 10.0)]
    recovery_s: f64,
    /// Capacity over the mean need: N = ⌈λ·t·headroom⌉ per partition; also T's margin
    /// over C/overhead.
    #[arg(long, default_value_t = 1.5)]
    headroom: f64,
    /// A p99 latency target, µs: sizes the flush deadline (unset: the deadline is kept).
    #[arg(long = "p99-us")]
    p99_us: Option<f64>,
    /// Offered rate of both runs, events per second (generator pipelines).
    #[arg(long)]
    rate: Option<u64>,
    /// Both runs' length, warm-up, CPUs and `--set`s (which are never written to the
    /// files).
    #[command(flatten)]
    load: LoadArgs,
    /// Print the settings and verify them on a staged copy; write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Do not run again after writing.
    #[arg(long)]
    no_verify: bool,
    /// Also write the whole outcome (both run reports included) as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// No progress line.
    #[arg(long, short)]
    quiet: bool,
}

impl TuneArgs {
    fn options(&self) -> Result<Options> {
        if self.rate == Some(0) {
            anyhow::bail!("--rate 0: the offered rate is 1 or more events per second");
        }
        let settings = Settings {
            rate_eps: self.rate,
            ..self.load.settings()?
        };
        Ok(Options {
            job_dir: self.job_dir.clone(),
            targets: Targets {
                max_overhead: self.overhead,
                recovery_s: self.recovery_s,
                headroom: self.headroom,
                p99_us: self.p99_us,
            },
            settings,
            dry_run: self.dry_run,
            verify: !self.no_verify,
            progress: !self.quiet,
        })
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Tune(args) => {
            let opts = args.options()?;
            let outcome = tune::tune(&opts)?;
            print!("{}", outcome.render());
            if let Some(path) = &args.json {
                std::fs::write(path, serde_json::to_string_pretty(&outcome)? + "\n")
                    .with_context(|| format!("write {}", path.display()))?;
                eprintln!("rill-perf: wrote {}", path.display());
            }
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rill-perf: {e:#}");
            ExitCode::from(2)
        }
    }
}
