//! One core's log writer: stages framed records, group-commits them (one leader task writes
//! every staged batch and fdatasyncs while later appends stage behind it), rolls segments at
//! the configured size and poisons itself on the first write or sync failure. It owns the
//! core's active segment file; it never reads the log back (see [`crate::reader`]).

use crate::error::{Corruption, Error, IoOp, Result};
use crate::frame::{
    align_up, encode_into, framed_len, RecordKind, RecordRef, RecordSpec, HEADER_LEN,
};
use crate::ids::{CheckpointId, CoreId, Lsn, Owner};
use crate::io::{DmaFs, LogFile, LogFs};
use crate::layout;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

/// Every flush ends on a multiple of this (O_DIRECT needs block-aligned offsets and sizes).
pub const BLOCK: u64 = 4096;
/// Worst-case padding a flush can add (a padding record needs a whole header).
const PAD_RESERVE: u64 = BLOCK + HEADER_LEN as u64;

/// Tuning of a core's log writer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogConfig {
    /// Size segments are preallocated to and rolled at (a record larger than this gets a
    /// segment of its own). Multiple of 4096, at least 64 KiB. Default 64 MiB.
    pub segment_bytes: u64,
    /// Largest single write submitted to the kernel; bigger flushes are split. Multiple of
    /// 4096. Default 4 MiB.
    pub max_write_bytes: u64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 64 << 20,
            max_write_bytes: 4 << 20,
        }
    }
}

impl LogConfig {
    fn assert_valid(&self) {
        assert!(
            self.segment_bytes >= 64 << 10 && self.segment_bytes % BLOCK == 0,
            "segment_bytes must be a multiple of 4096 and at least 64 KiB, got {}",
            self.segment_bytes
        );
        assert!(
            self.max_write_bytes >= BLOCK && self.max_write_bytes % BLOCK == 0,
            "max_write_bytes must be a positive multiple of 4096, got {}",
            self.max_write_bytes
        );
    }
}

#[derive(Clone, Debug)]
struct PoisonInfo {
    op: IoOp,
    path: PathBuf,
    kind: io::ErrorKind,
    errno: Option<i32>,
}

/// Where the next staged record goes.
#[derive(Clone, Copy, Debug)]
struct Cursor {
    seg_base: Lsn,
    capacity: u64,
    off: u64,
    needs_create: bool,
}

/// Records staged for one segment, to be written at `start_off` by one flush.
struct Batch {
    seg_base: Lsn,
    capacity: u64,
    create: bool,
    start_off: u64,
    bytes: Vec<u8>,
    /// True once padded and handed to a flush; no further records join it.
    sealed: bool,
}

struct Active<FF> {
    base: Lsn,
    path: PathBuf,
    file: Rc<FF>,
}

struct Inner<FF> {
    poison: Option<PoisonInfo>,
    active: Option<Active<FF>>,
    batches: VecDeque<Batch>,
    cursor: Cursor,
    /// Every record ending at or before this Lsn is durable.
    durable: Lsn,
    /// End of the last record staged.
    staged_end: Lsn,
    flushing: bool,
    epoch: u64,
    waiters: Vec<Waker>,
    stats: WriterStats,
}

/// Per-core counters of a log writer (plain counters; read them off the hot path).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Records appended.
    pub records: u64,
    /// Flushes (each: one or more writes, then one fdatasync). Fewer than `records` when
    /// group commit batched concurrent appends.
    pub flushes: u64,
    /// Bytes written to segments, framing and padding included.
    pub bytes_written: u64,
    /// Segments created.
    pub segments: u64,
}

/// A core's append-only checkpoint log. Use it from the one executor that owns the core:
/// it is `!Send`; share it between that core's tasks with `Rc`.
pub struct LogWriter<F: LogFs = DmaFs> {
    fs: F,
    root: PathBuf,
    core: CoreId,
    cfg: LogConfig,
    inner: RefCell<Inner<F::File>>,
}

impl LogWriter<DmaFs> {
    /// Opens `core`'s log under `root` for appending through glommio DMA files. Call from
    /// inside the core's glommio executor, after [`crate::recover`] ran on `root`. Appends go
    /// to a fresh segment after every existing one.
    pub async fn open(root: &Path, core: CoreId, cfg: LogConfig) -> Result<Self> {
        Self::open_with(DmaFs, root, core, cfg)
    }
}

impl<F: LogFs> LogWriter<F> {
    /// Like [`LogWriter::open`] with an explicit file backend (tests inject faults this way).
    pub fn open_with(fs: F, root: &Path, core: CoreId, cfg: LogConfig) -> Result<Self> {
        cfg.assert_valid();
        let dir = layout::core_dir(root, core);
        layout::create_dir_durable(&dir)?;
        let mut next = 0u64;
        if let Some(last) = layout::list_segments(root, core)?.last() {
            let path = layout::segment_path(root, core, *last);
            let len = std::fs::metadata(&path)
                .map_err(|e| Error::io(IoOp::Read, &path, e))?
                .len();
            // The base comes from a file name: check it leaves room for a new segment.
            next = last
                .0
                .checked_add(len.max(1))
                .and_then(|v| v.checked_add(BLOCK - 1))
                .map(|v| v & !(BLOCK - 1))
                .filter(|v| v.checked_add(cfg.segment_bytes).is_some())
                .ok_or(Error::Corrupt {
                    path: path.clone(),
                    offset: 0,
                    corruption: Corruption::LsnOverflow { base: last.0 },
                })?;
        }
        let cursor = Cursor {
            seg_base: Lsn(next),
            capacity: cfg.segment_bytes,
            off: 0,
            needs_create: true,
        };
        Ok(LogWriter {
            fs,
            root: root.to_path_buf(),
            core,
            cfg,
            inner: RefCell::new(Inner {
                poison: None,
                active: None,
                batches: VecDeque::new(),
                cursor,
                durable: Lsn(next),
                staged_end: Lsn(next),
                flushing: false,
                epoch: 0,
                waiters: Vec::new(),
                stats: WriterStats::default(),
            }),
        })
    }

    /// The core this log belongs to.
    pub fn core(&self) -> CoreId {
        self.core
    }

    /// Every record ending at or before this Lsn is durable.
    pub fn durable_lsn(&self) -> Lsn {
        self.inner.borrow().durable
    }

    /// The writer's counters so far.
    pub fn stats(&self) -> WriterStats {
        self.inner.borrow().stats
    }

    /// True once a write or sync failed; every later append fails with [`Error::Poisoned`].
    pub fn is_poisoned(&self) -> bool {
        self.inner.borrow().poison.is_some()
    }

    /// Appends a record and resolves once it is durable (written and fdatasync'ed), with the
    /// reference a manifest lists. Concurrent appends from several tasks of the core share
    /// one write and one fdatasync (group commit).
    pub async fn append(&self, spec: RecordSpec, payload: &[u8]) -> Result<RecordRef> {
        assert!(
            !matches!(spec.kind, RecordKind::Padding | RecordKind::Manifest),
            "{:?} records are written by the storage crate itself",
            spec.kind
        );
        let (rec, end) = self.stage(&spec, payload)?;
        self.wait_durable(end).await?;
        Ok(rec)
    }

    /// Frames a record into the staged batch without waiting for it: the first half of
    /// [`LogWriter::append`]. Returns the reference a manifest lists and the Lsn the record
    /// ends at; it is durable once [`LogWriter::wait_durable`] with that Lsn (or
    /// [`LogWriter::sync`]) returned. A caller staging many records can spread the staging
    /// (a copy and a CRC of each payload) over several turns of its executor and still
    /// pay one write and one fdatasync for them all.
    pub fn stage_record(&self, spec: RecordSpec, payload: &[u8]) -> Result<(RecordRef, Lsn)> {
        assert!(
            !matches!(spec.kind, RecordKind::Padding | RecordKind::Manifest),
            "{:?} records are written by the storage crate itself",
            spec.kind
        );
        self.stage(&spec, payload)
    }

    /// Appends a full snapshot of `owner` for `checkpoint` (see [`crate::snapshot`]).
    pub async fn append_full(
        &self,
        checkpoint: CheckpointId,
        owner: Owner,
        archive: &[u8],
    ) -> Result<RecordRef> {
        self.append(RecordSpec::full(checkpoint, owner), archive)
            .await
    }

    /// Appends a delta of `owner` for `checkpoint`, chained to the full snapshot of `base`.
    pub async fn append_delta(
        &self,
        checkpoint: CheckpointId,
        base: CheckpointId,
        owner: Owner,
        archive: &[u8],
    ) -> Result<RecordRef> {
        self.append(RecordSpec::delta(checkpoint, base, owner), archive)
            .await
    }

    /// Waits until everything appended so far is durable.
    pub async fn sync(&self) -> Result<()> {
        let end = self.inner.borrow().staged_end;
        self.wait_durable(end).await
    }

    /// Makes everything appended durable and closes the active segment.
    pub async fn close(self) -> Result<()> {
        self.sync().await?;
        let active = self.inner.borrow_mut().active.take();
        if let Some(a) = active {
            if let Ok(file) = Rc::try_unwrap(a.file) {
                file.close()
                    .await
                    .map_err(|e| Error::io(IoOp::Sync, &a.path, e))?;
            }
        }
        Ok(())
    }

    fn poisoned_error(&self, p: &PoisonInfo) -> Error {
        Error::Poisoned {
            core: self.core,
            op: p.op,
            path: p.path.clone(),
            kind: p.kind,
            errno: p.errno,
        }
    }

    /// Frames the record into the open batch; returns its reference and end Lsn.
    fn stage(&self, spec: &RecordSpec, payload: &[u8]) -> Result<(RecordRef, Lsn)> {
        let mut guard = self.inner.borrow_mut();
        let i = &mut *guard;
        if let Some(p) = &i.poison {
            return Err(self.poisoned_error(p));
        }
        let flen = framed_len(payload.len() as u64);
        if i.cursor.off + flen + PAD_RESERVE > i.cursor.capacity {
            let needed = align_up(flen + PAD_RESERVE, BLOCK);
            if i.cursor.off == 0 && i.cursor.needs_create {
                i.cursor.capacity = i.cursor.capacity.max(needed);
            } else {
                if let Some(b) = i.batches.back_mut() {
                    b.sealed = true;
                }
                i.cursor = Cursor {
                    seg_base: i.cursor.seg_base.advance(i.cursor.capacity),
                    capacity: self.cfg.segment_bytes.max(needed),
                    off: 0,
                    needs_create: true,
                };
            }
        }
        let open =
            matches!(i.batches.back(), Some(b) if !b.sealed && b.seg_base == i.cursor.seg_base);
        if !open {
            i.batches.push_back(Batch {
                seg_base: i.cursor.seg_base,
                capacity: i.cursor.capacity,
                create: i.cursor.needs_create,
                start_off: i.cursor.off,
                bytes: Vec::new(),
                sealed: false,
            });
            i.cursor.needs_create = false;
        }
        let batch = i.batches.back_mut().expect("a batch was just ensured");
        debug_assert_eq!(batch.start_off + batch.bytes.len() as u64, i.cursor.off);
        let lsn = i.cursor.seg_base.advance(i.cursor.off);
        batch.bytes.reserve(flen as usize);
        let header = encode_into(&mut batch.bytes, spec, lsn, self.core, payload);
        i.cursor.off += flen;
        let rec = RecordRef::from_header(i.cursor.seg_base, &header);
        i.staged_end = lsn.advance(header.record_len());
        i.stats.records += 1;
        Ok((rec, i.staged_end))
    }

    /// Waits until every record ending at or before `end` is durable (writing and syncing
    /// what is staged when no other task is doing so already).
    pub async fn wait_durable(&self, end: Lsn) -> Result<()> {
        loop {
            let (flushing, epoch) = {
                let i = self.inner.borrow();
                if i.durable >= end {
                    return Ok(());
                }
                if let Some(p) = &i.poison {
                    return Err(self.poisoned_error(p));
                }
                (i.flushing, i.epoch)
            };
            if flushing {
                WaitEpoch {
                    writer: self,
                    seen: epoch,
                }
                .await;
            } else {
                self.flush().await?;
            }
        }
    }

    /// Seals and pads every staged batch, then writes them and fdatasyncs (the leader's job).
    async fn flush(&self) -> Result<()> {
        let taken: Vec<Batch> = {
            let mut i = self.inner.borrow_mut();
            assert!(!i.flushing, "two flush leaders on {}", self.core);
            i.flushing = true;
            let mut taken: Vec<Batch> = i.batches.drain(..).collect();
            for b in &mut taken {
                b.sealed = true;
                pad_batch(b, self.core);
            }
            if let Some(last) = taken.last() {
                if last.seg_base == i.cursor.seg_base {
                    i.cursor.off = last.start_off + last.bytes.len() as u64;
                }
            }
            taken
        };
        let mut guard = FlushGuard {
            writer: self,
            done: false,
        };
        let result = self.write_batches(&taken).await;
        guard.done = true;
        let mut i = self.inner.borrow_mut();
        i.flushing = false;
        i.epoch += 1;
        match &result {
            Ok(()) => {
                if let Some(last) = taken.last() {
                    let end = last
                        .seg_base
                        .advance(last.start_off + last.bytes.len() as u64);
                    assert!(
                        end >= i.durable,
                        "durable lsn went backwards on {}",
                        self.core
                    );
                    i.durable = end;
                }
                i.stats.flushes += 1;
                i.stats.bytes_written += taken.iter().map(|b| b.bytes.len() as u64).sum::<u64>();
                i.stats.segments += taken.iter().filter(|b| b.create).count() as u64;
            }
            Err(e) => {
                let (op, path, kind, errno) = match e {
                    Error::Io { op, path, source } => {
                        (*op, path.clone(), source.kind(), source.raw_os_error())
                    }
                    Error::ShortWrite { path, .. } => {
                        (IoOp::Write, path.clone(), io::ErrorKind::WriteZero, None)
                    }
                    _ => (IoOp::Write, PathBuf::new(), io::ErrorKind::Other, None),
                };
                tracing::error!(core = self.core.0, ?op, path = %path.display(), "checkpoint log poisoned: {e}");
                i.poison = Some(PoisonInfo {
                    op,
                    path,
                    kind,
                    errno,
                });
            }
        }
        for w in i.waiters.drain(..) {
            w.wake();
        }
        result
    }

    async fn write_batches(&self, batches: &[Batch]) -> Result<()> {
        for b in batches {
            if b.create {
                let old = self.inner.borrow_mut().active.take();
                if let Some(old) = old {
                    old.file
                        .sync_data()
                        .await
                        .map_err(|e| Error::io(IoOp::Sync, &old.path, e))?;
                    if let Ok(f) = Rc::try_unwrap(old.file) {
                        f.close()
                            .await
                            .map_err(|e| Error::io(IoOp::Sync, &old.path, e))?;
                    }
                }
                let path = layout::segment_path(&self.root, self.core, b.seg_base);
                let file = self
                    .fs
                    .create_segment(&path, b.capacity)
                    .await
                    .map_err(|e| Error::io(IoOp::Create, &path, e))?;
                tracing::debug!(core = self.core.0, path = %path.display(), "new segment");
                self.inner.borrow_mut().active = Some(Active {
                    base: b.seg_base,
                    path,
                    file: Rc::new(file),
                });
            }
            let (file, path) = {
                let i = self.inner.borrow();
                let a = i
                    .active
                    .as_ref()
                    .expect("a segment is open before it is written");
                assert_eq!(
                    a.base, b.seg_base,
                    "batch for a segment that is not the active one"
                );
                (a.file.clone(), a.path.clone())
            };
            let mut off = 0u64;
            for chunk in b.bytes.chunks(self.cfg.max_write_bytes as usize) {
                let pos = b.start_off + off;
                let n = file
                    .write_at(chunk, pos)
                    .await
                    .map_err(|e| Error::io(IoOp::Write, &path, e))?;
                if n != chunk.len() {
                    return Err(Error::ShortWrite {
                        path,
                        offset: pos,
                        expected: chunk.len() as u64,
                        written: n as u64,
                    });
                }
                off += chunk.len() as u64;
            }
        }
        let active = self
            .inner
            .borrow()
            .active
            .as_ref()
            .map(|a| (a.file.clone(), a.path.clone()));
        if let Some((file, path)) = active {
            file.sync_data()
                .await
                .map_err(|e| Error::io(IoOp::Sync, &path, e))?;
        }
        Ok(())
    }
}

/// Ends `b` on a block boundary with a padding record.
fn pad_batch(b: &mut Batch, core: CoreId) {
    let end = b.start_off + b.bytes.len() as u64;
    let mut gap = align_up(end, BLOCK) - end;
    if gap == 0 {
        return;
    }
    if gap < HEADER_LEN as u64 {
        gap += BLOCK;
    }
    assert!(end + gap <= b.capacity, "padding overruns the segment");
    let zeros = vec![0u8; (gap - HEADER_LEN as u64) as usize];
    let spec = RecordSpec {
        kind: RecordKind::Padding,
        checkpoint: CheckpointId(0),
        base: CheckpointId(0),
        owner: Owner::default(),
    };
    encode_into(&mut b.bytes, &spec, b.seg_base.advance(end), core, &zeros);
    debug_assert_eq!((b.start_off + b.bytes.len() as u64) % BLOCK, 0);
}

/// Poisons the log if a flush leader is dropped mid-flush (its IO state is unknown).
struct FlushGuard<'a, F: LogFs> {
    writer: &'a LogWriter<F>,
    done: bool,
}

impl<F: LogFs> Drop for FlushGuard<'_, F> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut i = self.writer.inner.borrow_mut();
        i.flushing = false;
        i.epoch += 1;
        let path = i
            .active
            .as_ref()
            .map(|a| a.path.clone())
            .unwrap_or_default();
        i.poison.get_or_insert(PoisonInfo {
            op: IoOp::Write,
            path,
            kind: io::ErrorKind::Interrupted,
            errno: None,
        });
        for w in i.waiters.drain(..) {
            w.wake();
        }
    }
}

/// Resolves when the writer finishes a flush after epoch `seen`.
struct WaitEpoch<'a, F: LogFs> {
    writer: &'a LogWriter<F>,
    seen: u64,
}

impl<F: LogFs> Future for WaitEpoch<'_, F> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut i = self.writer.inner.borrow_mut();
        if i.epoch != self.seen || !i.flushing {
            return Poll::Ready(());
        }
        i.waiters.push(cx.waker().clone());
        Poll::Pending
    }
}
