//! What a pipeline's build function gets: the job's configuration, read on demand and
//! typed, with a note of which optional tables it read (a table set in `job.toml` that
//! the pipeline never reads is refused before the job runs).

use std::cell::Cell;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use crate::asyncio::AsyncOptions;
use crate::config::asyncio::LookupConfig;
use crate::config::JobSpec;
use crate::dataflow::Pipeline;
use crate::error::{ConfigError, Result};

/// The optional tables of `job.toml` a pipeline of the job's own binary may read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Table {
    Params,
    Async,
    Lookup,
}

impl Table {
    pub(crate) const ALL: [Table; 3] = [Table::Params, Table::Async, Table::Lookup];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Table::Params => "params",
            Table::Async => "async",
            Table::Lookup => "lookup",
        }
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }

    pub(crate) fn is_set(self, spec: &JobSpec) -> bool {
        match self {
            Table::Params => spec.job.params.is_some(),
            Table::Async => spec.job.async_io.is_some(),
            Table::Lookup => spec.job.lookup.is_some(),
        }
    }
}

/// The build context of a job: its configuration (`job.toml` after `--set`, and the
/// cores) and helpers to read the job's own `[params]` and the engine tables a pipeline
/// may use. Given to the build function each time the job (re)starts.
pub struct Ctx<'a> {
    spec: &'a JobSpec,
    read: Cell<u8>,
}

impl<'a> Ctx<'a> {
    /// The context of `spec`.
    pub fn new(spec: &'a JobSpec) -> Self {
        Self {
            spec,
            read: Cell::new(0),
        }
    }

    /// The whole resolved job: `job.toml`, the cores, the job directory.
    pub fn spec(&self) -> &'a JobSpec {
        self.spec
    }

    /// A new pipeline with the job's `max_key_groups`. Return it from the build function
    /// once its operators are added; every operator without an explicit `.parallelism`
    /// gets the job's (`parallelism`, or one partition per core).
    pub fn pipeline(&self) -> Pipeline {
        Pipeline::new(self.spec.job.max_key_groups)
    }

    /// The job's default parallelism: `parallelism` from `job.toml`, or one partition per
    /// configured core.
    pub fn parallelism(&self) -> u32 {
        self.spec.default_parallelism()
    }

    /// The job directory.
    pub fn dir(&self) -> &'a Path {
        &self.spec.dir
    }

    /// A path from the job's configuration, relative to the job directory unless
    /// absolute.
    pub fn resolve(&self, path: impl AsRef<Path>) -> PathBuf {
        self.spec.resolve(path.as_ref())
    }

    /// `job.toml`'s path, for error messages.
    pub fn job_file(&self) -> PathBuf {
        self.spec.dir.join("job.toml")
    }

    /// The job's own parameters: the `[params]` table of `job.toml` (after `--set
    /// params.x=…`), deserialized into `T`. An absent table reads as an empty one, so a
    /// `T` whose fields all have serde defaults works without it. An error names the file,
    /// the key (`params.window_ms`) and what serde expected there, and exits 2 like every
    /// configuration error.
    pub fn params<T: DeserializeOwned>(&self) -> Result<T> {
        self.mark(Table::Params);
        let table = self.spec.job.params.clone().unwrap_or_default();
        serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
            let path = e.path().to_string();
            let key = if path == "." || path.is_empty() {
                "params".to_string()
            } else {
                format!("params.{path}")
            };
            // The first line: toml adds "in `key`", which the key above already says.
            let message = e.into_inner().to_string();
            let (problem, valid) = params_problem(message.lines().next().unwrap_or("").trim_end());
            ConfigError::Invalid {
                file: self.job_file(),
                key,
                problem,
                valid,
            }
            .into()
        })
    }

    /// Validates a parameter the type system cannot: `Ok` when `ok`, else a
    /// configuration error naming `params.<key>`, the value and what would be valid.
    pub fn check(
        &self,
        ok: bool,
        key: &str,
        value: impl std::fmt::Display,
        valid: &str,
    ) -> Result<()> {
        if ok {
            return Ok(());
        }
        Err(ConfigError::Invalid {
            file: self.job_file(),
            key: format!("params.{key}"),
            problem: value.to_string(),
            valid: valid.to_string(),
        }
        .into())
    }

    /// The async operator's options from `[async]` (mode, capacity, timeout, retries,
    /// circuit breaker; the defaults when the table is absent), for
    /// `Stream::async_map` and friends.
    pub fn async_options<T, U>(&self) -> AsyncOptions<T, U> {
        self.mark(Table::Async);
        self.spec.job.async_io.clone().unwrap_or_default().options()
    }

    /// The `[lookup]` table (the defaults when absent): the service
    /// `asyncio::service::Service::new` connects to.
    pub fn lookup(&self) -> LookupConfig {
        self.mark(Table::Lookup);
        self.spec.job.lookup.clone().unwrap_or_default()
    }

    fn mark(&self, t: Table) {
        self.read.set(self.read.get() | t.bit());
    }

    /// Whether the build read `t`.
    pub(crate) fn has_read(&self, t: Table) -> bool {
        self.read.get() & t.bit() != 0
    }
}

/// What is wrong and what would be valid, from serde's message.
fn params_problem(message: &str) -> (String, String) {
    if let Some(rest) = message.strip_prefix("unknown field") {
        let valid = match rest.split_once("expected ") {
            Some((_, expected)) => expected.to_string(),
            None => "remove it".into(),
        };
        ("the job has no such parameter".into(), valid)
    } else if let Some(field) = message.strip_prefix("missing field ") {
        ("missing".into(), format!("set {field} in [params]"))
    } else if let Some((problem, expected)) = message.split_once(", expected ") {
        (problem.to_string(), expected.to_string())
    } else {
        (
            message.to_string(),
            "see the job's documentation of its [params]".into(),
        )
    }
}
