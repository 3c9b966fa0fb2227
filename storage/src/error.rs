//! The crate's one error type. Every variant carries the structured facts a caller or an
//! operator needs (which file, which offset, which checkpoint, what was wrong); conditions a
//! caller branches on are variants or enums, never strings.

use crate::frame::RecordKind;
use crate::ids::{CheckpointId, CoreId, Lsn, Owner};
use std::fmt;
use std::io;
use std::path::PathBuf;

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Which IO operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoOp {
    /// Creating a file or directory.
    Create,
    /// Opening a file or directory.
    Open,
    /// Reading or listing.
    Read,
    /// Writing data.
    Write,
    /// fsync / fdatasync of a file or directory.
    Sync,
    /// Renaming (manifest publish).
    Rename,
    /// Truncating a torn tail.
    Truncate,
    /// Deleting (retention).
    Remove,
    /// Memory-mapping a segment.
    Map,
}

impl fmt::Display for IoOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            IoOp::Create => "create",
            IoOp::Open => "open",
            IoOp::Read => "read",
            IoOp::Write => "write",
            IoOp::Sync => "fsync",
            IoOp::Rename => "rename",
            IoOp::Truncate => "truncate",
            IoOp::Remove => "remove",
            IoOp::Map => "mmap",
        };
        f.write_str(s)
    }
}

/// What exactly is wrong with bytes read back from disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Corruption {
    /// Fewer bytes than a record header remain.
    #[error("truncated header: {available} bytes left, a header needs {needed}")]
    TruncatedHeader {
        /// Bytes a header needs.
        needed: u64,
        /// Bytes present.
        available: u64,
    },
    /// The magic number is wrong (garbage or zeroes).
    #[error("bad magic {found:#010x}")]
    BadMagic {
        /// The value found.
        found: u32,
    },
    /// A format version this build cannot read.
    #[error("unsupported format version {found} (this build reads version {supported})")]
    UnsupportedVersion {
        /// The version found.
        found: u16,
        /// The version this build reads.
        supported: u16,
    },
    /// An unknown record kind.
    #[error("unknown record kind {found}")]
    UnknownKind {
        /// The kind byte found.
        found: u8,
    },
    /// The declared payload runs past the end of the file.
    #[error("payload of {declared} bytes runs past the end of the file ({available} bytes left)")]
    TruncatedPayload {
        /// Declared payload length.
        declared: u64,
        /// Bytes present after the header.
        available: u64,
    },
    /// The CRC32C over header and payload does not match.
    #[error("crc32c mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch {
        /// CRC in the header.
        stored: u32,
        /// CRC of the bytes.
        computed: u32,
    },
    /// A segment's name puts it so close to the end of the Lsn space that appending
    /// after it would overflow (a crafted or corrupt file name).
    #[error("segment base {base} leaves no room for more records")]
    LsnOverflow {
        /// The segment's base Lsn, from its name.
        base: u64,
    },
    /// The record is intact but is not the one its reference describes.
    #[error("record does not match its reference: {field} expected {expected}, found {found}")]
    RefMismatch {
        /// Which field differs.
        field: &'static str,
        /// The value in the reference.
        expected: u64,
        /// The value on disk.
        found: u64,
    },
    /// A position that must be 16-byte aligned is not.
    #[error("misaligned record offset")]
    Misaligned,
}

/// What is wrong with an incremental chain in a manifest or a set of snapshot records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChainProblem {
    /// No full snapshot for the owner.
    MissingBase,
    /// More than one full snapshot for the owner.
    SeveralBases,
    /// A delta names a different base than the chain's full snapshot.
    WrongBase {
        /// The base the delta names.
        names: CheckpointId,
    },
    /// Records are not in increasing checkpoint order.
    OutOfOrder,
    /// A record of a kind that cannot be part of a chain.
    NotSnapshot(RecordKind),
}

impl fmt::Display for ChainProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChainProblem::MissingBase => f.write_str("no full snapshot (base) in the chain"),
            ChainProblem::SeveralBases => f.write_str("more than one full snapshot in the chain"),
            ChainProblem::WrongBase { names } => write!(f, "a delta names base {names}"),
            ChainProblem::OutOfOrder => f.write_str("records not in increasing checkpoint order"),
            ChainProblem::NotSnapshot(k) => write!(f, "a {k:?} record cannot be part of a chain"),
        }
    }
}

/// Every failure of the storage crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An operating-system IO call failed.
    #[error("{op} of {path} failed: {source}")]
    Io {
        /// What was being done.
        op: IoOp,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A write completed only partly (short or torn write); the log is poisoned.
    #[error("short write to {path} at offset {offset}: {written} of {expected} bytes")]
    ShortWrite {
        /// The segment file.
        path: PathBuf,
        /// File offset of the write.
        offset: u64,
        /// Bytes requested.
        expected: u64,
        /// Bytes written.
        written: u64,
    },
    /// An earlier write or fsync failure poisoned this core's log; nothing further is
    /// accepted and nothing not already reported durable will ever be.
    #[error("log of {core} is poisoned: an earlier {op} of {path} failed ({kind:?}); restart from the last complete checkpoint")]
    Poisoned {
        /// The core whose log is poisoned.
        core: CoreId,
        /// The operation that failed first.
        op: IoOp,
        /// The file it failed on.
        path: PathBuf,
        /// The OS error kind of the first failure.
        kind: io::ErrorKind,
        /// Its OS error number, when it had one (ENOSPC, EIO, ...).
        errno: Option<i32>,
    },
    /// Bytes on disk are not a valid record.
    #[error("corrupt record in {path} at offset {offset}: {corruption}")]
    Corrupt {
        /// The segment or manifest file.
        path: PathBuf,
        /// File offset of the record.
        offset: u64,
        /// What was wrong.
        corruption: Corruption,
    },
    /// A referenced segment file does not exist.
    #[error("segment {path} ({core}, {lsn}) is missing")]
    MissingSegment {
        /// Expected path.
        path: PathBuf,
        /// Core of the log.
        core: CoreId,
        /// The referenced record's Lsn.
        lsn: Lsn,
    },
    /// A record's payload is not a valid rkyv archive of the requested type.
    #[error("record in {path} at offset {offset} is not a valid archive: {source}")]
    InvalidArchive {
        /// The segment file.
        path: PathBuf,
        /// File offset of the record.
        offset: u64,
        /// rkyv's validation error.
        #[source]
        source: rkyv::rancor::Error,
    },
    /// A record was accessed as the wrong kind (e.g. a delta as a full snapshot).
    #[error("record in {path} at offset {offset} is a {found:?}, expected a {expected:?}")]
    WrongKind {
        /// The segment file.
        path: PathBuf,
        /// File offset of the record.
        offset: u64,
        /// The kind wanted.
        expected: RecordKind,
        /// The kind present.
        found: RecordKind,
    },
    /// rkyv could not serialize a snapshot.
    #[error("archiving a snapshot failed: {source}")]
    Archive {
        /// rkyv's error.
        #[source]
        source: rkyv::rancor::Error,
    },
    /// Snapshot entries handed in were not strictly sorted by key (or had duplicates).
    #[error("snapshot entries not strictly sorted by key at index {index}")]
    UnsortedEntries {
        /// First offending index.
        index: usize,
    },
    /// A manifest file's JSON body does not parse.
    #[error("manifest {path} does not parse: {source}")]
    ManifestFormat {
        /// The manifest file.
        path: PathBuf,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// An incremental chain in a manifest (or handed to compaction) is malformed.
    #[error("{checkpoint}: chain of {owner} is broken: {problem}")]
    BrokenChain {
        /// The checkpoint whose manifest holds the chain.
        checkpoint: CheckpointId,
        /// Whose chain.
        owner: Owner,
        /// What is wrong.
        problem: ChainProblem,
    },
    /// A request to the object store (S3) failed.
    #[error("{op} of {url} failed: {source}")]
    Remote {
        /// What was being done (`put`, `get`, `list`, `delete`, `head`).
        op: &'static str,
        /// The object (or prefix), as `s3://bucket/key`.
        url: String,
        /// The object store's error.
        #[source]
        source: object_store::Error,
    },
    /// A checkpoint location is not a usable `s3://bucket/prefix` URL, or the object
    /// store cannot be set up from the environment.
    #[error("{url}: {problem}")]
    RemoteConfig {
        /// The location as configured.
        url: String,
        /// What is wrong with it.
        problem: String,
    },
    /// A job of several processes: a checkpoint this process completed did not complete
    /// for the whole job (aborted by a process, or the job stopped while waiting).
    #[error("checkpoint {checkpoint} did not complete for the whole job ({url}): {reason}")]
    GlobalNotComplete {
        /// Where the job's global decisions are.
        url: String,
        /// The checkpoint.
        checkpoint: u64,
        /// Why.
        reason: String,
    },
    /// The pieces of a segment in the object store do not join up (a gap or an overlap).
    #[error("{url}: the segment's pieces do not join at byte {at} (next piece starts at {next})")]
    RemoteGap {
        /// The segment's prefix in the store.
        url: String,
        /// Where the bytes so far end.
        at: u64,
        /// Where the next piece starts.
        next: u64,
    },
    /// A checkpoint that does not exist (or whose manifest is unreadable) was named.
    #[error("{checkpoint} has no manifest in {dir}")]
    NoSuchCheckpoint {
        /// The checkpoint asked for.
        checkpoint: CheckpointId,
        /// The manifest directory.
        dir: PathBuf,
    },
    /// A record referenced by a manifest failed validation.
    #[error("{checkpoint} is incomplete: its record {lsn} of {core} is unusable: {source}")]
    BadCheckpointRecord {
        /// The checkpoint.
        checkpoint: CheckpointId,
        /// The record's core.
        core: CoreId,
        /// The record's Lsn.
        lsn: Lsn,
        /// Why the record is unusable.
        #[source]
        source: Box<Error>,
    },
}

impl Error {
    pub(crate) fn io(op: IoOp, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// The OS error number behind this error, with the operation and the file it failed
    /// on: an IO failure, the one that poisoned a log, or the one that made a checkpoint's
    /// record unusable. `None` for everything else (corruption, format errors).
    pub fn os_error(&self) -> Option<(i32, IoOp, &std::path::Path)> {
        match self {
            Error::Io { op, path, source } => {
                source.raw_os_error().map(|n| (n, *op, path.as_path()))
            }
            Error::Poisoned {
                op, path, errno, ..
            } => errno.map(|n| (n, *op, path.as_path())),
            Error::BadCheckpointRecord { source, .. } => source.os_error(),
            _ => None,
        }
    }

    /// True when the error means bytes on disk are damaged or not what was referenced
    /// (as opposed to an IO failure of the machine now).
    pub fn is_corruption(&self) -> bool {
        match self {
            Error::Corrupt { .. }
            | Error::MissingSegment { .. }
            | Error::InvalidArchive { .. }
            | Error::WrongKind { .. }
            | Error::ManifestFormat { .. }
            | Error::BrokenChain { .. } => true,
            Error::BadCheckpointRecord { source, .. } => source.is_corruption(),
            _ => false,
        }
    }
}
