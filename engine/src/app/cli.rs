//! The command line `App::main` gives a job's binary (formerly the `rill` binary's own).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use super::ctx::{Ctx, Table};
use super::{App, Registered};
use crate::checkpoint::cli;
use crate::checkpoint::restore::StartFrom;
use crate::config::{available_cpus, JobSpec};
use crate::dataflow::JobGraph;
use crate::doctor;
use crate::error::{ConfigError, EngineError, Result};
use crate::ids::CheckpointId;
use crate::runtime::{supervise, Control};

#[derive(Parser)]
#[command(version, about = "A job on rill, a thread-per-core dataflow engine")]
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
        /// Run as process i of N (0 <= i < N) of a job run by N processes: this process
        /// reads the Kafka partitions p with p % N == i and takes part in the job's
        /// global checkpoints (see docs/multi-process.md). Wins over `process` in job.toml.
        #[arg(long, value_name = "i/N")]
        process: Option<crate::ids::Process>,
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

/// The job `job_dir` describes (the built-in default job without one, where the binary
/// has it) and the pipeline of this binary it names.
fn load(app: &App, job_dir: Option<&Path>, overrides: &[String]) -> Result<(JobSpec, Registered)> {
    let spec = match job_dir {
        Some(dir) => JobSpec::load_with_overrides(dir, overrides)?,
        None if app.default_job => JobSpec::builtin_default(&available_cpus(), overrides)?,
        None => {
            return Err(ConfigError::Missing {
                file: PathBuf::from("JOB_DIR"),
                why: format!(
                    "`{} run` needs a job directory (job.toml naming one of {}, and \
                     cores/<cpu>.toml)",
                    app.name,
                    available(app)
                ),
            }
            .into())
        }
    };
    let file = spec.dir.join("job.toml");
    let name = match (&spec.job.pipeline, job_dir) {
        (Some(name), _) => name.clone(),
        (None, None) => spec.job.pipeline_name().to_string(),
        (None, Some(_)) => {
            return Err(ConfigError::Invalid {
                file,
                key: "pipeline".into(),
                problem: "not set: a job directory names the pipeline it runs".into(),
                valid: format!("pipeline = one of {}", available(app)),
            }
            .into())
        }
    };
    match app.pipelines.iter().find(|p| p.name == name) {
        Some(p) => Ok((spec, p.clone())),
        None => Err(ConfigError::Invalid {
            file,
            key: "pipeline".into(),
            problem: format!("\"{name}\" is not a pipeline of `{}`", app.name),
            valid: format!("one of {}", available(app)),
        }
        .into()),
    }
}

/// The pipelines `app` has, quoted and with what each does, for error messages.
fn available(app: &App) -> String {
    app.pipelines
        .iter()
        .map(|p| match p.about.as_str() {
            "" => format!("\"{}\"", p.name),
            about => format!("\"{}\" ({about})", p.name),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Builds the pipeline once and refuses a table of `job.toml` it does not read (a
/// built-in's tables are checked when the directory is read).
fn prepare(spec: &JobSpec, pipeline: &Registered) -> Result<JobGraph> {
    let ctx = Ctx::new(spec);
    let graph = (pipeline.build)(&ctx)?;
    if !pipeline.builtin {
        if let Some(t) = Table::ALL
            .into_iter()
            .find(|t| t.is_set(spec) && !ctx.has_read(*t))
        {
            return Err(ConfigError::Invalid {
                file: spec.dir.join("job.toml"),
                key: t.name().into(),
                problem: format!(
                    "set for pipeline \"{}\", which does not read it",
                    pipeline.name
                ),
                valid: format!("remove [{}]", t.name()),
            }
            .into());
        }
    }
    Ok(graph)
}

fn fail(e: &EngineError) -> ExitCode {
    eprintln!("{}: error: {e}", program());
    ExitCode::from(e.exit_code() as u8)
}

/// The binary's name, for messages.
fn program() -> String {
    std::env::args()
        .next()
        .as_deref()
        .map(Path::new)
        .and_then(Path::file_name)
        .and_then(|n| n.to_str())
        .unwrap_or("rill")
        .to_string()
}

pub(super) fn main(app: App) -> ExitCode {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                // Warnings, and the runtime's one info line: where the metrics are served.
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,crate::runtime=info")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    // Once per process: the name lives as long as it.
    let name: &'static str = Box::leak(app.name.clone().into_boxed_str());
    let command = Cli::command().name(name).bin_name(name);
    let cli = match Cli::from_arg_matches(&command.get_matches()) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    match cli.command {
        Command::Validate { job_dir } => validate(&app, &job_dir),
        Command::Run {
            job_dir,
            overrides,
            json,
            fresh,
            from,
            process,
        } => run(&app, job_dir, &overrides, json, fresh, from, process),
        Command::Checkpoints {
            job_dir,
            partitions,
        } => match cli::checkpoints(&job_dir, partitions) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(&e),
        },
        Command::Doctor { job_dir, json } => doctor(&app, &job_dir, json),
        Command::Savepoint { job_dir, timeout } => match cli::savepoint(&job_dir, timeout) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(&e),
        },
    }
}

fn validate(app: &App, job_dir: &Path) -> ExitCode {
    let (spec, pipeline) = match load(app, Some(job_dir), &[]) {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    match prepare(&spec, &pipeline) {
        Ok(graph) => {
            println!(
                "{}: ok — pipeline \"{}\" on CPUs {:?}",
                job_dir.display(),
                pipeline.name,
                spec.cores.iter().map(|c| c.cpu.0).collect::<Vec<_>>()
            );
            print!("{}", graph.describe());
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}

fn run(
    app: &App,
    job_dir: Option<PathBuf>,
    overrides: &[String],
    json: bool,
    fresh: bool,
    from: Option<u64>,
    process: Option<crate::ids::Process>,
) -> ExitCode {
    let (mut spec, pipeline) = match load(app, job_dir.as_deref(), overrides) {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    if let Some(p) = process {
        spec.job.process = Some(p);
        if let Err(e) = spec.job.validate(&spec.dir.join("job.toml")) {
            return fail(&EngineError::Config(e));
        }
    }
    if let Err(e) = prepare(&spec, &pipeline) {
        return fail(&e);
    }
    // One run per job directory, held until the process ends (restarts included). The
    // built-in job has no directory of its own and writes nothing there.
    let _lock = match &job_dir {
        Some(dir) => match crate::runtime::lock::JobLock::acquire(dir) {
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
        "{}: running \"{}\" on CPUs {:?}{}",
        program(),
        pipeline.name,
        spec.cores.iter().map(|c| c.cpu.0).collect::<Vec<_>>(),
        match spec.process() {
            p if p.is_single() => String::new(),
            p => format!(" as process {p}"),
        }
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
            eprintln!("{}: stopping (again to abort)", program());
            handler_control.stop();
        } else {
            handler_control.abort();
        }
    });
    let started_unix_ms = unix_ms();
    let started = std::time::Instant::now();
    let build = |spec: &JobSpec| (pipeline.build)(&Ctx::new(spec));
    let me = program();
    let result = supervise(&spec, &build, start_from, &control, |m| {
        eprintln!("{me}: {m}")
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
        .filter(|e| e.state == crate::checkpoint::history::State::Complete)
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
            eprintln!("{}: aborted", program());
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
fn checkpoint_history(spec: &JobSpec) -> Vec<crate::checkpoint::history::Entry> {
    spec.checkpoint_log_dir()
        .and_then(|d| crate::checkpoint::history::read(&d).ok())
        .unwrap_or_default()
}

/// Leaves the run's digest for `rill doctor` (a job directory only: the built-in job
/// writes nothing to the working directory) and returns the report's doctor section: the
/// FAQ answers that found a problem (empty when none did).
fn record_run(spec: &JobSpec, digest: &doctor::RunDigest, keep: bool) -> String {
    if !keep {
    } else if let Err(e) = doctor::write_digest(&spec.dir, digest) {
        eprintln!(
            "{}: warning: could not record the run for `doctor` in {}: {e}",
            program(),
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

fn doctor(app: &App, job_dir: &Path, json: bool) -> ExitCode {
    let spec = match load(app, Some(job_dir), &[]) {
        Ok((s, _)) => s,
        Err(e) => return fail(&e),
    };
    let digest = match doctor::read_digest(job_dir) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("{}: {e}", program());
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
            "{} doctor: last run {} after {:.1} s on {} cores{}{}\n",
            program(),
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

fn report_json(r: &crate::metrics::JobReport) -> serde_json::Value {
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
