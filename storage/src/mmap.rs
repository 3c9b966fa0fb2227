//! The one place that memory-maps files (read-only). Everything else sees a `&[u8]`.
//! Mapping is `unsafe` because the bytes could change underneath us; the module keeps the
//! conditions that make it sound written next to each block.
#![allow(unsafe_code)]

use crate::error::{Error, IoOp, Result};
use std::path::{Path, PathBuf};

/// A read-only mapping of a whole file (an empty file maps to an empty slice).
#[derive(Debug)]
pub struct MappedFile {
    path: PathBuf,
    map: Option<memmap2::Mmap>,
}

impl MappedFile {
    /// Maps `path` read-only. `Ok(None)` when the file does not exist.
    pub fn open(path: &Path) -> Result<Option<MappedFile>> {
        let file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(IoOp::Open, path, e)),
        };
        let len = file
            .metadata()
            .map_err(|e| Error::io(IoOp::Read, path, e))?
            .len();
        let map = if len == 0 {
            None
        } else {
            // SAFETY: the mapping is read-only and only ever handed out as `&[u8]` whose
            // contents are validated (bounds, CRC, rkyv bytecheck) before any typed use, so
            // arbitrary bytes cannot cause undefined behaviour through our reads. What remains
            // is the file changing while mapped: segments are append-only, a segment is read
            // only at positions a writer reported durable, recovery truncates only before any
            // reader exists, and retention deletes (unlinks) files, which leaves existing
            // mappings valid. Truncation by a foreign process would SIGBUS, as for any mmap.
            let map =
                unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(IoOp::Map, path, e))?;
            Some(map)
        };
        Ok(Some(MappedFile {
            path: path.to_path_buf(),
            map,
        }))
    }

    /// The mapped bytes.
    pub fn bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}
