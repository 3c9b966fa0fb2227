//! Reading records back in place: maps segments (through [`crate::mmap`]), checks a record
//! against its reference and its CRC, and hands out zero-copy views whose typed access goes
//! through rkyv's validated `access`. Never writes, never copies a payload.

use crate::error::{Corruption, Error, Result};
use crate::frame::{decode, Header, RecordKind, RecordRef, HEADER_LEN, RECORD_ALIGN};
use crate::ids::{CoreId, Lsn};
use crate::layout;
use crate::mmap::MappedFile;
use rkyv::api::high::HighValidator;
use rkyv::bytecheck::CheckBytes;
use rkyv::Portable;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Reads records of every core's log under one root. Segments are mapped once and shared
/// by the views handed out.
#[derive(Debug)]
pub struct LogReader {
    root: PathBuf,
    maps: Mutex<HashMap<(CoreId, Lsn), Arc<MappedFile>>>,
}

/// A validated record, read in place from its mapped segment.
#[derive(Clone, Debug)]
pub struct RecordView {
    map: Arc<MappedFile>,
    offset: u64,
    header: Header,
}

impl LogReader {
    /// A reader of the logs under `root`.
    pub fn new(root: &Path) -> Self {
        LogReader {
            root: root.to_path_buf(),
            maps: Mutex::new(HashMap::new()),
        }
    }

    /// The checkpoint directory read.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The mapping of a segment, at least `need_end` bytes long if the file is (a segment
    /// that grew since it was mapped is mapped again).
    fn segment(&self, core: CoreId, base: Lsn, lsn: Lsn, need_end: u64) -> Result<Arc<MappedFile>> {
        let mut maps = self.maps.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = maps.get(&(core, base)) {
            if m.bytes().len() as u64 >= need_end {
                return Ok(m.clone());
            }
        }
        let path = layout::segment_path(&self.root, core, base);
        let map = MappedFile::open(&path)?.ok_or(Error::MissingSegment { path, core, lsn })?;
        let map = Arc::new(map);
        maps.insert((core, base), map.clone());
        Ok(map)
    }

    /// Reads the record `r` names: header checks, the header must match `r`, then the CRC of
    /// header and payload. No payload bytes are copied.
    pub fn read(&self, r: &RecordRef) -> Result<RecordView> {
        let need_end = r.lsn.0.saturating_sub(r.segment.0).saturating_add(r.len);
        let map = self.segment(r.core, r.segment, r.lsn, need_end)?;
        let corrupt = |offset: u64, corruption| Error::Corrupt {
            path: map.path().to_path_buf(),
            offset,
            corruption,
        };
        let offset = r.lsn.0.checked_sub(r.segment.0).ok_or_else(|| {
            corrupt(
                0,
                Corruption::RefMismatch {
                    field: "segment",
                    expected: r.segment.0,
                    found: r.lsn.0,
                },
            )
        })?;
        if offset % RECORD_ALIGN as u64 != 0 {
            return Err(corrupt(offset, Corruption::Misaligned));
        }
        let bytes = map.bytes();
        if offset > bytes.len() as u64 {
            return Err(corrupt(
                offset,
                Corruption::TruncatedHeader {
                    needed: HEADER_LEN as u64,
                    available: 0,
                },
            ));
        }
        let rest = &bytes[offset as usize..];
        let header = crate::frame::decode_header(rest).map_err(|c| corrupt(offset, c))?;
        r.check(&header).map_err(|c| corrupt(offset, c))?;
        let (header, _) = decode(rest).map_err(|c| corrupt(offset, c))?;
        Ok(RecordView {
            map,
            offset,
            header,
        })
    }

    /// Drops cached mappings of segments that no longer exist (after retention deleted
    /// them); views already handed out stay valid.
    pub fn forget_deleted(&self) {
        let mut maps = self.maps.lock().unwrap_or_else(|p| p.into_inner());
        maps.retain(|_, m| m.path().exists());
    }
}

impl RecordView {
    /// The record's header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The record's kind.
    pub fn kind(&self) -> RecordKind {
        self.header.kind
    }

    /// The payload, in place in the mapped segment (16-byte aligned).
    pub fn payload(&self) -> &[u8] {
        let start = self.offset as usize + HEADER_LEN;
        &self.map.bytes()[start..start + self.header.payload_len as usize]
    }

    /// The segment file holding the record.
    pub fn path(&self) -> &Path {
        self.map.path()
    }

    /// The record's offset in its segment file.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The payload as an archived `T`, after rkyv's validation (bytecheck). Zero-copy.
    pub fn access<T>(&self) -> Result<&T>
    where
        T: Portable + for<'a> CheckBytes<HighValidator<'a, rkyv::rancor::Error>>,
    {
        rkyv::access::<T, rkyv::rancor::Error>(self.payload()).map_err(|source| {
            Error::InvalidArchive {
                path: self.path().to_path_buf(),
                offset: self.offset,
                source,
            }
        })
    }

    /// Fails with [`Error::WrongKind`] unless the record is of kind `expected`.
    pub fn expect_kind(&self, expected: RecordKind) -> Result<()> {
        if self.header.kind == expected {
            Ok(())
        } else {
            Err(Error::WrongKind {
                path: self.path().to_path_buf(),
                offset: self.offset,
                expected,
                found: self.header.kind,
            })
        }
    }
}
