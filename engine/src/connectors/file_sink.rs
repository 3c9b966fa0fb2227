//! File sinks: one output file per sink partition (`part-<p>.csv` in a directory), and
//! the dead-letter file (one file, one writer). Both commit their output atomically:
//!
//! - Without checkpoints, a partition writes `.<name>.<seq>.<ext>.inprogress` and renames
//!   it to `<name>.<ext>` (after fdatasync) when its input ends.
//! - With checkpoints (transactional), what a partition wrote since the previous barrier
//!   is renamed to `.<name>-<n>.<ext>.pending` at barrier `n` (pre-commit; the core syncs
//!   the file before the checkpoint counts) and to `<name>-<n>.<ext>` once checkpoint `n`
//!   completes (commit; a notification for `n` also commits every older pending file).
//!   On restart, `recover` commits what is pending for the restored checkpoint or before
//!   and deletes everything newer or in progress: committed files are exactly the
//!   output of a run without the crash, in `<n>` order per partition.

use std::fs::{File, OpenOptions};
use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::Poll;

use crate::dataflow::{
    AsyncSink, AsyncSinkPartition, IoCx, PartitionContext, RecoverContext, Uring,
};
use crate::error::{EngineError, Result};
use crate::ids::CheckpointId;
use crate::metrics::MetricsHandle;

type Format<T> = Arc<dyn Fn(&T, &mut Vec<u8>) + Send + Sync>;

/// Writes records as lines to `dir/part-<partition>.csv` (with checkpoints:
/// `dir/part-<partition>-<checkpoint>.csv`, one file per completed checkpoint).
pub struct FileSink<T> {
    dir: PathBuf,
    format: Format<T>,
}

impl<T> FileSink<T> {
    /// Formats each record with `format` (which appends one line, newline included).
    pub fn new(
        dir: impl Into<PathBuf>,
        format: impl Fn(&T, &mut Vec<u8>) + Send + Sync + 'static,
    ) -> Self {
        Self {
            dir: dir.into(),
            format: Arc::new(format),
        }
    }
}

impl FileSink<String> {
    /// Writes each string as one line.
    pub fn lines(dir: impl Into<PathBuf>) -> Self {
        Self::new(dir, |s: &String, out: &mut Vec<u8>| {
            out.extend_from_slice(s.as_bytes());
            out.push(b'\n');
        })
    }
}

/// The output file of partition `p` of a job without checkpoints.
pub fn part_file(dir: &Path, p: u32) -> PathBuf {
    dir.join(format!("part-{p}.csv"))
}

/// The committed output files in `dir` (`*.csv`), ordered by checkpoint, then partition:
/// reading them in this order gives each partition's output in the order it was written,
/// and each key's output in order even across a rescale (a key lives in one partition
/// between two checkpoints, but may move to another one when the job is restored on a
/// different number of cores).
pub fn committed_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<((u64, u32), PathBuf)> = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let path = e?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let Some(stem) = name.strip_suffix(".csv") else {
            continue;
        };
        let Some(rest) = stem.strip_prefix("part-") else {
            continue;
        };
        let key = match rest.split_once('-') {
            Some((p, n)) => (n.parse().unwrap_or(u64::MAX), p.parse().unwrap_or(u32::MAX)),
            None => (0, rest.parse().unwrap_or(u32::MAX)),
        };
        files.push((key, path));
    }
    files.sort();
    Ok(files.into_iter().map(|(_, p)| p).collect())
}

/// What a committed file's name says: `<name>.<ext>` or `<name>-<n>.<ext>`.
fn parse_committed(file: &str, ext: &str, is_name: &dyn Fn(&str) -> bool) -> Option<Option<u64>> {
    let stem = file.strip_suffix(ext)?.strip_suffix('.')?;
    if let Some((name, n)) = stem.rsplit_once('-') {
        if is_name(name) {
            if let Ok(n) = n.parse::<u64>() {
                return Some(Some(n));
            }
        }
    }
    is_name(stem).then_some(None)
}

/// Settles the files an earlier run left in `dir` for the outputs named by `is_name`:
/// pending files of the restored checkpoint or older are committed, everything else that
/// is not committed output of the restored checkpoint or older is removed.
fn recover_dir(
    dir: &Path,
    ext: &str,
    is_name: &dyn Fn(&str) -> bool,
    ctx: &RecoverContext<'_>,
) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(EngineError::io("read directory", dir, e)),
    };
    let restored = ctx.restored.map(|c| c.0);
    let mut changed = false;
    for e in entries {
        let path = e
            .map_err(|e| EngineError::io("read directory", dir, e))?
            .path();
        let Some(file) = path
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_string)
        else {
            continue;
        };
        let remove = |path: &Path| -> Result<()> {
            std::fs::remove_file(path).map_err(|e| EngineError::io("remove", path, e))
        };
        if let Some(hidden) = file.strip_prefix('.') {
            if let Some(pending) = hidden.strip_suffix(".pending") {
                if let Some(Some(n)) = parse_committed(pending, ext, is_name) {
                    if restored.is_some_and(|r| n <= r) {
                        let to = dir.join(pending);
                        std::fs::rename(&path, &to)
                            .map_err(|e| EngineError::io("rename", &path, e))?;
                    } else {
                        remove(&path)?;
                    }
                    changed = true;
                }
            } else if let Some(inprogress) = hidden.strip_suffix(".inprogress") {
                let name = inprogress
                    .strip_suffix(ext)
                    .and_then(|s| s.strip_suffix('.'))
                    .and_then(|s| s.rsplit_once('.'))
                    .map(|(name, _seq)| name);
                if name.is_some_and(is_name) {
                    remove(&path)?;
                    changed = true;
                }
            }
            continue;
        }
        match parse_committed(&file, ext, is_name) {
            // Committed output of the restored checkpoint or before stays.
            Some(Some(n)) if ctx.transactional && restored.is_some_and(|r| n <= r) => {}
            Some(Some(n)) => {
                if restored.is_some() {
                    tracing::warn!(
                        "{}: removing output of checkpoint {n}, newer than the restored one",
                        path.display()
                    );
                }
                remove(&path)?;
                changed = true;
            }
            // A fresh start replaces the output of an earlier run.
            Some(None) => {
                remove(&path)?;
                changed = true;
            }
            None => {}
        }
    }
    if changed {
        sync_dir(dir)?;
    }
    Ok(())
}

fn open_dir(dir: &Path) -> Result<File> {
    File::open(dir).map_err(|e| EngineError::io("open directory", dir, e))
}

fn sync_dir(dir: &Path) -> Result<()> {
    open_dir(dir)?
        .sync_all()
        .map_err(|e| EngineError::io("fsync directory", dir, e))
}

type IoFuture<R> = Pin<Box<dyn Future<Output = R>>>;

/// One write in flight: the kernel owns the buffer until it completes.
struct InFlight {
    fut: IoFuture<(std::io::Result<usize>, Vec<u8>)>,
    /// Where its bytes go.
    pos: u64,
    len: usize,
}

/// How far a non-transactional `TxFile` got in finishing.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Finish {
    NotStarted,
    Flushing,
    SyncingFile,
    SyncingDir,
    Done,
}

/// The file a `TxFile` is writing.
struct OpenFile {
    path: PathBuf,
    file: Rc<File>,
    /// Bytes handed to the kernel so far: the offset of the next write.
    submitted: u64,
}

/// What a `TxFile` waits for before its current step is done.
enum Step {
    /// Nothing beyond the writes in flight.
    None,
    /// A sync of the sealed file or of the directory.
    Sync(IoFuture<std::io::Result<()>>, PathBuf),
}

/// One output file that becomes visible only when committed (see the module doc). Its
/// bytes are buffered and written through the core's connector io_uring: `WRITE_CHUNK`
/// bytes per write, at most `WRITES_IN_FLIGHT` at once, beyond which `poll_ready` is
/// `Pending` (backpressure) until one completes. Creating, renaming and removing files
/// are plain system calls (metadata, no data).
struct TxFile {
    dir: PathBuf,
    /// `part-3`, `dead-letter`.
    name: String,
    /// `csv`, `jsonl`.
    ext: String,
    transactional: bool,
    open: Option<OpenFile>,
    buf: Vec<u8>,
    writes: Vec<InFlight>,
    uring: Option<Rc<Uring>>,
    step: Step,
    /// How far `poll_finish` got (without checkpoints).
    finish: Finish,
    /// A commit renamed files into place since the last `take_renamed`.
    renamed: bool,
    seq: u64,
    pending: Vec<(CheckpointId, PathBuf)>,
}

const WRITE_CHUNK_BYTES: usize = 256 * 1024;
const WRITES_IN_FLIGHT: usize = 4;

impl TxFile {
    fn new(dir: PathBuf, name: String, ext: String, transactional: bool) -> Self {
        Self {
            dir,
            name,
            ext,
            transactional,
            open: None,
            buf: Vec::with_capacity(WRITE_CHUNK_BYTES),
            writes: Vec::new(),
            uring: None,
            step: Step::None,
            finish: Finish::NotStarted,
            renamed: false,
            seq: 0,
            pending: Vec::new(),
        }
    }

    fn uring(&mut self, cx: &IoCx<'_>) -> Result<Rc<Uring>> {
        if let Some(u) = &self.uring {
            return Ok(u.clone());
        }
        let u = cx.uring()?;
        self.uring = Some(u.clone());
        Ok(u)
    }

    fn open(&mut self) -> Result<&mut OpenFile> {
        if self.open.is_none() {
            let path = self.dir.join(format!(
                ".{}.{}.{}.inprogress",
                self.name, self.seq, self.ext
            ));
            self.seq += 1;
            let f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&path)
                .map_err(|e| EngineError::io("create", &path, e))?;
            self.open = Some(OpenFile {
                path,
                file: Rc::new(f),
                submitted: 0,
            });
        }
        Ok(self.open.as_mut().expect("opened above"))
    }

    /// Buffers `bytes` for the open file (opening one first if needed).
    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.open()?;
        self.buf.extend_from_slice(bytes);
        Ok(())
    }

    /// Hands the buffered bytes to the kernel as one write.
    fn submit(&mut self, cx: &IoCx<'_>) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let uring = self.uring(cx)?;
        let open = self
            .open
            .as_mut()
            .expect("bytes are buffered for an open file");
        let buf = std::mem::replace(&mut self.buf, Vec::with_capacity(WRITE_CHUNK_BYTES));
        let (pos, len, file) = (open.submitted, buf.len(), open.file.clone());
        open.submitted += len as u64;
        self.writes.push(InFlight {
            fut: Box::pin(async move { uring.write_file_at(file, buf, pos).await }),
            pos,
            len,
        });
        Ok(())
    }

    /// Polls the writes in flight (re-issuing the rest of a short one). `Ready` once none
    /// is left.
    fn poll_writes(&mut self, cx: &mut IoCx<'_>) -> Result<Poll<()>> {
        let mut i = 0;
        while i < self.writes.len() {
            let Poll::Ready((n, buf)) = self.writes[i].fut.as_mut().poll(cx.context()) else {
                i += 1;
                continue;
            };
            let w = self.writes.swap_remove(i);
            let open = self.open.as_ref().expect("a write in flight has its file");
            let n = n.map_err(|e| EngineError::io("write", &open.path, e))?;
            if n == 0 && w.len > 0 {
                return Err(EngineError::io(
                    "write",
                    &open.path,
                    std::io::Error::new(std::io::ErrorKind::WriteZero, "wrote 0 bytes"),
                ));
            }
            if n < w.len {
                let file = open.file.clone();
                let uring = self.uring(cx)?;
                let pos = w.pos + n as u64;
                let rest = buf[n..w.len].to_vec();
                let len = rest.len();
                self.writes.push(InFlight {
                    fut: Box::pin(async move { uring.write_file_at(file, rest, pos).await }),
                    pos,
                    len,
                });
            }
            // Swapped in: look at index `i` again.
        }
        Ok(if self.writes.is_empty() {
            Poll::Ready(())
        } else {
            Poll::Pending
        })
    }

    /// Polls the current step's sync. `Ready` once it is done.
    fn poll_step(&mut self, cx: &mut IoCx<'_>) -> Result<Poll<()>> {
        let Step::Sync(fut, path) = &mut self.step else {
            return Ok(Poll::Ready(()));
        };
        let Poll::Ready(r) = fut.as_mut().poll(cx.context()) else {
            return Ok(Poll::Pending);
        };
        let path = std::mem::take(path);
        self.step = Step::None;
        r.map_err(|e| EngineError::io("fsync", &path, e))?;
        Ok(Poll::Ready(()))
    }

    /// Starts a sync of `file` (`data_only`: fdatasync) as the current step.
    fn start_sync(
        &mut self,
        cx: &IoCx<'_>,
        file: File,
        path: &Path,
        data_only: bool,
    ) -> Result<()> {
        let uring = self.uring(cx)?;
        let file = Rc::new(file);
        self.step = Step::Sync(
            Box::pin(async move { uring.sync_file(file, data_only).await }),
            path.to_path_buf(),
        );
        Ok(())
    }

    fn poll_ready(&mut self, cx: &mut IoCx<'_>) -> Result<Poll<()>> {
        let _ = self.poll_writes(cx)?;
        if self.buf.len() >= WRITE_CHUNK_BYTES {
            if self.writes.len() >= WRITES_IN_FLIGHT {
                return Ok(Poll::Pending);
            }
            self.submit(cx)?;
            let _ = self.poll_writes(cx)?;
        }
        Ok(Poll::Ready(()))
    }

    /// Writes what is buffered and waits for every write in flight.
    fn poll_flush(&mut self, cx: &mut IoCx<'_>) -> Result<Poll<()>> {
        self.submit(cx)?;
        self.poll_writes(cx)
    }

    /// Barrier `id`: the file written since the previous barrier becomes
    /// `.<name>-<id>.<ext>.pending` once all its bytes are written; returns it and the
    /// directory for the checkpoint to sync.
    fn poll_pre_commit(&mut self, id: CheckpointId, cx: &mut IoCx<'_>) -> Result<Poll<Vec<File>>> {
        let _ = id;
        if self.poll_flush(cx)?.is_pending() {
            return Ok(Poll::Pending);
        }
        let Some(open) = self.open.take() else {
            return Ok(Poll::Ready(Vec::new()));
        };
        let to = self
            .dir
            .join(format!(".{}-{}.{}.pending", self.name, id.0, self.ext));
        std::fs::rename(&open.path, &to).map_err(|e| EngineError::io("rename", &open.path, e))?;
        let file = open
            .file
            .try_clone()
            .map_err(|e| EngineError::io("dup", &to, e))?;
        self.pending.push((id, to));
        Ok(Poll::Ready(vec![file, open_dir(&self.dir)?]))
    }

    /// Checkpoint `id` completed: renames every pending file of `id` or before into
    /// place, then syncs the directory.
    fn poll_commit(&mut self, id: CheckpointId, cx: &mut IoCx<'_>) -> Result<Poll<bool>> {
        if matches!(self.step, Step::Sync(..)) {
            return Ok(match self.poll_step(cx) {
                Ok(p) => p.map(|()| true),
                Err(e) => {
                    // As before the move to the ring: the renames are done; a failed
                    // directory sync is reported, not fatal.
                    tracing::warn!("syncing a committed sink directory: {e}");
                    Poll::Ready(true)
                }
            });
        }
        let mut any = false;
        let mut keep = Vec::new();
        for (n, path) in std::mem::take(&mut self.pending) {
            if n > id {
                keep.push((n, path));
                continue;
            }
            let to = self.dir.join(format!("{}-{}.{}", self.name, n.0, self.ext));
            match std::fs::rename(&path, &to) {
                Ok(()) => any = true,
                // Committed already (a restart re-does commits).
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && to.exists() => {}
                Err(e) => return Err(EngineError::io("rename", &path, e)),
            }
        }
        self.pending = keep;
        if !any {
            return Ok(Poll::Ready(false));
        }
        self.renamed = true;
        let dir = self.dir.clone();
        self.start_sync(cx, open_dir(&dir)?, &dir, false)?;
        self.poll_commit(id, cx)
    }

    /// Whether a commit renamed files into place (visible output) since the last call.
    fn take_renamed(&mut self) -> bool {
        std::mem::take(&mut self.renamed)
    }

    fn poll_finish(&mut self, cx: &mut IoCx<'_>) -> Result<Poll<()>> {
        if self.transactional {
            // Everything was pre-committed at the final barrier, which is aligned: a
            // file opened after it holds output that no checkpoint commits. Say so
            // loudly instead of dropping it (issue 13: unaligned final checkpoints lost
            // the records processed after their barrier here, and the run exited 0).
            if self.poll_flush(cx)?.is_pending() {
                return Ok(Poll::Pending);
            }
            if let Some(open) = self.open.take() {
                let bytes = open.submitted;
                drop(open.file);
                std::fs::remove_file(&open.path)
                    .map_err(|e| EngineError::io("remove", &open.path, e))?;
                if bytes > 0 {
                    return Err(EngineError::UncommittedOutput {
                        path: open.path,
                        bytes,
                    });
                }
            }
            return Ok(Poll::Ready(()));
        }
        // Without checkpoints: write everything, rename into place, fdatasync the file,
        // sync the directory; each step may wait for the ring.
        loop {
            match self.finish {
                Finish::NotStarted => {
                    // No records: an empty output file, as a plain sink would leave.
                    self.open()?;
                    self.finish = Finish::Flushing;
                }
                Finish::Flushing => {
                    if self.poll_flush(cx)?.is_pending() {
                        return Ok(Poll::Pending);
                    }
                    let open = self.open.take().expect("opened when finishing began");
                    let to = self.dir.join(format!("{}.{}", self.name, self.ext));
                    std::fs::rename(&open.path, &to)
                        .map_err(|e| EngineError::io("rename", &open.path, e))?;
                    let file = open
                        .file
                        .try_clone()
                        .map_err(|e| EngineError::io("dup", &to, e))?;
                    self.start_sync(cx, file, &to, true)?;
                    self.finish = Finish::SyncingFile;
                }
                Finish::SyncingFile => {
                    if self.poll_step(cx)?.is_pending() {
                        return Ok(Poll::Pending);
                    }
                    let dir = self.dir.clone();
                    self.start_sync(cx, open_dir(&dir)?, &dir, false)?;
                    self.finish = Finish::SyncingDir;
                }
                Finish::SyncingDir => {
                    if self.poll_step(cx)?.is_pending() {
                        return Ok(Poll::Pending);
                    }
                    self.finish = Finish::Done;
                }
                Finish::Done => return Ok(Poll::Ready(())),
            }
        }
    }
}

fn is_part_name(name: &str) -> bool {
    name.strip_prefix("part-")
        .is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

impl<T: 'static> AsyncSink<T> for FileSink<T> {
    fn open_partition(&self, ctx: &PartitionContext<'_>) -> Result<Box<dyn AsyncSinkPartition<T>>> {
        let dir = ctx.resolve(&self.dir);
        std::fs::create_dir_all(&dir).map_err(|e| EngineError::io("create directory", &dir, e))?;
        Ok(Box::new(FilePartition {
            file: TxFile::new(
                dir,
                format!("part-{}", ctx.partition.0),
                "csv".into(),
                ctx.transactional,
            ),
            format: self.format.clone(),
            line: Vec::with_capacity(128),
            metrics: ctx.metrics.clone(),
            clock: ctx.clock,
            records: 0,
        }))
    }

    fn recover_output(&self, ctx: &RecoverContext<'_>) -> Result<()> {
        let dir = if self.dir.is_absolute() {
            self.dir.clone()
        } else {
            ctx.job_dir.join(&self.dir)
        };
        recover_dir(&dir, "csv", &is_part_name, ctx)
    }
}

struct FilePartition<T> {
    file: TxFile,
    format: Format<T>,
    line: Vec<u8>,
    metrics: MetricsHandle,
    clock: crate::clock::MonotonicClock,
    records: u64,
}

impl<T> AsyncSinkPartition<T> for FilePartition<T> {
    #[inline]
    fn poll_ready(&mut self, cx: &mut IoCx<'_>) -> Poll<Result<()>> {
        lift(self.file.poll_ready(cx))
    }

    #[inline]
    fn write(&mut self, rec: T) -> Result<()> {
        self.line.clear();
        (self.format)(&rec, &mut self.line);
        self.records += 1;
        self.file.write(&self.line)
    }

    fn poll_pre_commit(&mut self, id: CheckpointId, cx: &mut IoCx<'_>) -> Poll<Result<Vec<File>>> {
        let r = lift(self.file.poll_pre_commit(id, cx));
        if r.is_ready() {
            self.metrics
                .add("sink_records", std::mem::take(&mut self.records));
        }
        r
    }

    fn poll_commit(&mut self, id: CheckpointId, cx: &mut IoCx<'_>) -> Poll<Result<()>> {
        let r = lift(self.file.poll_commit(id, cx)).map_ok(drop);
        if self.file.take_renamed() {
            // Rows became committed output: the report's first output (and last arrival)
            // is when output is visible (renamed into place), not when the sink finished
            // or the directory sync completed.
            self.metrics
                .note_arrival(crate::clock::Clock::now_ns(&self.clock));
        }
        r
    }

    fn poll_finish(&mut self, cx: &mut IoCx<'_>) -> Poll<Result<()>> {
        let r = lift(self.file.poll_finish(cx));
        if matches!(r, Poll::Ready(Ok(()))) {
            self.metrics
                .add("sink_records", std::mem::take(&mut self.records));
            if !self.file.transactional {
                // Without checkpoints the output appears (is renamed into place) now.
                self.metrics
                    .note_arrival(crate::clock::Clock::now_ns(&self.clock));
            }
        }
        r
    }
}

/// `Result<Poll<R>>` (what `TxFile`'s steps return, for `?`) as `Poll<Result<R>>`.
fn lift<R>(r: Result<Poll<R>>) -> Poll<Result<R>> {
    match r {
        Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
        Ok(Poll::Pending) => Poll::Pending,
        Err(e) => Poll::Ready(Err(e)),
    }
}

/// An input record that could not be processed, with where it came from.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct DeadLetter {
    /// Byte offset of the record in its input file.
    pub offset: u64,
    /// The record as read.
    pub line: Vec<u8>,
    /// Why it was rejected.
    pub error: String,
}

/// Writes dead letters as JSON lines (`{"offset":…,"error":…,"line":…}`) to one file.
/// Runs with one partition: route dead letters to it with `.rebalance(..).parallelism(1)`.
pub struct DeadLetterSink {
    path: PathBuf,
}

impl DeadLetterSink {
    /// Writes to `path` (relative paths resolve against the job directory).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }
}

impl DeadLetterSink {
    fn split(path: &Path) -> (PathBuf, String, String) {
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        let name = path
            .file_stem()
            .map_or_else(|| "dead-letter".into(), |s| s.to_string_lossy().to_string());
        let ext = path
            .extension()
            .map_or_else(|| "jsonl".into(), |s| s.to_string_lossy().to_string());
        (dir, name, ext)
    }
}

impl AsyncSink<DeadLetter> for DeadLetterSink {
    fn open_partition(
        &self,
        ctx: &PartitionContext<'_>,
    ) -> Result<Box<dyn AsyncSinkPartition<DeadLetter>>> {
        if ctx.parallelism != 1 {
            return Err(EngineError::Graph {
                operator: ctx.operator.to_string(),
                reason: format!(
                    "the dead-letter sink writes one file and needs parallelism 1, not {}",
                    ctx.parallelism
                ),
            });
        }
        let (dir, name, ext) = Self::split(&ctx.resolve(&self.path));
        std::fs::create_dir_all(&dir).map_err(|e| EngineError::io("create directory", &dir, e))?;
        Ok(Box::new(DeadLetterPartition {
            file: TxFile::new(dir, name, ext, ctx.transactional),
            metrics: ctx.metrics.clone(),
            count: 0,
            line: Vec::new(),
        }))
    }

    fn recover_output(&self, ctx: &RecoverContext<'_>) -> Result<()> {
        let path = if self.path.is_absolute() {
            self.path.clone()
        } else {
            ctx.job_dir.join(&self.path)
        };
        let (dir, name, ext) = Self::split(&path);
        recover_dir(&dir, &ext, &|n: &str| n == name, ctx)
    }
}

struct DeadLetterPartition {
    file: TxFile,
    metrics: MetricsHandle,
    count: u64,
    line: Vec<u8>,
}

impl AsyncSinkPartition<DeadLetter> for DeadLetterPartition {
    fn poll_ready(&mut self, cx: &mut IoCx<'_>) -> Poll<Result<()>> {
        lift(self.file.poll_ready(cx))
    }

    fn write(&mut self, rec: DeadLetter) -> Result<()> {
        let json = serde_json::json!({
            "offset": rec.offset,
            "error": rec.error,
            "line": String::from_utf8_lossy(&rec.line),
        });
        self.count += 1;
        self.line.clear();
        let _ = writeln!(self.line, "{json}");
        let line = std::mem::take(&mut self.line);
        let r = self.file.write(&line);
        self.line = line;
        r
    }

    fn poll_pre_commit(&mut self, id: CheckpointId, cx: &mut IoCx<'_>) -> Poll<Result<Vec<File>>> {
        let r = lift(self.file.poll_pre_commit(id, cx));
        if r.is_ready() {
            self.metrics
                .add("dead_letters", std::mem::take(&mut self.count));
        }
        r
    }

    fn poll_commit(&mut self, id: CheckpointId, cx: &mut IoCx<'_>) -> Poll<Result<()>> {
        lift(self.file.poll_commit(id, cx)).map_ok(drop)
    }

    fn poll_finish(&mut self, cx: &mut IoCx<'_>) -> Poll<Result<()>> {
        let r = lift(self.file.poll_finish(cx));
        if r.is_ready() {
            self.metrics
                .add("dead_letters", std::mem::take(&mut self.count));
        }
        r
    }
}

/// Appends `field` to `out` as one CSV field (RFC 4180): quoted, with its quotes
/// doubled, when it holds a comma, a quote or a line break; as is otherwise. For the
/// format functions of [`FileSink`].
pub fn csv_field(field: &str, out: &mut Vec<u8>) {
    if field.contains([',', '"', '\n', '\r']) {
        out.push(b'"');
        for b in field.bytes() {
            if b == b'"' {
                out.push(b'"');
            }
            out.push(b);
        }
        out.push(b'"');
    } else {
        out.extend_from_slice(field.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::MonotonicClock;
    use crate::dataflow::io::testing::Standalone;
    use crate::ids::{CoreId, PartitionId};

    fn ctx(dir: &Path, transactional: bool) -> PartitionContext<'_> {
        PartitionContext {
            operator: "out",
            partition: PartitionId(3),
            parallelism: 4,
            core: CoreId(0),
            job_dir: dir,
            clock: MonotonicClock::new(std::time::Instant::now()),
            metrics: MetricsHandle::default(),
            transactional,
            process: crate::ids::Process::SINGLE,
        }
    }

    /// Polls `f` until it is ready, reaping the connector ring in between.
    fn ready<R>(io: &Standalone, mut f: impl FnMut(&mut IoCx<'_>) -> Poll<R>) -> R {
        loop {
            if let Poll::Ready(r) = f(&mut io.cx()) {
                return r;
            }
            io.wait();
        }
    }

    #[test]
    fn megabytes_go_out_in_writes_in_flight_and_commit_intact() {
        let dir = tempfile::tempdir().unwrap();
        let io = Standalone::new();
        let sink = FileSink::lines("out");
        let mut part = sink.open_partition(&ctx(dir.path(), true)).unwrap();
        let mut want = String::new();
        let mut waited = 0;
        for i in 0..200_000u32 {
            // More than WRITES_IN_FLIGHT chunks: `poll_ready` must hold some records back.
            if part.poll_ready(&mut io.cx()).is_pending() {
                waited += 1;
                ready(&io, |cx| part.poll_ready(cx)).unwrap();
            }
            let line = format!("record {i:>8} {}", "x".repeat(i as usize % 40));
            want.push_str(&line);
            want.push('\n');
            part.write(line).unwrap();
        }
        let files = ready(&io, |cx| part.poll_pre_commit(CheckpointId(1), cx)).unwrap();
        assert_eq!(files.len(), 2, "the file and its directory to sync");
        let out = dir.path().join("out");
        assert!(out.join(".part-3-1.csv.pending").exists());
        assert!(
            committed_files(&out).unwrap().is_empty(),
            "invisible until committed"
        );
        ready(&io, |cx| part.poll_commit(CheckpointId(1), cx)).unwrap();
        let got = std::fs::read_to_string(out.join("part-3-1.csv")).unwrap();
        assert_eq!(got.len(), want.len());
        assert!(got == want, "the committed file holds every line in order");
        assert!(
            waited > 0,
            "{} bytes never filled the writes in flight",
            want.len()
        );
        ready(&io, |cx| part.poll_finish(cx)).unwrap();
    }

    #[test]
    fn without_checkpoints_the_output_appears_when_the_input_ends() {
        let dir = tempfile::tempdir().unwrap();
        let io = Standalone::new();
        let sink = FileSink::lines("out");
        let mut part = sink.open_partition(&ctx(dir.path(), false)).unwrap();
        ready(&io, |cx| part.poll_ready(cx)).unwrap();
        part.write("a,1".to_string()).unwrap();
        let out = dir.path().join("out");
        assert!(!out.join("part-3.csv").exists());
        ready(&io, |cx| part.poll_finish(cx)).unwrap();
        assert_eq!(
            std::fs::read_to_string(out.join("part-3.csv")).unwrap(),
            "a,1\n"
        );
        // No records: an empty file.
        let dir = tempfile::tempdir().unwrap();
        let mut part = sink.open_partition(&ctx(dir.path(), false)).unwrap();
        ready(&io, |cx| part.poll_finish(cx)).unwrap();
        let empty = dir.path().join("out").join("part-3.csv");
        assert_eq!(std::fs::read_to_string(empty).unwrap(), "");
    }

    #[test]
    fn output_after_the_final_barrier_fails_instead_of_vanishing() {
        let dir = tempfile::tempdir().unwrap();
        let io = Standalone::new();
        let sink = FileSink::lines("out");
        let mut part = sink.open_partition(&ctx(dir.path(), true)).unwrap();
        part.write("late".to_string()).unwrap();
        let err = ready(&io, |cx| part.poll_finish(cx)).unwrap_err();
        assert!(
            matches!(err, EngineError::UncommittedOutput { bytes: 5, .. }),
            "{err}"
        );
    }

    #[test]
    fn csv_fields_are_quoted_only_when_needed() {
        let field = |f: &str| {
            let mut out = Vec::new();
            csv_field(f, &mut out);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(field("u1"), "u1");
        assert_eq!(field(""), "");
        assert_eq!(field("a,\"b\""), "\"a,\"\"b\"\"\"");
        assert_eq!(field("two\nlines"), "\"two\nlines\"");
        assert_eq!(field("cr\r"), "\"cr\r\"");
    }
}
