//! Restoring a job: which checkpoint to start from (the newest complete one, or one picked
//! with `--from`, skipping corrupt ones with a clear message), what the engine recorded in
//! its manifest (`Metadata`: source offsets, key groups, source parallelism), and checks
//! that the checkpoint fits the job about to run. Keyed state itself is read in place by
//! each partition from the mapped records (see `Instantiator::setup_state`).

use std::collections::HashMap;
use std::path::Path;

use rill_storage::{Checkpoint, CheckpointStore, KeyGroupRange, OperatorId, RecordView};
use serde::{Deserialize, Serialize};

use super::protocol::{SourceOffset, TriggerKind};
use crate::dataflow::JobGraph;
use crate::error::{EngineError, Result};
use crate::ids::{CheckpointId, KeyGroup};

/// What the engine stores in a checkpoint's manifest besides the records.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    /// Format version.
    pub version: u32,
    /// Why it was taken.
    pub kind: TriggerKind,
    /// Key groups of the job (fixed for the life of its checkpoints).
    pub max_key_groups: u16,
    /// Parallelism of every source operator.
    pub sources: Vec<(String, u32)>,
    /// Every source partition's offset.
    pub offsets: Vec<SourceOffset>,
    /// How many cores took it.
    pub cores: usize,
    /// Trigger time, ms since the Unix epoch.
    pub triggered_unix_ms: u64,
}

/// A checkpoint to restore from, loaded and validated.
pub struct Restore {
    /// Its id.
    pub id: CheckpointId,
    /// The engine's metadata.
    pub meta: Metadata,
    checkpoint: Checkpoint,
    offsets: HashMap<(String, u32), u64>,
}

impl std::fmt::Debug for Restore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Restore").field("id", &self.id).finish()
    }
}

impl Restore {
    fn new(checkpoint: Checkpoint) -> Result<Self> {
        let id = CheckpointId(checkpoint.id().0);
        let meta: Metadata =
            serde_json::from_slice(checkpoint.metadata()).map_err(|e| EngineError::Restore {
                checkpoint: id,
                reason: format!("its manifest's engine metadata does not parse: {e}"),
            })?;
        let offsets = meta
            .offsets
            .iter()
            .map(|o| ((o.operator.clone(), o.partition), o.offset))
            .collect();
        Ok(Self {
            id,
            meta,
            checkpoint,
            offsets,
        })
    }

    /// The offset source partition `partition` of `operator` resumes from.
    pub fn offset(&self, operator: &str, partition: u32) -> Option<u64> {
        self.offsets
            .get(&(operator.to_string(), partition))
            .copied()
    }

    /// The chain of state `op` for key group `kg`, written by whichever partition owned
    /// it (on any number of cores).
    pub fn chain(&self, op: OperatorId, kg: KeyGroup) -> Option<&[RecordView]> {
        self.checkpoint
            .chains_overlapping(KeyGroupRange::single(u32::from(kg.0)))
            .find(|(o, _)| o.operator == op)
            .map(|(_, c)| c)
    }

    /// The blob records (channel state) of `op`, over every writer.
    pub fn blobs(&self, op: OperatorId) -> Vec<&RecordView> {
        self.checkpoint
            .manifest()
            .records
            .iter()
            .filter(|r| r.owner.operator == op && r.kind == rill_storage::RecordKind::Blob)
            .map(|r| r.owner)
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .flat_map(|o| self.checkpoint.blobs(&o))
            .collect()
    }

    /// Checks that this checkpoint can restore `graph`: same key groups, every source
    /// with the same parallelism (a source's offsets are per partition).
    pub fn check(&self, graph: &JobGraph) -> Result<()> {
        let bad = |reason: String| EngineError::Restore {
            checkpoint: self.id,
            reason,
        };
        if self.meta.max_key_groups != graph.max_key_groups() {
            return Err(bad(format!(
                "it was taken with max_key_groups = {}, the job now has {}; max_key_groups \
                 is fixed for the life of a job's checkpoints (start over with --fresh)",
                self.meta.max_key_groups,
                graph.max_key_groups()
            )));
        }
        for (name, par) in graph.sources() {
            match self.meta.sources.iter().find(|(n, _)| *n == name) {
                Some((_, p)) if *p != par => {
                    return Err(bad(format!(
                        "source `{name}` had {p} partitions, the job now has {par}; source \
                         offsets are per partition, so keep its parallelism (e.g. \
                         source.partitions = {p}) or start over with --fresh"
                    )))
                }
                Some(_) => {}
                None => {
                    return Err(bad(format!(
                        "the job has a source `{name}` the checkpoint does not know; it \
                         belongs to another pipeline (start over with --fresh)"
                    )))
                }
            }
        }
        Ok(())
    }
}

/// Which checkpoint a run starts from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartFrom {
    /// The newest complete checkpoint, if any.
    Newest,
    /// Ignore existing checkpoints.
    Fresh,
    /// This one (it must be complete).
    Id(CheckpointId),
}

/// Recovers the checkpoint directory (truncating torn log tails) and loads the checkpoint
/// to start from. A newer checkpoint that is corrupt is skipped with a message naming it
/// and why; `warn` receives those messages.
pub fn load(dir: &Path, from: StartFrom, mut warn: impl FnMut(String)) -> Result<Option<Restore>> {
    if from == StartFrom::Fresh || !dir.exists() {
        if let StartFrom::Id(id) = from {
            return Err(EngineError::Restore {
                checkpoint: id,
                reason: format!("the checkpoint directory {} does not exist", dir.display()),
            });
        }
        return Ok(None);
    }
    let recovered = rill_storage::recover(dir)?;
    for t in &recovered.report.truncated {
        match t.found {
            // The preallocated, never written end of the last segment: normal.
            rill_storage::frame::ScanEnd::Zeroes => tracing::debug!("checkpoint log: {t:?}"),
            _ => warn(format!(
                "checkpoint log {}: a torn or corrupt tail at byte {} was cut off ({:?}); \
                 the records before it are kept",
                t.path.display(),
                t.to_len,
                t.found
            )),
        }
    }
    let store = CheckpointStore::new(dir);
    let checkpoint = match from {
        StartFrom::Fresh => unreachable!("handled above"),
        StartFrom::Newest => {
            let (found, skipped) = store.newest_complete()?;
            for s in skipped {
                warn(format!(
                    "checkpoint {} is unusable and was skipped: {}",
                    s.checkpoint.0, s.error
                ));
            }
            found
        }
        StartFrom::Id(id) => Some(store.load(rill_storage::CheckpointId(id.0)).map_err(|e| {
            EngineError::Restore {
                checkpoint: id,
                reason: e.to_string(),
            }
        })?),
    };
    checkpoint.map(Restore::new).transpose()
}
