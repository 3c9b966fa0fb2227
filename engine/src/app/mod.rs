//! The command line of a job's binary: `run`, `validate`, `checkpoints`, `savepoint`,
//! `doctor`, with signals, restart strategies, `--set`, logging, metrics and exit codes.
//! The `rill` binary is one user of it (the built-in pipelines, registered by name); a
//! user's crate is another:
//!
//! ```no_run
//! use rill_engine::app;
//! use rill_engine::connectors::{FileLine, FileSink, FileSource};
//!
//! #[derive(serde::Deserialize)]
//! struct Params {
//!     input: String,
//! }
//!
//! fn main() -> std::process::ExitCode {
//!     app::main("upper", |ctx| {
//!         let params: Params = ctx.params()?;
//!         let p = ctx.pipeline();
//!         p.source("read", FileSource::new(ctx.resolve(&params.input)))
//!             .map("upper", |l: FileLine| {
//!                 let mut line = l.line.to_ascii_uppercase();
//!                 line.push(b'\n');
//!                 line
//!             })
//!             .sink("write", FileSink::new(ctx.resolve("out"), |b: &Vec<u8>, out: &mut Vec<u8>| {
//!                 out.extend_from_slice(b)
//!             }));
//!         Ok(p)
//!     })
//! }
//! ```
//!
//! `job.toml` names the pipeline (`pipeline = "upper"`) and carries its parameters in
//! `[params]`; the binary runs it with `upper run JOB_DIR`.

mod cli;
mod ctx;

use std::process::ExitCode;
use std::sync::Arc;

pub use ctx::Ctx;

use crate::config::PipelineKind;
use crate::dataflow::{JobGraph, Pipeline};
use crate::error::Result;

/// How a registered pipeline is built.
type BuildFn = Arc<dyn Fn(&Ctx<'_>) -> Result<JobGraph> + Send + Sync>;

/// One pipeline a binary can run.
#[derive(Clone)]
pub(crate) struct Registered {
    pub(crate) name: String,
    pub(crate) about: String,
    /// Built into the engine: its tables are checked by `config::scope`.
    pub(crate) builtin: bool,
    pub(crate) build: BuildFn,
}

/// A job binary: its name (in usage and messages) and the pipelines it can run.
#[derive(Clone)]
pub struct App {
    name: String,
    pipelines: Vec<Registered>,
    default_job: bool,
}

impl App {
    /// A binary called `name` with no pipelines yet.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            pipelines: Vec::new(),
            default_job: false,
        }
    }

    /// Registers a pipeline: `job.toml`'s `pipeline = "<name>"` selects it, and `build`
    /// adds its operators to the pipeline it returns (start from `ctx.pipeline()`).
    /// `build` runs at every start and restart of the job, and once more for `validate`.
    pub fn pipeline(
        mut self,
        name: impl Into<String>,
        about: impl Into<String>,
        build: impl Fn(&Ctx<'_>) -> Result<Pipeline> + Send + Sync + 'static,
    ) -> Self {
        self.pipelines.push(Registered {
            name: name.into(),
            about: about.into(),
            builtin: false,
            build: Arc::new(move |ctx| {
                let p = build(ctx)?;
                p.build(ctx.parallelism())
            }),
        });
        self
    }

    /// Registers the engine's built-in pipelines (`latency`, `keyed-async`, the Nexmark
    /// queries), and makes `run` without a job directory run the built-in latency job.
    pub fn builtins(mut self) -> Self {
        for kind in PipelineKind::ALL {
            self.pipelines.push(Registered {
                name: kind.name().to_string(),
                about: kind.about().to_string(),
                builtin: true,
                build: Arc::new(|ctx| crate::pipelines::build(ctx.spec())),
            });
        }
        self.default_job = true;
        self
    }

    /// The binary's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The names of the pipelines it can run, in registration order.
    pub fn pipeline_names(&self) -> Vec<&str> {
        self.pipelines.iter().map(|p| p.name.as_str()).collect()
    }

    /// Parses the process's arguments, runs the command and returns its exit code: 0
    /// done, 2 a configuration error (the message names the file, the key and what is
    /// valid), 130 stopped by a signal, 1 anything else.
    pub fn main(self) -> ExitCode {
        cli::main(self)
    }
}

/// A binary with one pipeline, `name`, built by `build`: the whole command line of
/// `rill` for the user's job. Call it from `main`:
/// `fn main() -> ExitCode { rill_engine::app::main("my-job", |ctx| { … Ok(p) }) }`.
pub fn main(
    name: &str,
    build: impl Fn(&Ctx<'_>) -> Result<Pipeline> + Send + Sync + 'static,
) -> ExitCode {
    App::new(name).pipeline(name, "", build).main()
}
