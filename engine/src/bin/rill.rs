//! The `rill` command: run or validate a job directory.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use clap::{Parser, Subcommand};
use rill_engine::config::{available_cpus, JobSpec, PipelineKind};
use rill_engine::runtime::Job;
use rill_engine::{pipelines, EngineError};

#[derive(Parser)]
#[command(name = "rill", version, about = "A thread-per-core dataflow engine")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a job directory (job.toml + cores/<cpu>.toml). Without JOB_DIR, runs the
    /// built-in latency job (generator → key_by → keyed count → latency sink) on every
    /// available CPU and prints its latency report.
    Run {
        /// The job directory.
        job_dir: Option<PathBuf>,
        /// Override a key of job.toml for this run, e.g. `--set generator.rate_eps=1000000`.
        #[arg(long = "set", value_name = "TABLE.KEY=VALUE")]
        overrides: Vec<String>,
        /// Print the report as JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Check a job directory without running it.
    Validate {
        /// The job directory.
        job_dir: PathBuf,
    },
}

fn load(job_dir: Option<&PathBuf>, overrides: &[String]) -> Result<JobSpec, EngineError> {
    Ok(match job_dir {
        Some(dir) => JobSpec::load_with_overrides(dir, overrides)?,
        None => JobSpec::builtin_default(&available_cpus(), overrides)?,
    })
}

fn fail(e: &EngineError) -> ExitCode {
    eprintln!("rill: error: {e}");
    ExitCode::from(e.exit_code() as u8)
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Validate { job_dir } => {
            let spec = match load(Some(&job_dir), &[]) {
                Ok(s) => s,
                Err(e) => return fail(&e),
            };
            match pipelines::build(&spec) {
                Ok(graph) => {
                    println!(
                        "{}: ok — pipeline {:?} on CPUs {:?}",
                        job_dir.display(),
                        spec.job.pipeline,
                        spec.cores.iter().map(|c| c.cpu.0).collect::<Vec<_>>()
                    );
                    print!("{}", graph.describe());
                    if spec.job.pipeline == PipelineKind::Etl {
                        let src = spec.job.source.clone().unwrap_or_default();
                        let input = spec.resolve(&src.path);
                        if !input.is_file() {
                            eprintln!(
                                "rill: note: source.path {} does not exist yet; `rill run` needs it",
                                input.display()
                            );
                        }
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e),
            }
        }
        Command::Run {
            job_dir,
            overrides,
            json,
        } => {
            let spec = match load(job_dir.as_ref(), &overrides) {
                Ok(s) => s,
                Err(e) => return fail(&e),
            };
            let graph = match pipelines::build(&spec) {
                Ok(g) => g,
                Err(e) => return fail(&e),
            };
            eprintln!(
                "rill: running {:?} on CPUs {:?}",
                spec.job.pipeline,
                spec.cores.iter().map(|c| c.cpu.0).collect::<Vec<_>>()
            );
            let job = Job::new(spec, graph);
            let handle = job.stop_handle();
            let signals = Arc::new(AtomicUsize::new(0));
            let seen = signals.clone();
            // First Ctrl-C / SIGTERM: stop the sources and drain. Second: abandon.
            let _ = ctrlc::set_handler(move || {
                if seen.fetch_add(1, Ordering::SeqCst) == 0 {
                    eprintln!("rill: stopping (again to abort)");
                    handle.stop();
                } else {
                    handle.abort();
                }
            });
            match job.run() {
                Ok(report) => {
                    if json {
                        println!("{}", report_json(&report));
                    } else {
                        print!("{report}");
                    }
                    if report.stopped {
                        ExitCode::from(130)
                    } else {
                        ExitCode::SUCCESS
                    }
                }
                Err(EngineError::Stopped) if signals.load(Ordering::SeqCst) > 0 => {
                    eprintln!("rill: aborted");
                    ExitCode::from(130)
                }
                Err(e) => fail(&e),
            }
        }
    }
}

fn report_json(r: &rill_engine::metrics::JobReport) -> serde_json::Value {
    serde_json::json!({
        "elapsed_s": r.elapsed.as_secs_f64(),
        "stopped": r.stopped,
        "throughput_eps": r.sink_throughput_eps(),
        "latency_us": {
            "p50": r.latency_us(0.5),
            "p90": r.latency_us(0.9),
            "p99": r.latency_us(0.99),
            "p999": r.latency_us(0.999),
            "p9999": r.latency_us(0.9999),
            "max": r.latency.max() as f64 / 1000.0,
            "samples": r.latency.len(),
        },
        "counters": r.counters,
    })
}
