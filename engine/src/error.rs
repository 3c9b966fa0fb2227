//! The engine's error type: one enum, structured context (which file, which key, which
//! operator), no catch-all string variants for conditions a caller branches on.

use std::path::PathBuf;

use crate::ids::CoreId;

/// Everything that can go wrong in the engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A job directory or one of its files is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),

    /// The machine cannot run the engine as configured (io_uring, memlock, CPUs).
    #[error("preflight check failed: {problem}\n  fix: {fix}")]
    Preflight {
        /// What is wrong.
        problem: String,
        /// How to fix it.
        fix: String,
    },

    /// The pipeline graph is not valid (built by code, not config).
    #[error("invalid pipeline: operator `{operator}`: {reason}")]
    Graph {
        /// The operator at fault.
        operator: String,
        /// Why.
        reason: String,
    },

    /// An executor could not be started or failed.
    #[error("executor on {core} failed: {reason}")]
    Executor {
        /// The core.
        core: CoreId,
        /// Why.
        reason: String,
    },

    /// An IO error on a named file.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done ("open", "read", "write", …).
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },

    /// A transactional sink was given output after the final checkpoint's barrier, which
    /// no checkpoint commits (the final checkpoint is aligned, so this is an engine bug).
    #[error(
        "{path}: {bytes} bytes of output arrived after the final checkpoint's barrier and \
         no checkpoint commits them"
    )]
    UncommittedOutput {
        /// The in-progress file that held them.
        path: PathBuf,
        /// How much output.
        bytes: u64,
    },

    /// An operator failed while processing a record.
    #[error("operator `{operator}` (partition {partition}) failed: {reason}")]
    Operator {
        /// The operator's name.
        operator: String,
        /// The partition index.
        partition: u32,
        /// Why.
        reason: String,
    },

    /// Another `rill run` holds the job directory's lock.
    #[error(
        "{}: the job directory is in use by another `rill run` ({holder}); only one may run \
         a job directory at a time: wait for it to end, or stop it (Ctrl-C, `kill -INT <pid>`)",
        lock.display()
    )]
    Locked {
        /// The lock file.
        lock: PathBuf,
        /// The process holding it: its pid and command line, as far as known.
        holder: String,
    },

    /// The job was stopped by a signal before its input was done.
    #[error("stopped by signal")]
    Stopped,

    /// The checkpoint to restore from cannot be used.
    #[error("cannot restore from checkpoint {}: {reason}", checkpoint.0)]
    Restore {
        /// The checkpoint.
        checkpoint: crate::ids::CheckpointId,
        /// Why, and what to do.
        reason: String,
    },

    /// Checkpoints failed more often in a row than `tolerable_failures` allows.
    #[error("checkpoint {} failed ({consecutive} in a row, more than checkpoint.tolerable_failures allows): {reason}", checkpoint.0)]
    CheckpointsFailing {
        /// The last failed checkpoint.
        checkpoint: crate::ids::CheckpointId,
        /// Consecutive failures.
        consecutive: u32,
        /// Why the last one failed.
        reason: String,
        /// The cause of a failure among them that a restart cannot fix (a full disk, ...).
        unfixable: Option<crate::checkpoint::restart::Unfixable>,
    },

    /// A job of several processes: checkpoint `checkpoint` was aborted for the whole job
    /// (a process restarted, failed its part, or did not deliver it in time). Every
    /// process then restarts from the newest checkpoint complete for the job (the restart
    /// strategy's restart; without one the process exits with code 75 for its supervisor
    /// to restart it).
    #[error("checkpoint {} did not complete for the whole job: {reason}; restarting from the newest global checkpoint", checkpoint.0)]
    GlobalRollback {
        /// The aborted checkpoint.
        checkpoint: crate::ids::CheckpointId,
        /// Why it was aborted.
        reason: String,
    },

    /// The checkpoint store failed (reading, recovering or publishing).
    #[error("checkpoint store: {0}")]
    Storage(#[from] rill_storage::Error),
}

impl EngineError {
    /// An IO error on `path` while doing `op`.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// The process exit code a binary should use for this error: 2 for bad
    /// configuration and a job directory another run holds, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Config(_) | Self::Locked { .. } => 2,
            // EX_TEMPFAIL: start this process again (docs/multi-process.md).
            Self::GlobalRollback { .. } => 75,
            _ => 1,
        }
    }

    /// The cause of this error when a restart cannot fix it (see
    /// [`crate::checkpoint::restart::Unfixable`]): an invalid configuration, or an OS error
    /// such as ENOSPC, EROFS or EACCES on a file.
    pub fn unfixable(&self) -> Option<crate::checkpoint::restart::Unfixable> {
        use crate::checkpoint::restart::Unfixable;
        match self {
            Self::Config(e) => Some(Unfixable::Config(e.to_string())),
            Self::Io { op, path, source } => {
                Unfixable::of_os_error(source.raw_os_error()?, *op, path.clone())
            }
            Self::Storage(e) => storage_unfixable(e),
            Self::CheckpointsFailing { unfixable, .. } => unfixable.clone(),
            _ => None,
        }
    }

    /// Whether a restart strategy may restart the job after this error: failures of the
    /// running job (operators, checkpoints, executors), not bad configuration, a failed
    /// start-up check or a stop by signal.
    pub fn is_restartable(&self) -> bool {
        matches!(
            self,
            Self::Operator { .. }
                | Self::Executor { .. }
                | Self::CheckpointsFailing { .. }
                | Self::GlobalRollback { .. }
                | Self::Io { .. }
        )
    }
}

/// The cause of a storage error when a restart cannot fix it.
pub fn storage_unfixable(e: &rill_storage::Error) -> Option<crate::checkpoint::restart::Unfixable> {
    let (errno, op, path) = e.os_error()?;
    crate::checkpoint::restart::Unfixable::of_os_error(errno, op.to_string(), path)
}

/// A problem with a job directory, naming the file, the key and what would be valid.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file could not be read.
    #[error("{file}: cannot read: {source}")]
    Read {
        /// The file.
        file: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A file is not valid TOML or does not match the schema (unknown key, wrong type).
    #[error("{file}: {message}")]
    Parse {
        /// The file.
        file: PathBuf,
        /// The parser's description, which names the key, its line and the valid keys.
        message: String,
    },
    /// A key has a value outside what is valid.
    #[error("{file}: key `{key}`: {problem}; valid: {valid}")]
    Invalid {
        /// The file.
        file: PathBuf,
        /// The key (dotted for nested tables).
        key: String,
        /// What is wrong with the value.
        problem: String,
        /// What would be valid.
        valid: String,
    },
    /// A file the job needs does not exist.
    #[error("{file}: missing: {why}")]
    Missing {
        /// The missing file.
        file: PathBuf,
        /// Why it is needed.
        why: String,
    },
}

/// The engine's result type.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;
