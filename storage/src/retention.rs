//! Retention: which manifests and segments can go. The decision is a pure function of facts
//! (manifests seen, segments seen, checkpoints in flight) so it is tested exhaustively
//! against a model; `apply` gathers the facts and does the deleting. It never deletes a
//! savepoint, anything a kept checkpoint references (incremental chains list their base, so
//! bases stay), a core's newest segment, or anything a checkpoint still in flight may
//! reference — whatever order checkpoints complete in (`max_concurrent > 1`, savepoints,
//! which are never subsumed).
//!
//! A checkpoint in flight writes its records in checkpoint order on every core, so its
//! chains are those of the newest complete checkpoint older than it (its *predecessor*)
//! plus records of checkpoints after that predecessor. Retention therefore keeps each
//! in-flight checkpoint's predecessor (manifest and segments) and every segment holding a
//! record newer than the oldest such predecessor (or than the newest kept checkpoint, when
//! nothing is in flight: a checkpoint triggered after the caller listed what is in flight
//! has a larger id than every manifest).

use crate::error::{Error, IoOp, Result};
use crate::frame::{checked_framed_len, decode_header, RecordKind};
use crate::ids::{CheckpointId, CoreId, Lsn};
use crate::layout;
use crate::manifest;
use crate::mmap::MappedFile;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// What retention knows about one manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestFacts {
    /// The checkpoint.
    pub checkpoint: CheckpointId,
    /// Whether the manifest parsed.
    pub valid: bool,
    /// Whether it is a savepoint.
    pub savepoint: bool,
    /// Segments its records live in.
    pub segments: BTreeSet<(CoreId, Lsn)>,
}

/// What retention knows about one segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentFacts {
    /// Core of the log.
    pub core: CoreId,
    /// Segment base Lsn.
    pub base: Lsn,
    /// Whether it is that core's newest segment (possibly being written).
    pub newest_of_core: bool,
    /// Newest checkpoint any of its snapshot/blob records belongs to (`None`: no records).
    pub max_checkpoint: Option<CheckpointId>,
    /// The segment starts with bytes that are not a record: keep it for inspection.
    pub unreadable: bool,
}

/// What to delete.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RetentionPlan {
    /// Checkpoints kept (newest first).
    pub keep: Vec<CheckpointId>,
    /// Manifests to delete.
    pub delete_manifests: Vec<CheckpointId>,
    /// Segments to delete.
    pub delete_segments: Vec<(CoreId, Lsn)>,
}

/// What `apply` did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// The plan carried out.
    pub plan: RetentionPlan,
    /// Files removed.
    pub removed: Vec<PathBuf>,
}

/// Decides what retention deletes, keeping the newest `keep` valid checkpoints (at least 1),
/// every savepoint, and everything the checkpoints in `in_flight` (triggered, neither
/// complete nor aborted) may need: see the module docs.
pub fn plan(
    manifests: &[ManifestFacts],
    segments: &[SegmentFacts],
    keep: usize,
    in_flight: &BTreeSet<CheckpointId>,
) -> RetentionPlan {
    assert!(keep >= 1, "retention must keep at least one checkpoint");
    let mut valid: Vec<&ManifestFacts> = manifests.iter().filter(|m| m.valid).collect();
    valid.sort_by_key(|m| std::cmp::Reverse(m.checkpoint));
    // The newest valid checkpoint older than `c`: the chains an in-flight `c` extends.
    let predecessor = |c: CheckpointId| valid.iter().find(|m| m.checkpoint < c);
    let mut kept_ids: BTreeSet<CheckpointId> = valid
        .iter()
        .enumerate()
        .filter(|(i, m)| *i < keep || m.savepoint)
        .map(|(_, m)| m.checkpoint)
        .collect();
    kept_ids.extend(
        in_flight
            .iter()
            .filter_map(|c| predecessor(*c))
            .map(|m| m.checkpoint),
    );
    let newest_kept = kept_ids.last().copied();
    // Records of checkpoints newer than this may belong to one still being taken.
    let floor = in_flight
        .iter()
        .map(|c| predecessor(*c).map_or(CheckpointId(0), |m| m.checkpoint))
        .chain(std::iter::once(newest_kept.unwrap_or(CheckpointId(0))))
        .min()
        .unwrap_or(CheckpointId(0));
    let delete_manifests = manifests
        .iter()
        .filter(|m| !kept_ids.contains(&m.checkpoint) && !m.savepoint)
        .filter(|m| m.valid || newest_kept.is_some_and(|n| m.checkpoint < n))
        .map(|m| m.checkpoint)
        .collect();
    // Kept checkpoints, and every savepoint (even one that does not load: evidence).
    let referenced: BTreeSet<(CoreId, Lsn)> = manifests
        .iter()
        .filter(|m| kept_ids.contains(&m.checkpoint) || m.savepoint)
        .flat_map(|m| m.segments.iter().copied())
        .collect();
    let delete_segments = segments
        .iter()
        .filter(|s| !s.newest_of_core && !s.unreadable && !referenced.contains(&(s.core, s.base)))
        .filter(|s| s.max_checkpoint.map_or(true, |m| m <= floor))
        .map(|s| (s.core, s.base))
        .collect();
    RetentionPlan {
        keep: kept_ids.iter().rev().copied().collect(),
        delete_manifests,
        delete_segments,
    }
}

/// Reads headers only (no CRC) to find the newest checkpoint a segment holds records of.
/// A core's newest segment may still be written and is never deleted, so it is not read.
/// A header that cannot be walked past, before the zero tail, makes the segment
/// `unreadable` (kept): the records after it are unknown.
fn segment_facts(
    path: &Path,
    core: CoreId,
    base: Lsn,
    newest_of_core: bool,
) -> Result<SegmentFacts> {
    if newest_of_core {
        return Ok(SegmentFacts {
            core,
            base,
            newest_of_core,
            max_checkpoint: None,
            unreadable: false,
        });
    }
    let map = MappedFile::open(path)?;
    let bytes = map.as_ref().map(|m| m.bytes()).unwrap_or(&[]);
    let mut off = 0usize;
    let mut max_checkpoint = None;
    let mut unreadable = false;
    while off < bytes.len() {
        let rest = &bytes[off..];
        let step = decode_header(rest)
            .ok()
            .and_then(|h| checked_framed_len(h.payload_len).map(|step| (h, step)))
            .filter(|(_, step)| *step <= rest.len() as u64);
        match step {
            Some((h, step)) => {
                if h.kind != RecordKind::Padding {
                    max_checkpoint = max_checkpoint.max(Some(h.checkpoint));
                }
                off += step as usize;
            }
            None => {
                unreadable = rest.iter().take(4096).any(|b| *b != 0);
                break;
            }
        }
    }
    Ok(SegmentFacts {
        core,
        base,
        newest_of_core,
        max_checkpoint,
        unreadable,
    })
}

fn remove(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(IoOp::Remove, path, e)),
    }
}

/// Gathers facts under `root`, plans and deletes: manifests first (directory synced), then
/// segments, so a crash midway never leaves a manifest naming a deleted segment.
/// `in_flight` are the checkpoints triggered and neither complete nor aborted (see
/// [`plan`]). `complete(id)` says whether checkpoint `id` loads in full (every record
/// present with its CRC intact); only those count towards the `keep` newest. A manifest
/// that cannot be read for a reason other than absence or corruption (EIO, EACCES, ...)
/// stops retention with that error: what it references is unknown.
pub fn apply(
    root: &Path,
    keep: usize,
    in_flight: &BTreeSet<CheckpointId>,
    complete: impl Fn(CheckpointId) -> bool,
) -> Result<RetentionReport> {
    let mut manifests = Vec::new();
    for checkpoint in layout::list_manifests(root)? {
        let m = match manifest::load(root, checkpoint) {
            Err(Error::NoSuchCheckpoint { .. }) => continue,
            Err(e) if !e.is_corruption() => return Err(e),
            m => m,
        };
        manifests.push(ManifestFacts {
            checkpoint,
            valid: m.is_ok() && complete(checkpoint),
            savepoint: m.as_ref().is_ok_and(|m| m.savepoint),
            segments: m.map(|m| m.segments().collect()).unwrap_or_default(),
        });
    }
    let mut segments = Vec::new();
    for core in layout::list_cores(root)? {
        let bases = layout::list_segments(root, core)?;
        for (i, base) in bases.iter().enumerate() {
            let path = layout::segment_path(root, core, *base);
            segments.push(segment_facts(&path, core, *base, i + 1 == bases.len())?);
        }
    }
    let plan = plan(&manifests, &segments, keep, in_flight);
    let mut removed = Vec::new();
    for c in &plan.delete_manifests {
        let p = layout::manifest_path(root, *c);
        remove(&p)?;
        removed.push(p);
    }
    if !plan.delete_manifests.is_empty() {
        layout::sync_dir(&layout::manifest_dir(root))?;
    }
    let mut dirs = BTreeSet::new();
    for (core, base) in &plan.delete_segments {
        let p = layout::segment_path(root, *core, *base);
        remove(&p)?;
        removed.push(p);
        dirs.insert(layout::core_dir(root, *core));
    }
    for d in dirs {
        layout::sync_dir(&d)?;
    }
    if !removed.is_empty() {
        tracing::info!(kept = ?plan.keep, removed = removed.len(), "retention");
    }
    Ok(RetentionReport { plan, removed })
}
