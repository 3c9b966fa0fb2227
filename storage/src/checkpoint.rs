//! The coordinator's and the restorer's view of a checkpoint directory: publish manifests,
//! list checkpoints, load one with every record validated, find the newest complete one
//! (skipping, with the reason, those whose records are missing or corrupt), mark savepoints
//! and apply retention. Appending records is the log writers' job, not this module's.

use crate::error::{Error, Result};
use crate::frame::{RecordKind, RecordRef};
use crate::ids::{CheckpointId, KeyGroupRange, Owner};
use crate::layout;
use crate::manifest::{self, Manifest};
use crate::reader::{LogReader, RecordView};
use crate::retention::{self, RetentionReport};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A checkpoint directory (the `dir` of the job's `[checkpoint]` table).
#[derive(Debug)]
pub struct CheckpointStore {
    root: PathBuf,
    reader: LogReader,
}

/// A checkpoint whose manifest parsed, as listed.
#[derive(Debug)]
pub struct CheckpointInfo {
    /// The checkpoint.
    pub checkpoint: CheckpointId,
    /// Its manifest, or why it does not parse.
    pub manifest: Result<Manifest>,
}

/// A checkpoint that was passed over while looking for the newest complete one.
#[derive(Debug)]
pub struct Skipped {
    /// The checkpoint.
    pub checkpoint: CheckpointId,
    /// Why it is unusable.
    pub error: Error,
}

/// A complete checkpoint, every record validated (CRC, header against reference) and mapped.
#[derive(Debug)]
pub struct Checkpoint {
    manifest: Manifest,
    chains: BTreeMap<Owner, Vec<RecordView>>,
    blobs: BTreeMap<Owner, Vec<RecordView>>,
}

impl Checkpoint {
    /// The checkpoint's id.
    pub fn id(&self) -> CheckpointId {
        self.manifest.checkpoint
    }

    /// Its manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The engine's opaque metadata (e.g. source offsets).
    pub fn metadata(&self) -> &[u8] {
        &self.manifest.metadata
    }

    /// Owners with keyed (full/delta) state.
    pub fn owners(&self) -> impl Iterator<Item = &Owner> {
        self.chains.keys()
    }

    /// `owner`'s incremental chain (full snapshot, then deltas), ready for
    /// [`crate::ChainView::open`]; a chain of one record is a plain full snapshot.
    pub fn chain(&self, owner: &Owner) -> Option<&[RecordView]> {
        self.chains.get(owner).map(Vec::as_slice)
    }

    /// Chains of every owner whose key groups overlap `groups` (restore after rescale).
    pub fn chains_overlapping(
        &self,
        groups: KeyGroupRange,
    ) -> impl Iterator<Item = (&Owner, &[RecordView])> {
        self.chains
            .iter()
            .filter(move |(o, _)| {
                o.key_groups.start < groups.end && groups.start < o.key_groups.end
            })
            .map(|(o, c)| (o, c.as_slice()))
    }

    /// `owner`'s blob records (opaque state) in manifest order.
    pub fn blobs(&self, owner: &Owner) -> &[RecordView] {
        self.blobs.get(owner).map(Vec::as_slice).unwrap_or(&[])
    }
}

impl CheckpointStore {
    /// The checkpoint directory `root` (created on first publish). Run [`crate::recover`]
    /// first after a crash.
    pub fn new(root: &Path) -> Self {
        CheckpointStore {
            root: root.to_path_buf(),
            reader: LogReader::new(root),
        }
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The reader used for loading (shares mappings between loads).
    pub fn reader(&self) -> &LogReader {
        &self.reader
    }

    /// Publishes `manifest` atomically; see [`manifest::publish`].
    pub fn publish(&self, manifest: &Manifest) -> Result<()> {
        manifest::publish(&self.root, manifest)
    }

    /// Every checkpoint with a manifest file, oldest first, with its parsed manifest or why
    /// it does not parse. Records are not read.
    pub fn list(&self) -> Result<Vec<CheckpointInfo>> {
        Ok(layout::list_manifests(&self.root)?
            .into_iter()
            .map(|checkpoint| CheckpointInfo {
                checkpoint,
                manifest: manifest::load(&self.root, checkpoint),
            })
            .collect())
    }

    /// Loads `checkpoint`, validating every record it names (present, matching its
    /// reference, CRC intact). Typed (rkyv) validation happens when views are opened.
    pub fn load(&self, checkpoint: CheckpointId) -> Result<Checkpoint> {
        let manifest = manifest::load(&self.root, checkpoint)?;
        let chain_refs = manifest.chains()?;
        let read = |r: &RecordRef| {
            self.reader.read(r).map_err(|e| Error::BadCheckpointRecord {
                checkpoint,
                core: r.core,
                lsn: r.lsn,
                source: Box::new(e),
            })
        };
        let mut chains = BTreeMap::new();
        for (owner, refs) in &chain_refs {
            chains.insert(*owner, refs.iter().map(read).collect::<Result<Vec<_>>>()?);
        }
        let mut blobs: BTreeMap<Owner, Vec<RecordView>> = BTreeMap::new();
        for r in manifest
            .records
            .iter()
            .filter(|r| r.kind == RecordKind::Blob)
        {
            blobs.entry(r.owner).or_default().push(read(r)?);
        }
        Ok(Checkpoint {
            manifest,
            chains,
            blobs,
        })
    }

    /// The newest checkpoint that loads, and the newer ones skipped on the way (each with its
    /// reason, also logged). `validate` may add typed checks (e.g. open every view).
    pub fn newest_complete_with(
        &self,
        mut validate: impl FnMut(&Checkpoint) -> Result<()>,
    ) -> Result<(Option<Checkpoint>, Vec<Skipped>)> {
        let mut skipped = Vec::new();
        for checkpoint in layout::list_manifests(&self.root)?.into_iter().rev() {
            match self.load(checkpoint).and_then(|c| validate(&c).map(|()| c)) {
                Ok(c) => return Ok((Some(c), skipped)),
                Err(error)
                    if error.is_corruption() || matches!(error, Error::NoSuchCheckpoint { .. }) =>
                {
                    tracing::warn!(checkpoint = checkpoint.0, "skipping checkpoint: {error}");
                    skipped.push(Skipped { checkpoint, error });
                }
                Err(e) => return Err(e),
            }
        }
        Ok((None, skipped))
    }

    /// [`CheckpointStore::newest_complete_with`] without extra checks.
    pub fn newest_complete(&self) -> Result<(Option<Checkpoint>, Vec<Skipped>)> {
        self.newest_complete_with(|_| Ok(()))
    }

    /// Marks `checkpoint` as a savepoint (republishing its manifest atomically): retention
    /// never deletes it or anything it references.
    pub fn mark_savepoint(&self, checkpoint: CheckpointId) -> Result<()> {
        let mut m = manifest::load(&self.root, checkpoint)?;
        m.savepoint = true;
        manifest::publish(&self.root, &m)
    }

    /// Keeps the newest `keep` complete checkpoints and every savepoint; deletes older
    /// manifests and every segment nothing kept references (never a core's newest segment,
    /// never one that a checkpoint in `in_flight` may still reference, whatever order
    /// checkpoints complete in: see [`retention`]). `in_flight` are the checkpoints
    /// triggered and neither complete nor aborted; every other checkpoint without a
    /// manifest is taken to be dead.
    pub fn retain(
        &self,
        keep: usize,
        in_flight: &BTreeSet<CheckpointId>,
    ) -> Result<RetentionReport> {
        // Only a checkpoint that loads (records present, CRCs intact) counts as complete:
        // a manifest that parses but names a corrupt record must not displace an older
        // good one.
        let report = retention::apply(&self.root, keep, in_flight, |id| self.load(id).is_ok())?;
        self.reader.forget_deleted();
        Ok(report)
    }
}
