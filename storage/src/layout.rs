//! Where things live under a checkpoint directory, and listing them. Pure path logic plus
//! directory listing; never writes.
//!
//! ```text
//! <root>/core-<N>/<first lsn, 20 digits>.seg   one append-only log per core
//! <root>/manifests/<checkpoint, 20 digits>.manifest
//! ```

use crate::error::{Error, IoOp, Result};
use crate::ids::{CheckpointId, CoreId, Lsn};
use std::path::{Path, PathBuf};

const SEG_EXT: &str = "seg";
const MANIFEST_EXT: &str = "manifest";

/// Directory of `core`'s log.
pub fn core_dir(root: &Path, core: CoreId) -> PathBuf {
    root.join(format!("core-{}", core.0))
}

/// Path of the segment of `core` whose first byte is `base`.
pub fn segment_path(root: &Path, core: CoreId, base: Lsn) -> PathBuf {
    core_dir(root, core).join(format!("{:020}.{SEG_EXT}", base.0))
}

/// Directory of the manifests.
pub fn manifest_dir(root: &Path) -> PathBuf {
    root.join("manifests")
}

/// Path of the manifest of `checkpoint`.
pub fn manifest_path(root: &Path, checkpoint: CheckpointId) -> PathBuf {
    manifest_dir(root).join(format!("{:020}.{MANIFEST_EXT}", checkpoint.0))
}

/// Temporary path a manifest is written to before its atomic rename.
pub fn manifest_tmp_path(root: &Path, checkpoint: CheckpointId) -> PathBuf {
    manifest_dir(root).join(format!("{:020}.{MANIFEST_EXT}.tmp", checkpoint.0))
}

fn parse_numbered(name: &str, ext: &str) -> Option<u64> {
    let stem = name.strip_suffix(ext)?.strip_suffix('.')?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

fn read_dir_names(dir: &Path) -> Result<Vec<String>> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(IoOp::Read, dir, e)),
    };
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| Error::io(IoOp::Read, dir, e))?;
        if let Some(name) = entry.file_name().to_str() {
            out.push(name.to_owned());
        }
    }
    Ok(out)
}

/// Cores that have a log directory under `root`, ascending.
pub fn list_cores(root: &Path) -> Result<Vec<CoreId>> {
    let mut cores: Vec<CoreId> = read_dir_names(root)?
        .iter()
        .filter_map(|n| n.strip_prefix("core-")?.parse().ok().map(CoreId))
        .collect();
    cores.sort();
    Ok(cores)
}

/// Segment base Lsns of `core`, ascending. Files that are not segments are ignored.
pub fn list_segments(root: &Path, core: CoreId) -> Result<Vec<Lsn>> {
    let mut segs: Vec<Lsn> = read_dir_names(&core_dir(root, core))?
        .iter()
        .filter_map(|n| parse_numbered(n, SEG_EXT).map(Lsn))
        .collect();
    segs.sort();
    Ok(segs)
}

/// Checkpoints that have a manifest file, ascending (whether or not it is valid).
pub fn list_manifests(root: &Path) -> Result<Vec<CheckpointId>> {
    let mut ids: Vec<CheckpointId> = read_dir_names(&manifest_dir(root))?
        .iter()
        .filter_map(|n| parse_numbered(n, MANIFEST_EXT).map(CheckpointId))
        .collect();
    ids.sort();
    Ok(ids)
}

/// Leftover temporary manifest files (from a crash during publish).
pub fn list_manifest_tmps(root: &Path) -> Result<Vec<PathBuf>> {
    let dir = manifest_dir(root);
    Ok(read_dir_names(&dir)?
        .into_iter()
        .filter(|n| n.ends_with(".tmp"))
        .map(|n| dir.join(n))
        .collect())
}

/// fsyncs a directory so that entries created, renamed or removed in it are durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    let f = std::fs::File::open(dir).map_err(|e| Error::io(IoOp::Open, dir, e))?;
    f.sync_all().map_err(|e| Error::io(IoOp::Sync, dir, e))
}

/// Creates `dir` (and any missing parents) and makes every entry on the way durable in
/// its parent. The parent of `dir` is synced even when `dir` already existed: a crash
/// between an earlier mkdir and its sync would otherwise leave the entry undurable.
pub fn create_dir_durable(dir: &Path) -> Result<()> {
    let mut created: Vec<&Path> = vec![dir];
    let mut d = dir;
    while let Some(parent) = d.parent().filter(|p| !p.as_os_str().is_empty()) {
        if parent.is_dir() {
            break;
        }
        created.push(parent);
        d = parent;
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(IoOp::Create, dir, e))?;
    for d in created.iter().rev() {
        if let Some(parent) = d.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let root = Path::new("/x");
        let p = segment_path(root, CoreId(3), Lsn(4096));
        assert_eq!(p, Path::new("/x/core-3/00000000000000004096.seg"));
        let name = p.file_name().unwrap().to_str().unwrap();
        assert_eq!(parse_numbered(name, SEG_EXT), Some(4096));
        assert_eq!(
            parse_numbered("00000000000000004096.seg.tmp", SEG_EXT),
            None
        );
        assert_eq!(parse_numbered("4096.seg", SEG_EXT), None);
    }
}
