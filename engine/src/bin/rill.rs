//! The `rill` command: run or validate a job directory.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use clap::{Parser, Subcommand};
use rill_engine::checkpoint::restore::StartFrom;
use rill_engine::config::{available_cpus, JobSpec, PipelineKind};
use rill_engine::doctor;
use rill_engine::ids::CheckpointId;
use rill_engine::runtime::{supervise, Control};
use rill_engine::{pipelines, EngineError};

use rill_engine::checkpoint::cli;

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
        /// Ignore existing checkpoints: start from the beginning of the input.
        #[arg(long, conflicts_with = "from")]
        fresh: bool,
        /// Restore from this checkpoint instead of the newest complete one.
        #[arg(long, value_name = "ID")]
        from: Option<u64>,
    },
    /// Check a job directory without running it.
    Validate {
        /// The job directory.
        job_dir: PathBuf,
    },
    /// List a job's checkpoints: id, time, state, duration, start delay, alignment,
    /// synchronous and asynchronous time, size.
    Checkpoints {
        /// The job directory.
        job_dir: PathBuf,
        /// Also list every partition's share of each checkpoint.
        #[arg(long)]
        partitions: bool,
    },
    /// Answer the FAQ (a checkpoint fails or is slow; async IO is slow; an operator blocks
    /// its core) with the numbers of the job's last `rill run` and its checkpoint history.
    Doctor {
        /// The job directory.
        job_dir: PathBuf,
        /// Print the answers as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Take a savepoint of the running job (a checkpoint retention never deletes) and
    /// print its id once it is complete.
    Savepoint {
        /// The job directory of the running job.
        job_dir: PathBuf,
        /// How long to wait for it, seconds.
        #[arg(long, default_value_t = 120)]
        timeout: u64,
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
                // Warnings, and the runtime's one info line: where the metrics are served.
                .unwrap_or_else(|_| {
                    tracing_subscriber::EnvFilter::new("warn,rill_engine::runtime=info")
                }),
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
            fresh,
            from,
        } => run(job_dir, &overrides, json, fresh, from),
        Command::Checkpoints {
            job_dir,
            partitions,
        } => match cli::checkpoints(&job_dir, partitions) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(&e),
        },
        Command::Doctor { job_dir, json } => doctor(&job_dir, json),
        Command::Savepoint { job_dir, timeout } => match cli::savepoint(&job_dir, timeout) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(&e),
        },
    }
}

fn run(
    job_dir: Option<PathBuf>,
    overrides: &[String],
    json: bool,
    fresh: bool,
    from: Option<u64>,
) -> ExitCode {
    let spec = match load(job_dir.as_ref(), overrides) {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    if let Err(e) = pipelines::build(&spec) {
        return fail(&e);
    }
    // One run per job directory, held until the process ends (restarts included). The
    // built-in job has no directory of its own and writes nothing there.
    let _lock = match &job_dir {
        Some(dir) => match rill_engine::runtime::lock::JobLock::acquire(dir) {
            Ok(l) => Some(l),
            Err(e) => return fail(&e),
        },
        None => None,
    };
    let earlier = job_dir
        .as_ref()
        .and_then(|d| doctor::read_digest(d).ok())
        .and_then(|d| d.newest_checkpoint);
    let start_from = match (fresh, from) {
        (true, _) => StartFrom::Fresh,
        (false, Some(id)) => StartFrom::Id(CheckpointId(id)),
        (false, None) => StartFrom::Newest,
    };
    eprintln!(
        "rill: running {:?} on CPUs {:?}",
        spec.job.pipeline,
        spec.cores.iter().map(|c| c.cpu.0).collect::<Vec<_>>()
    );
    let control = Control::default();
    let pid_file = match cli::write_pid(&spec) {
        Ok(p) => p,
        Err(e) => return fail(&e),
    };
    let _ = signal_hook::flag::register(signal_hook::consts::SIGUSR1, control.savepoint.clone());
    let signals = Arc::new(AtomicUsize::new(0));
    let seen = signals.clone();
    let handler_control = control.clone();
    // First Ctrl-C / SIGTERM: stop the sources and drain. Second: abandon.
    let _ = ctrlc::set_handler(move || {
        if seen.fetch_add(1, Ordering::SeqCst) == 0 {
            eprintln!("rill: stopping (again to abort)");
            handler_control.stop();
        } else {
            handler_control.abort();
        }
    });
    let started_unix_ms = unix_ms();
    let started = std::time::Instant::now();
    let result = supervise(&spec, &pipelines::build, start_from, &control, |m| {
        eprintln!("rill: {m}")
    });
    if let Some(p) = pid_file {
        let _ = std::fs::remove_file(p);
    }
    let digest = match &result {
        Ok(r) => doctor::RunDigest::of_report(r, started_unix_ms),
        Err(e) => doctor::RunDigest::of_failure(
            &e.to_string(),
            control
                .monitor
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
                .and_then(|m| m.outcome()),
            started_unix_ms,
            started.elapsed().as_secs_f64(),
            spec.cores.len(),
        ),
    };
    // The newest complete checkpoint the job has: a run that completed none keeps the
    // last run's (a run refused for a missing checkpoint directory must not forget it),
    // unless it started over on purpose.
    let mut digest = digest;
    digest.newest_checkpoint = checkpoint_history(&spec)
        .iter()
        .filter(|e| e.state == rill_engine::checkpoint::history::State::Complete)
        .map(|e| e.id)
        .max()
        .or(earlier.filter(|_| start_from != StartFrom::Fresh));
    let problems = record_run(&spec, &digest, job_dir.is_some());
    match result {
        Ok(report) => {
            if json {
                println!("{}", report_json(&report));
            } else {
                print!("{report}");
                print!("{problems}");
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
        Err(e) => {
            eprint!("{problems}");
            fail(&e)
        }
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The checkpoint history of `spec`'s job (empty without checkpointing).
fn checkpoint_history(spec: &JobSpec) -> Vec<rill_engine::checkpoint::history::Entry> {
    spec.job
        .checkpoint
        .as_ref()
        .and_then(|c| rill_engine::checkpoint::history::read(&spec.resolve(&c.dir)).ok())
        .unwrap_or_default()
}

/// Leaves the run's digest for `rill doctor` (a job directory only: the built-in job
/// writes nothing to the working directory) and returns the report's doctor section: the
/// FAQ answers that found a problem (empty when none did).
fn record_run(spec: &JobSpec, digest: &doctor::RunDigest, keep: bool) -> String {
    if !keep {
    } else if let Err(e) = doctor::write_digest(&spec.dir, digest) {
        eprintln!(
            "rill: warning: could not record the run for `rill doctor` in {}: {e}",
            doctor::digest_path(&spec.dir).display()
        );
    }
    let answers = doctor::diagnose(digest, &spec.job, &checkpoint_history(spec));
    let mut out = String::new();
    for a in answers
        .iter()
        .filter(|a| a.verdict == doctor::Verdict::Problem)
    {
        if out.is_empty() {
            out.push_str("doctor:\n");
        }
        out.push_str(&a.to_string());
    }
    if !out.is_empty() {
        out.push_str(&format!(
            "(`rill doctor {}` answers every question)\n",
            spec.dir.display()
        ));
    }
    out
}

fn doctor(job_dir: &PathBuf, json: bool) -> ExitCode {
    let spec = match load(Some(job_dir), &[]) {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    let digest = match doctor::read_digest(job_dir) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("rill: {e}");
            return ExitCode::from(2);
        }
    };
    let answers = doctor::diagnose(&digest, &spec.job, &checkpoint_history(&spec));
    if json {
        println!(
            "{}",
            serde_json::json!({ "run": digest, "answers": answers })
        );
    } else {
        println!(
            "rill doctor: last run {} after {:.1} s on {} cores{}{}\n",
            digest.outcome,
            digest.elapsed_s,
            digest.cores,
            if digest.restarts > 0 {
                format!(", {} restarts", digest.restarts)
            } else {
                String::new()
            },
            digest
                .error
                .as_ref()
                .map_or(String::new(), |e| format!(": {e}"))
        );
        for a in &answers {
            println!("{a}");
        }
    }
    ExitCode::SUCCESS
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
        "restored_from": r.restored_from,
        "restarts": r.restarts,
        "checkpoints": {
            "completed": r.checkpoints_completed(),
            "failed": r.checkpoints_failed(),
            "history": r.checkpoints,
        },
    })
}
