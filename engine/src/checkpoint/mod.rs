//! Checkpoints and exactly-once recovery. The coordinator's rules are pure decisions
//! (`coordinator`, `restart`); `shell` carries them out on the first core; every core's
//! participants (sources, keyed operators, sinks) report to `core`, whose log writer
//! appends their snapshots through the core's io_uring (`runtime`); `restore` picks and
//! checks the checkpoint a job starts from; `remote` keeps checkpoints in S3-compatible
//! object storage; `history` is what `rill checkpoints` shows;
//! `codec` says what can be archived.

pub mod codec;
pub mod coordinator;
pub(crate) mod core;
pub mod history;
pub mod protocol;
pub mod remote;
pub mod restart;
pub mod restore;
pub(crate) mod runtime;
pub(crate) mod shell;

pub use coordinator::{AbortReason, CheckpointKind, Coordinator, CoordinatorConfig, Decision};
pub use restart::{RestartDecision, RestartStrategy, Restarts, Unfixable, UnfixableKind};
pub mod cli;
