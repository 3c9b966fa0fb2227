//! Checkpoints in object storage (`[checkpoint] dir = "s3://bucket/prefix"`), the
//! engine's side: before the cores start, the local write-ahead directory is brought in
//! line with the store (a checkpoint counts as complete only when its manifest is in the
//! store; what the restore needs is downloaded into an empty or stale local directory);
//! the uploads themselves run on the housekeeping thread (`shell::Janitor`), never on a
//! pinned core. The S3 client is `rill_storage::Remote`.

use std::path::Path;

use rill_storage::Remote;

use super::restore::StartFrom;
use crate::error::{EngineError, Result};
use crate::ids::CheckpointId;

/// What [`prepare`] did.
#[derive(Debug, Default)]
pub struct Prepared {
    /// The newest checkpoint whose manifest is in the store (new checkpoints are numbered
    /// after it, so that none overwrites an object already there).
    pub newest_in_store: Option<CheckpointId>,
    /// The checkpoint brought down from the store into the local directory, with the
    /// bytes of log downloaded for it.
    pub downloaded: Option<(CheckpointId, u64)>,
    /// Local manifests removed because the store does not have them (they never
    /// completed: the process died or the upload failed between the local publish and
    /// the upload).
    pub dropped_local: Vec<CheckpointId>,
}

/// Brings the local directory `dir` in line with the store `remote` before recovery:
/// removes local manifests the store does not have, then downloads the checkpoint to start
/// from (`from`: the newest one in the store that validates, or the one named) unless its
/// manifest is already local. A downloaded checkpoint that does not validate is reported
/// through `warn` and the next older one is tried. In every case (`--fresh` too) the
/// newest segment of each core in the store is brought down, so that the local log
/// writers start past them. Recovery and the usual validation run afterwards, on the
/// local directory.
pub fn prepare(
    remote: &mut Remote,
    dir: &Path,
    from: StartFrom,
    mut warn: impl FnMut(String),
) -> Result<Prepared> {
    let in_store = remote.list_manifests()?;
    let mut out = Prepared {
        newest_in_store: in_store.last().map(|c| CheckpointId(c.0)),
        ..Prepared::default()
    };
    for local in rill_storage::layout::list_manifests(dir)? {
        if !in_store.contains(&local) {
            let p = rill_storage::layout::manifest_path(dir, local);
            std::fs::remove_file(&p).map_err(|e| EngineError::io("remove", &p, e))?;
            out.dropped_local.push(CheckpointId(local.0));
        }
    }
    let candidates: Vec<rill_storage::CheckpointId> = match from {
        StartFrom::Fresh => Vec::new(),
        StartFrom::Newest => in_store.iter().rev().copied().collect(),
        StartFrom::Id(id) => {
            let id = rill_storage::CheckpointId(id.0);
            if !in_store.contains(&id) {
                return Err(EngineError::Restore {
                    checkpoint: CheckpointId(id.0),
                    reason: format!(
                        "its manifest is not in {} (checkpoints there: {:?})",
                        remote.url("manifests/"),
                        in_store.iter().map(|c| c.0).collect::<Vec<_>>()
                    ),
                });
            }
            vec![id]
        }
    };
    for id in candidates {
        if rill_storage::layout::manifest_path(dir, id).exists() {
            break; // the local log has it (a restart with the local directory intact)
        }
        let Some(bytes) = remote.download_checkpoint(dir, id)? else {
            continue; // deleted by retention since it was listed
        };
        let recovered = rill_storage::recover(dir)?;
        match recovered.store.load(id) {
            Ok(_) => {
                out.downloaded = Some((CheckpointId(id.0), bytes));
                break;
            }
            Err(e) => {
                warn(format!(
                    "checkpoint {} downloaded from {} is unusable ({e}); trying an older one",
                    id.0,
                    remote.url("")
                ));
                let p = rill_storage::layout::manifest_path(dir, id);
                std::fs::remove_file(&p).map_err(|e| EngineError::io("remove", &p, e))?;
            }
        }
    }
    // Whatever was or was not downloaded: the local log must start past every segment
    // in the store, or a new segment could take the name of one there (whose pieces
    // would then be taken for this one's).
    remote.download_newest_segments(dir)?;
    Ok(out)
}

/// The checkpoints whose manifests are in the store at `url` (what `rill checkpoints`
/// counts as complete).
pub fn complete_in_store(url: &str) -> Result<Vec<u64>> {
    Ok(Remote::open(url)?
        .list_manifests()?
        .into_iter()
        .map(|c| c.0)
        .collect())
}

/// What [`prepare_global`] decided, for a process of a job run as several processes.
#[derive(Debug, Default)]
pub struct PreparedGlobal {
    /// The newest checkpoint complete for the whole job (the one to restore, unless
    /// `--fresh` or `--from` said otherwise): `None` when there is none.
    pub restore: Option<CheckpointId>,
    /// The newest checkpoint id this process must not reuse: the newest of its own
    /// manifests in the store and of the job's global decisions (complete or aborted).
    pub newest_used: Option<CheckpointId>,
    /// This process's checkpoints, newer than the newest global one, that this start
    /// aborted for the whole job (an earlier run of this process uploaded them and died
    /// before their global manifest was written).
    pub aborted: Vec<CheckpointId>,
    /// The checkpoint brought down from the store, with the bytes of log downloaded.
    pub downloaded: Option<(CheckpointId, u64)>,
    /// Local manifests removed: not complete for the whole job.
    pub dropped_local: Vec<CheckpointId>,
}

/// [`prepare`] for process `process` of a job run as several processes: `own` is this
/// process's prefix in the store, `job` the job's (where the global decisions are).
///
/// A process restarts from the newest checkpoint complete for the whole job (its global
/// manifest is in the store), never from a newer one of its own: first, each of its own
/// manifests in the store without a global decision is aborted for the whole job
/// ([`rill_storage::Remote::abort_global`]; if process 0 published it first, it is
/// complete and may be restored). Local manifests that are not globally complete are
/// removed. A checkpoint to restore that does not validate is an error here, not a reason
/// to fall back to an older one: every process must restore the same checkpoint.
pub fn prepare_global(
    own: &mut Remote,
    job: &Remote,
    process: crate::ids::Process,
    dir: &Path,
    from: StartFrom,
) -> Result<PreparedGlobal> {
    let mine = own.list_manifests()?;
    let mut globals = job.list_globals()?;
    let mut out = PreparedGlobal::default();
    let undecided: Vec<rill_storage::CheckpointId> = mine
        .iter()
        .filter(|id| !globals.contains(id))
        .copied()
        .collect();
    for id in &undecided {
        let reason = format!(
            "process {process} restarted before checkpoint {} completed for the job",
            id.0
        );
        if job.abort_global(*id, &reason)?.is_none() {
            out.aborted.push(CheckpointId(id.0));
        }
        globals.push(*id);
    }
    globals.sort();
    out.newest_used = mine.last().max(globals.last()).map(|c| CheckpointId(c.0));
    let complete = |id: rill_storage::CheckpointId| -> Result<bool> {
        Ok(job.load_global(id)?.is_some_and(|g| g.is_complete()))
    };
    for local in rill_storage::layout::list_manifests(dir)? {
        if !mine.contains(&local) || !complete(local)? {
            let p = rill_storage::layout::manifest_path(dir, local);
            std::fs::remove_file(&p).map_err(|e| EngineError::io("remove", &p, e))?;
            out.dropped_local.push(CheckpointId(local.0));
        }
    }
    let wanted = match from {
        StartFrom::Fresh => None,
        StartFrom::Newest => job.newest_complete_global(None)?,
        StartFrom::Id(id) => {
            let id = rill_storage::CheckpointId(id.0);
            if !complete(id)? {
                return Err(EngineError::Restore {
                    checkpoint: CheckpointId(id.0),
                    reason: format!(
                        "it is not complete for the whole job: no global manifest at {}",
                        job.url(&format!("global/{:020}.manifest", id.0))
                    ),
                });
            }
            Some(id)
        }
    };
    if let Some(id) = wanted {
        if !rill_storage::layout::manifest_path(dir, id).exists() {
            let Some(bytes) = own.download_checkpoint(dir, id)? else {
                return Err(EngineError::Restore {
                    checkpoint: CheckpointId(id.0),
                    reason: format!(
                        "complete for the job, but this process's manifest is not at {}",
                        own.url(&format!("manifests/{:020}.manifest", id.0))
                    ),
                });
            };
            out.downloaded = Some((CheckpointId(id.0), bytes));
        }
        out.restore = Some(CheckpointId(id.0));
    }
    own.download_newest_segments(dir)?;
    Ok(out)
}
