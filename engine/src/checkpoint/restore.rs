//! Restoring a job: which checkpoint to start from (the newest complete one, or one picked
//! with `--from`, skipping corrupt ones with a clear message), what the engine recorded in
//! its manifest (`Metadata`: source offsets, key groups, source parallelism), and checks
//! that the checkpoint fits the job about to run. Keyed state itself is read in place by
//! each partition from the mapped records (see `Instantiator::setup_state`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rill_storage::{Checkpoint, CheckpointStore, KeyGroupRange, OperatorId, RecordView};
use serde::{Deserialize, Serialize};

use super::protocol::{SourceOffset, TriggerKind};
use crate::dataflow::JobGraph;
use crate::error::{EngineError, Result};
use crate::ids::{CheckpointId, KeyGroup};

/// The format version of [`Metadata`] this build writes. Version 2 added a source
/// partition's multi-offset `position` next to its `offset`; version 1 (offsets only)
/// still restores.
pub const METADATA_VERSION: u32 = 2;

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

/// Refuses metadata of a format version this build does not read.
fn check_version(id: CheckpointId, version: u32) -> Result<()> {
    if version == 0 || version > METADATA_VERSION {
        return Err(EngineError::Restore {
            checkpoint: id,
            reason: format!(
                "its engine metadata has format version {version}; this build reads versions \
                 1 to {METADATA_VERSION} (restore it with the build that wrote it, or start \
                 over with --fresh)"
            ),
        });
    }
    Ok(())
}

/// A checkpoint to restore from, loaded and validated.
pub struct Restore {
    /// Its id.
    pub id: CheckpointId,
    /// The engine's metadata.
    pub meta: Metadata,
    checkpoint: Checkpoint,
    offsets: HashMap<(String, u32), u64>,
    positions: HashMap<(String, u32), Vec<u8>>,
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
        check_version(id, meta.version)?;
        let positions = meta
            .offsets
            .iter()
            .filter_map(|o| {
                let p = o.position.clone()?;
                Some(((o.operator.clone(), o.partition), p))
            })
            .collect();
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
            positions,
        })
    }

    /// The offset source partition `partition` of `operator` resumes from.
    pub fn offset(&self, operator: &str, partition: u32) -> Option<u64> {
        self.offsets
            .get(&(operator.to_string(), partition))
            .copied()
    }

    /// The multi-offset position source partition `partition` of `operator` resumes
    /// from, when it reported one (see `AsyncSourcePartition::position`).
    pub fn position(&self, operator: &str, partition: u32) -> Option<&[u8]> {
        self.positions
            .get(&(operator.to_string(), partition))
            .map(Vec::as_slice)
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

/// What a job's last recorded run (`<job dir>/.rill/last-run.json`) says about its
/// checkpoints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EarlierRun {
    /// The digest it was read from.
    pub digest: PathBuf,
    /// The newest checkpoint that run left complete.
    pub newest_checkpoint: CheckpointId,
}

/// Says what recovery expected, what it found and what the run starts from, when they
/// differ: `history` are the checkpoints `history.jsonl` lists as complete, `manifests`
/// those with a manifest file, `skipped` the ones passed over as unusable, `found` the one
/// the run restores from. `None` when the history's newest complete checkpoint is the one
/// restored (or older) and nothing was skipped.
pub fn explain(
    history: &[CheckpointId],
    manifests: &[CheckpointId],
    skipped: &[CheckpointId],
    found: Option<CheckpointId>,
    manifest_dir: &Path,
) -> Option<String> {
    // The newest complete checkpoint per the history (older ones may be gone by
    // retention, which the history does not record).
    let expected = history.iter().max().copied();
    let missing = expected.filter(|e| found.map_or(true, |f| *e > f) && !manifests.contains(e));
    if missing.is_none() && skipped.is_empty() {
        return None;
    }
    let start = match found {
        Some(f) => format!("restoring from checkpoint {}", f.0),
        None => "no checkpoint is usable; starting from the beginning of the input".into(),
    };
    Some(match missing {
        None => start,
        Some(m) => format!(
            "the checkpoint history lists checkpoint {} as complete but its manifest is \
             missing from {}; {start}",
            m.0,
            manifest_dir.display()
        ),
    })
}

/// Whether `dir` holds anything of a job's checkpoints: a manifest, a core's log or the
/// history (`rill run` puts its pid file there before the restore).
fn holds_checkpoints(dir: &Path) -> Result<bool> {
    Ok(!rill_storage::layout::list_manifests(dir)?.is_empty()
        || !rill_storage::layout::list_cores(dir)?.is_empty()
        || super::history::path(dir).exists())
}

/// Recovers the checkpoint directory (truncating torn log tails) and loads the checkpoint
/// to start from. A newer checkpoint that is corrupt is skipped with a message naming it
/// and why; checkpoints `history.jsonl` lists as complete whose manifests are missing are
/// named too, with the checkpoint the run starts from instead; `warn` receives those
/// messages. A missing or empty directory is an error when `earlier` (the job's last
/// recorded run) left checkpoints in it: starting over would replace the committed output,
/// so that takes `--fresh`.
pub fn load(
    dir: &Path,
    from: StartFrom,
    earlier: Option<&EarlierRun>,
    mut warn: impl FnMut(String),
) -> Result<Option<Restore>> {
    if from == StartFrom::Fresh {
        return Ok(None);
    }
    let exists = match std::fs::metadata(dir) {
        Ok(_) => true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(EngineError::io("open the checkpoint directory", dir, e)),
    };
    if !exists {
        if let StartFrom::Id(id) = from {
            return Err(EngineError::Restore {
                checkpoint: id,
                reason: format!("the checkpoint directory {} does not exist", dir.display()),
            });
        }
    }
    if let Some(e) = earlier.filter(|_| from == StartFrom::Newest) {
        if !exists || !holds_checkpoints(dir)? {
            return Err(EngineError::Restore {
                checkpoint: e.newest_checkpoint,
                reason: format!(
                    "the checkpoint directory {} does not exist or is empty (no manifests, \
                     logs or history), but the job's last run ({}) left checkpoint {} complete \
                     in it. If the directory moved, set checkpoint.dir; to start from the \
                     beginning of the input instead (the committed output of earlier runs is \
                     replaced), run with --fresh",
                    dir.display(),
                    e.digest.display(),
                    e.newest_checkpoint.0
                ),
            });
        }
    }
    if !exists {
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
            let manifests: Vec<CheckpointId> = rill_storage::layout::list_manifests(dir)?
                .into_iter()
                .map(|c| CheckpointId(c.0))
                .collect();
            let (found, skipped) = store.newest_complete()?;
            for s in &skipped {
                warn(format!(
                    "checkpoint {} is unusable and was skipped: {}",
                    s.checkpoint.0, s.error
                ));
            }
            let history: Vec<CheckpointId> = match super::history::read(dir) {
                Ok(entries) => entries
                    .iter()
                    .filter(|e| e.state == super::history::State::Complete)
                    .map(|e| CheckpointId(e.id))
                    .collect(),
                Err(e) => {
                    warn(format!(
                        "the checkpoint history {} cannot be read ({e}); what it lists as \
                         complete is not checked against the manifests",
                        super::history::path(dir).display()
                    ));
                    Vec::new()
                }
            };
            let skipped: Vec<CheckpointId> = skipped
                .iter()
                .map(|s| CheckpointId(s.checkpoint.0))
                .collect();
            let found_id = found.as_ref().map(|c| CheckpointId(c.id().0));
            if let Some(m) = explain(
                &history,
                &manifests,
                &skipped,
                found_id,
                &rill_storage::layout::manifest_dir(dir),
            ) {
                warn(m);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[u64]) -> Vec<CheckpointId> {
        v.iter().copied().map(CheckpointId).collect()
    }

    fn explain_of(
        history: &[u64],
        manifests: &[u64],
        skipped: &[u64],
        found: Option<u64>,
    ) -> Option<String> {
        explain(
            &ids(history),
            &ids(manifests),
            &ids(skipped),
            found.map(CheckpointId),
            Path::new("/ck/manifests"),
        )
    }

    #[test]
    fn nothing_is_said_when_the_history_agrees() {
        // First run; a normal restore; retention deleted older ones; a checkpoint
        // published whose history line was lost in a crash.
        assert_eq!(explain_of(&[], &[], &[], None), None);
        assert_eq!(explain_of(&[1, 2, 3], &[2, 3], &[], Some(3)), None);
        assert_eq!(explain_of(&[1, 2], &[2, 3], &[], Some(3)), None);
    }

    #[test]
    fn a_missing_newest_manifest_is_named_with_the_checkpoint_restored_instead() {
        assert_eq!(
            explain_of(&[10, 11, 12], &[10, 11], &[], Some(11)).unwrap(),
            "the checkpoint history lists checkpoint 12 as complete but its manifest is \
             missing from /ck/manifests; restoring from checkpoint 11"
        );
        assert_eq!(
            explain_of(&[10, 11, 12], &[10], &[], Some(10)).unwrap(),
            "the checkpoint history lists checkpoint 12 as complete but its manifest is \
             missing from /ck/manifests; restoring from checkpoint 10"
        );
    }

    #[test]
    fn with_no_usable_checkpoint_the_run_says_it_starts_from_the_beginning() {
        assert_eq!(
            explain_of(&[10, 11, 12], &[], &[], None).unwrap(),
            "the checkpoint history lists checkpoint 12 as complete but its manifest is \
             missing from /ck/manifests; no checkpoint is usable; starting from the \
             beginning of the input"
        );
        assert_eq!(
            explain_of(&[12], &[12], &[12], None).unwrap(),
            "no checkpoint is usable; starting from the beginning of the input"
        );
    }

    #[test]
    fn a_skipped_checkpoint_is_followed_by_where_the_run_starts() {
        assert_eq!(
            explain_of(&[11, 12], &[11, 12], &[12], Some(11)).unwrap(),
            "restoring from checkpoint 11"
        );
    }

    #[test]
    fn metadata_of_version_1_still_reads_and_newer_versions_are_refused() {
        // As version 1 wrote it: offsets without positions.
        let v1 = r#"{"version":1,"kind":"periodic","max_key_groups":128,
            "sources":[["read",1]],
            "offsets":[{"operator":"read","partition":0,"offset":42}],
            "cores":1,"triggered_unix_ms":5}"#;
        let meta: Metadata = serde_json::from_str(v1).unwrap();
        assert_eq!(meta.offsets[0].offset, 42);
        assert_eq!(meta.offsets[0].position, None);
        assert!(check_version(CheckpointId(3), meta.version).is_ok());
        assert!(check_version(CheckpointId(3), METADATA_VERSION).is_ok());
        let e = check_version(CheckpointId(3), METADATA_VERSION + 1).unwrap_err();
        assert!(e.to_string().contains("format version 3"), "{e}");
    }

    #[test]
    fn a_position_round_trips_and_is_absent_when_none() {
        let with = SourceOffset {
            operator: "kafka".into(),
            partition: 1,
            offset: 7,
            position: Some(vec![1, 2, 3]),
        };
        let json = serde_json::to_string(&with).unwrap();
        assert_eq!(serde_json::from_str::<SourceOffset>(&json).unwrap(), with);
        let without = SourceOffset {
            position: None,
            ..with
        };
        let json = serde_json::to_string(&without).unwrap();
        assert!(!json.contains("position"), "{json}");
    }
}
