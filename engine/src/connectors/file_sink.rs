//! File sinks: one output file per sink partition (`part-<p>.csv` in a directory), and
//! the dead-letter file (one file, one writer). Writes are buffered and made durable
//! (fdatasync) when the input ends.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::dataflow::{PartitionContext, Sink, SinkPartition};
use crate::error::{EngineError, Result};
use crate::metrics::MetricsHandle;

const WRITE_BUFFER_BYTES: usize = 256 * 1024;

type Format<T> = Arc<dyn Fn(&T, &mut Vec<u8>) + Send + Sync>;

/// Writes records as lines to `dir/part-<partition>.csv`.
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

/// The output file of partition `p`.
pub fn part_file(dir: &Path, p: u32) -> PathBuf {
    dir.join(format!("part-{p}.csv"))
}

fn create(path: &Path) -> Result<BufWriter<File>> {
    let f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(|e| EngineError::io("create", path, e))?;
    Ok(BufWriter::with_capacity(WRITE_BUFFER_BYTES, f))
}

fn finish_file(w: &mut BufWriter<File>, path: &Path) -> Result<()> {
    w.flush().map_err(|e| EngineError::io("write", path, e))?;
    w.get_ref()
        .sync_data()
        .map_err(|e| EngineError::io("fdatasync", path, e))
}

impl<T: 'static> Sink<T> for FileSink<T> {
    fn partition(&self, ctx: &PartitionContext<'_>) -> Result<Box<dyn SinkPartition<T>>> {
        let dir = ctx.resolve(&self.dir);
        std::fs::create_dir_all(&dir).map_err(|e| EngineError::io("create directory", &dir, e))?;
        if ctx.partition.0 == 0 {
            // Output of an earlier run with more partitions would otherwise linger.
            let mut q = ctx.parallelism;
            while part_file(&dir, q).exists() {
                let stale = part_file(&dir, q);
                std::fs::remove_file(&stale).map_err(|e| EngineError::io("remove", &stale, e))?;
                q += 1;
            }
        }
        let path = part_file(&dir, ctx.partition.0);
        Ok(Box::new(FilePartition {
            writer: create(&path)?,
            path,
            format: self.format.clone(),
            line: Vec::with_capacity(128),
            metrics: ctx.metrics.clone(),
            clock: ctx.clock,
            records: 0,
        }))
    }
}

struct FilePartition<T> {
    writer: BufWriter<File>,
    path: PathBuf,
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
        self.writer
            .write_all(&self.line)
            .map_err(|e| EngineError::io("write", &self.path, e))
    }

    fn finish(&mut self) -> Result<()> {
        finish_file(&mut self.writer, &self.path)?;
        self.metrics
            .add("sink_records", std::mem::take(&mut self.records));
        self.metrics
            .note_arrival(crate::clock::Clock::now_ns(&self.clock));
        Ok(())
    }
}

/// An input record that could not be processed, with where it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
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
        let path = ctx.resolve(&self.path);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| EngineError::io("create directory", dir, e))?;
        }
        Ok(Box::new(DeadLetterPartition {
            writer: create(&path)?,
            path,
            metrics: ctx.metrics.clone(),
            count: 0,
        }))
    }
}

struct DeadLetterPartition {
    writer: BufWriter<File>,
    path: PathBuf,
    metrics: MetricsHandle,
    count: u64,
}

impl SinkPartition<DeadLetter> for DeadLetterPartition {
    fn write(&mut self, rec: DeadLetter) -> Result<()> {
        let json = serde_json::json!({
            "offset": rec.offset,
            "error": rec.error,
            "line": String::from_utf8_lossy(&rec.line),
        });
        self.count += 1;
        writeln!(self.writer, "{json}").map_err(|e| EngineError::io("write", &self.path, e))
    }

    fn finish(&mut self) -> Result<()> {
        finish_file(&mut self.writer, &self.path)?;
        self.metrics
            .add("dead_letters", std::mem::take(&mut self.count));
        Ok(())
    }
}
