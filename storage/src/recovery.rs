//! Opening a checkpoint directory after a crash: truncates each core's torn tail to its last
//! valid record, removes half-published manifest temp files, and finds the newest complete
//! checkpoint (reporting the ones skipped and why). Running it twice gives the same result.
//! Run it before any log writer opens the directory. The tail decision is a pure function.

use crate::checkpoint::{Checkpoint, CheckpointStore, Skipped};
use crate::error::{Corruption, Error, IoOp, Result};
use crate::frame::{scan, Scan, ScanEnd};
use crate::ids::{CheckpointId, CoreId, Lsn};
use crate::layout;
use crate::manifest;
use crate::mmap::MappedFile;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What to do with the tail of a core's newest segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TailAction {
    /// Every byte is valid: nothing to do.
    Keep,
    /// Cut the file to `to` bytes (torn or never-written tail).
    Truncate {
        /// New length.
        to: u64,
    },
    /// Invalid bytes at `offset`, but a manifest references records at or after it: keep the
    /// file as evidence (the checkpoints naming those records will be skipped).
    KeepCorrupt {
        /// Where the invalid bytes start.
        offset: u64,
        /// What is wrong there.
        corruption: Corruption,
    },
}

/// Decides about a segment's tail from its scan, its length and the end of the furthest
/// record any manifest references in it.
pub fn tail_action(scan: &Scan, file_len: u64, referenced_end: Option<u64>) -> TailAction {
    if scan.valid_end >= file_len {
        return TailAction::Keep;
    }
    if referenced_end.is_some_and(|end| end > scan.valid_end) {
        let corruption = match scan.end {
            ScanEnd::Invalid(c) => c,
            _ => Corruption::TruncatedHeader {
                needed: 64,
                available: 0,
            },
        };
        return TailAction::KeepCorrupt {
            offset: scan.valid_end,
            corruption,
        };
    }
    TailAction::Truncate { to: scan.valid_end }
}

/// A tail that recovery cut off.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Truncation {
    /// The segment file.
    pub path: PathBuf,
    /// Length before.
    pub from_len: u64,
    /// Length after (just past the last valid record).
    pub to_len: u64,
    /// What was found at `to_len` (zeroes: never written; invalid: torn).
    pub found: ScanEnd,
}

/// Everything recovery did and found.
#[derive(Debug, Default)]
pub struct RecoveryReport {
    /// Torn or unwritten tails cut off.
    pub truncated: Vec<Truncation>,
    /// Invalid tails kept because manifests reference records in them: (file, offset, what).
    pub corrupt_tails: Vec<(PathBuf, u64, Corruption)>,
    /// Leftover manifest temp files removed.
    pub removed_tmp: Vec<PathBuf>,
    /// Checkpoints newer than the newest complete one, and why each is unusable.
    pub skipped: Vec<Skipped>,
    /// The checkpoint to restore from, if any.
    pub newest_complete: Option<CheckpointId>,
}

/// The outcome of [`recover`]: the report, the store, and the checkpoint to restore from.
#[derive(Debug)]
pub struct Recovered {
    /// What was done and found.
    pub report: RecoveryReport,
    /// The newest complete checkpoint, validated and mapped.
    pub checkpoint: Option<Checkpoint>,
    /// The store, for further listing, publishing and retention.
    pub store: CheckpointStore,
}

/// The end of the furthest record any manifest references, per segment. A manifest that is
/// corrupt (it names nothing usable) or gone since it was listed is passed over; one that
/// cannot be read for any other reason (EIO, EACCES, ...) stops recovery with that error:
/// the records it may name must not be taken for a torn tail and cut off.
fn referenced_ends(root: &Path) -> Result<BTreeMap<(CoreId, Lsn), u64>> {
    let mut ends: BTreeMap<(CoreId, Lsn), u64> = BTreeMap::new();
    for checkpoint in layout::list_manifests(root)? {
        let m = match manifest::load(root, checkpoint) {
            Ok(m) => m,
            Err(e) if e.is_corruption() || matches!(e, Error::NoSuchCheckpoint { .. }) => continue,
            Err(e) => return Err(e),
        };
        for r in &m.records {
            let end = r.lsn.0.saturating_sub(r.segment.0).saturating_add(r.len);
            let e = ends.entry((r.core, r.segment)).or_default();
            *e = (*e).max(end);
        }
    }
    Ok(ends)
}

/// Recovers the checkpoint directory `root` (which may not exist yet). A manifest that
/// cannot be read for a reason other than absence or corruption (EIO, EACCES, ...) stops it
/// with that error, before anything is truncated.
pub fn recover(root: &Path) -> Result<Recovered> {
    let mut report = RecoveryReport::default();
    for tmp in layout::list_manifest_tmps(root)? {
        std::fs::remove_file(&tmp).map_err(|e| Error::io(IoOp::Remove, &tmp, e))?;
        report.removed_tmp.push(tmp);
    }
    let ends = referenced_ends(root)?;
    for core in layout::list_cores(root)? {
        let Some(&last) = layout::list_segments(root, core)?.last() else {
            continue;
        };
        let path = layout::segment_path(root, core, last);
        let (s, len) = {
            let Some(map) = MappedFile::open(&path)? else {
                continue;
            };
            (scan(map.bytes(), last), map.bytes().len() as u64)
        };
        match tail_action(&s, len, ends.get(&(core, last)).copied()) {
            TailAction::Keep => {}
            TailAction::Truncate { to } => {
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(|e| Error::io(IoOp::Open, &path, e))?;
                f.set_len(to)
                    .map_err(|e| Error::io(IoOp::Truncate, &path, e))?;
                f.sync_all().map_err(|e| Error::io(IoOp::Sync, &path, e))?;
                if let ScanEnd::Invalid(c) = s.end {
                    tracing::warn!(path = %path.display(), offset = to, "truncated torn tail: {c}");
                }
                report.truncated.push(Truncation {
                    path,
                    from_len: len,
                    to_len: to,
                    found: s.end,
                });
            }
            TailAction::KeepCorrupt { offset, corruption } => {
                tracing::warn!(path = %path.display(), offset, "corrupt tail referenced by a manifest: {corruption}");
                report.corrupt_tails.push((path, offset, corruption));
            }
        }
    }
    let store = CheckpointStore::new(root);
    let (checkpoint, skipped) = store.newest_complete()?;
    report.skipped = skipped;
    report.newest_complete = checkpoint.as_ref().map(|c| c.id());
    Ok(Recovered {
        report,
        checkpoint,
        store,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(valid_end: u64, end: ScanEnd) -> Scan {
        Scan {
            records: Vec::new(),
            valid_end,
            end,
        }
    }

    #[test]
    fn tail_decisions() {
        let bad = ScanEnd::Invalid(Corruption::BadMagic { found: 1 });
        assert_eq!(
            tail_action(&s(100, ScanEnd::Clean), 100, None),
            TailAction::Keep
        );
        assert_eq!(
            tail_action(&s(64, ScanEnd::Zeroes), 4096, Some(64)),
            TailAction::Truncate { to: 64 }
        );
        assert_eq!(
            tail_action(&s(64, bad), 4096, None),
            TailAction::Truncate { to: 64 }
        );
        assert!(matches!(
            tail_action(&s(64, bad), 4096, Some(200)),
            TailAction::KeepCorrupt { offset: 64, .. }
        ));
    }
}
