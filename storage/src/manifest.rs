//! Checkpoint manifests: what a checkpoint consists of (every record, plus the engine's opaque
//! metadata such as source offsets), their checksummed file format, and atomic publication
//! (write temp, fsync, rename, fsync directory). It does not read or validate the records a
//! manifest names (see [`crate::checkpoint`]).

use crate::error::{Error, IoOp, Result};
use crate::frame::{decode, encode_into, RecordKind, RecordRef, RecordSpec};
use crate::ids::{CheckpointId, CoreId, Lsn, Owner};
use crate::layout;
use crate::snapshot::chain_problem;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

/// The record that makes a checkpoint complete.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The checkpoint.
    pub checkpoint: CheckpointId,
    /// Every record the checkpoint needs: for incremental state, the whole chain (base and
    /// every delta up to this checkpoint), which is what keeps retention from deleting it.
    pub records: Vec<RecordRef>,
    /// A savepoint is never deleted by retention.
    pub savepoint: bool,
    /// Opaque bytes for the engine (source offsets, timing, ...).
    pub metadata: Vec<u8>,
}

impl Manifest {
    /// A manifest for `checkpoint` made of `records` (as returned by the log writers) and
    /// the engine's `metadata`.
    pub fn new(checkpoint: CheckpointId, records: Vec<RecordRef>, metadata: Vec<u8>) -> Self {
        Manifest {
            checkpoint,
            records,
            savepoint: false,
            metadata,
        }
    }

    /// Snapshot records grouped per owner into chains (full snapshot first, then deltas in
    /// checkpoint order), each chain's shape checked. Blob records are not included.
    pub fn chains(&self) -> Result<BTreeMap<Owner, Vec<RecordRef>>> {
        let mut chains: BTreeMap<Owner, Vec<RecordRef>> = BTreeMap::new();
        for r in &self.records {
            if matches!(r.kind, RecordKind::Full | RecordKind::Delta) {
                chains.entry(r.owner).or_default().push(*r);
            }
        }
        for (owner, chain) in chains.iter_mut() {
            chain.sort_by_key(|r| (r.kind != RecordKind::Full, r.checkpoint));
            let shape: Vec<_> = chain
                .iter()
                .map(|r| (r.kind, r.checkpoint, r.base))
                .collect();
            if let Some(problem) = chain_problem(&shape) {
                return Err(Error::BrokenChain {
                    checkpoint: self.checkpoint,
                    owner: *owner,
                    problem,
                });
            }
        }
        Ok(chains)
    }

    /// The (core, segment) pairs this manifest's records live in.
    pub fn segments(&self) -> impl Iterator<Item = (CoreId, Lsn)> + '_ {
        self.records.iter().map(|r| (r.core, r.segment))
    }

    /// Encodes the manifest file: one framed record (kind Manifest) holding JSON.
    pub fn encode(&self) -> Vec<u8> {
        let json = serde_json::to_vec(self).expect("a manifest always serializes");
        let spec = RecordSpec {
            kind: RecordKind::Manifest,
            checkpoint: self.checkpoint,
            base: self.checkpoint,
            owner: Owner::default(),
        };
        let mut out = Vec::with_capacity(json.len() + 80);
        let header = encode_into(&mut out, &spec, Lsn(0), CoreId(0), &json);
        // A manifest file is exactly one record: no alignment padding to go unchecked.
        out.truncate(header.record_len() as usize);
        out
    }

    /// Decodes a manifest file's bytes; `path` is only used in errors.
    pub fn decode(bytes: &[u8], path: &Path) -> Result<Manifest> {
        let corrupt = |corruption| Error::Corrupt {
            path: path.to_path_buf(),
            offset: 0,
            corruption,
        };
        let (header, payload) = decode(bytes).map_err(corrupt)?;
        if header.record_len() != bytes.len() as u64 {
            return Err(corrupt(crate::error::Corruption::RefMismatch {
                field: "file length",
                expected: header.record_len(),
                found: bytes.len() as u64,
            }));
        }
        if header.kind != RecordKind::Manifest {
            return Err(corrupt(crate::error::Corruption::RefMismatch {
                field: "kind",
                expected: RecordKind::Manifest as u64,
                found: header.kind as u64,
            }));
        }
        let m: Manifest =
            serde_json::from_slice(payload).map_err(|source| Error::ManifestFormat {
                path: path.to_path_buf(),
                source,
            })?;
        if m.checkpoint != header.checkpoint {
            return Err(corrupt(crate::error::Corruption::RefMismatch {
                field: "checkpoint",
                expected: header.checkpoint.0,
                found: m.checkpoint.0,
            }));
        }
        Ok(m)
    }
}

/// Publishes `manifest` under `root` atomically: after this returns, the checkpoint is
/// complete and survives a crash; if it fails or the process dies, the previous state (no
/// manifest, or the old one) stays. Only pass records the log writers reported durable.
/// Blocks for two fsyncs; from a glommio executor, consider `spawn_blocking`.
pub fn publish(root: &Path, manifest: &Manifest) -> Result<()> {
    manifest.chains()?;
    let dir = layout::manifest_dir(root);
    layout::create_dir_durable(&dir)?;
    let tmp = layout::manifest_tmp_path(root, manifest.checkpoint);
    let path = layout::manifest_path(root, manifest.checkpoint);
    {
        let mut f = std::fs::File::create(&tmp).map_err(|e| Error::io(IoOp::Create, &tmp, e))?;
        f.write_all(&manifest.encode())
            .map_err(|e| Error::io(IoOp::Write, &tmp, e))?;
        f.sync_all().map_err(|e| Error::io(IoOp::Sync, &tmp, e))?;
    }
    std::fs::rename(&tmp, &path).map_err(|e| Error::io(IoOp::Rename, &path, e))?;
    layout::sync_dir(&dir)?;
    tracing::info!(
        checkpoint = manifest.checkpoint.0,
        records = manifest.records.len(),
        "manifest published"
    );
    Ok(())
}

/// Reads and decodes the manifest of `checkpoint`.
pub fn load(root: &Path, checkpoint: CheckpointId) -> Result<Manifest> {
    let path = layout::manifest_path(root, checkpoint);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::NoSuchCheckpoint {
                checkpoint,
                dir: layout::manifest_dir(root),
            })
        }
        Err(e) => return Err(Error::io(IoOp::Read, &path, e)),
    };
    let m = Manifest::decode(&bytes, &path)?;
    if m.checkpoint != checkpoint {
        return Err(Error::Corrupt {
            path,
            offset: 0,
            corruption: crate::error::Corruption::RefMismatch {
                field: "checkpoint",
                expected: checkpoint.0,
                found: m.checkpoint.0,
            },
        });
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_file_round_trip_and_bit_flips() {
        let m = Manifest::new(CheckpointId(3), Vec::new(), b"offsets".to_vec());
        let bytes = m.encode();
        assert_eq!(Manifest::decode(&bytes, Path::new("m")).unwrap(), m);
        for i in 0..bytes.len() * 8 {
            let mut b = bytes.clone();
            b[i / 8] ^= 1 << (i % 8);
            assert!(Manifest::decode(&b, Path::new("m"))
                .unwrap_err()
                .is_corruption());
        }
    }
}
