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
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::dataflow::{PartitionContext, RecoverContext, Sink, SinkPartition};
use crate::error::{EngineError, Result};
use crate::ids::CheckpointId;
use crate::metrics::MetricsHandle;

const WRITE_BUFFER_BYTES: usize = 256 * 1024;

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

/// One output file that becomes visible only when committed (see the module doc).
struct TxFile {
    dir: PathBuf,
    /// `part-3`, `dead-letter`.
    name: String,
    /// `csv`, `jsonl`.
    ext: String,
    transactional: bool,
    writer: Option<(BufWriter<File>, PathBuf)>,
    seq: u64,
    pending: Vec<(CheckpointId, PathBuf)>,
}

impl TxFile {
    fn new(dir: PathBuf, name: String, ext: String, transactional: bool) -> Self {
        Self {
            dir,
            name,
            ext,
            transactional,
            writer: None,
            seq: 0,
            pending: Vec::new(),
        }
    }

    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        if self.writer.is_none() {
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
            self.writer = Some((BufWriter::with_capacity(WRITE_BUFFER_BYTES, f), path));
        }
        let (w, path) = self.writer.as_mut().expect("opened above");
        w.write_all(bytes)
            .map_err(|e| EngineError::io("write", path.as_path(), e))
    }

    /// Flushes the open file and renames it to `to`; returns the file (for a sync).
    fn seal(&mut self, to: &Path) -> Result<Option<File>> {
        let Some((w, path)) = self.writer.take() else {
            return Ok(None);
        };
        let f = w
            .into_inner()
            .map_err(|e| EngineError::io("write", &path, e.into_error()))?;
        std::fs::rename(&path, to).map_err(|e| EngineError::io("rename", &path, e))?;
        Ok(Some(f))
    }

    fn pre_commit(&mut self, id: CheckpointId) -> Result<Vec<File>> {
        let to = self
            .dir
            .join(format!(".{}-{}.{}.pending", self.name, id.0, self.ext));
        match self.seal(&to)? {
            Some(f) => {
                self.pending.push((id, to));
                Ok(vec![f, open_dir(&self.dir)?])
            }
            None => Ok(Vec::new()),
        }
    }

    fn commit(&mut self, id: CheckpointId) -> Result<Vec<File>> {
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
        Ok(if any {
            vec![open_dir(&self.dir)?]
        } else {
            Vec::new()
        })
    }

    fn finish(&mut self) -> Result<()> {
        if self.transactional {
            // Everything was pre-committed at the final barrier, which is aligned: a
            // file opened after it holds output that no checkpoint commits. Say so
            // loudly instead of dropping it (issue 13: unaligned final checkpoints lost
            // the records processed after their barrier here, and the run exited 0).
            if let Some((w, path)) = self.writer.take() {
                let f = w
                    .into_inner()
                    .map_err(|e| EngineError::io("write", &path, e.into_error()))?;
                let bytes = f.metadata().map(|m| m.len()).unwrap_or(0);
                drop(f);
                std::fs::remove_file(&path).map_err(|e| EngineError::io("remove", &path, e))?;
                if bytes > 0 {
                    return Err(EngineError::UncommittedOutput { path, bytes });
                }
            }
            return Ok(());
        }
        let to = self.dir.join(format!("{}.{}", self.name, self.ext));
        if self.writer.is_none() {
            // No records: an empty output file, as a plain sink would leave.
            self.write(&[])?;
        }
        if let Some(f) = self.seal(&to)? {
            f.sync_data()
                .map_err(|e| EngineError::io("fdatasync", &to, e))?;
            sync_dir(&self.dir)?;
        }
        Ok(())
    }
}

fn is_part_name(name: &str) -> bool {
    name.strip_prefix("part-")
        .is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

impl<T: 'static> Sink<T> for FileSink<T> {
    fn partition(&self, ctx: &PartitionContext<'_>) -> Result<Box<dyn SinkPartition<T>>> {
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

    fn recover(&self, ctx: &RecoverContext<'_>) -> Result<()> {
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

impl<T> SinkPartition<T> for FilePartition<T> {
    #[inline]
    fn write(&mut self, rec: T) -> Result<()> {
        self.line.clear();
        (self.format)(&rec, &mut self.line);
        self.records += 1;
        self.file.write(&self.line)
    }

    fn finish(&mut self) -> Result<()> {
        self.file.finish()?;
        self.metrics
            .add("sink_records", std::mem::take(&mut self.records));
        if !self.file.transactional {
            // Without checkpoints the output appears (is renamed into place) now.
            self.metrics
                .note_arrival(crate::clock::Clock::now_ns(&self.clock));
        }
        Ok(())
    }

    fn pre_commit(&mut self, id: CheckpointId) -> Result<Vec<File>> {
        let r = self.file.pre_commit(id);
        self.metrics
            .add("sink_records", std::mem::take(&mut self.records));
        r
    }

    fn commit(&mut self, id: CheckpointId) -> Result<Vec<File>> {
        let synced = self.file.commit(id)?;
        if !synced.is_empty() {
            // Rows became committed output: the report's first output (and last
            // arrival) is when output is visible, not when the sink finished.
            self.metrics
                .note_arrival(crate::clock::Clock::now_ns(&self.clock));
        }
        Ok(synced)
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

impl Sink<DeadLetter> for DeadLetterSink {
    fn partition(&self, ctx: &PartitionContext<'_>) -> Result<Box<dyn SinkPartition<DeadLetter>>> {
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

    fn recover(&self, ctx: &RecoverContext<'_>) -> Result<()> {
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

impl SinkPartition<DeadLetter> for DeadLetterPartition {
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

    fn finish(&mut self) -> Result<()> {
        self.file.finish()?;
        self.metrics
            .add("dead_letters", std::mem::take(&mut self.count));
        Ok(())
    }

    fn pre_commit(&mut self, id: CheckpointId) -> Result<Vec<File>> {
        self.metrics
            .add("dead_letters", std::mem::take(&mut self.count));
        self.file.pre_commit(id)
    }

    fn commit(&mut self, id: CheckpointId) -> Result<Vec<File>> {
        self.file.commit(id)
    }
}
