//! The file source: newline-delimited records from one file, split across partitions by
//! byte range. Partition `p` of `P` owns every line whose first byte lies in
//! `[len·p/P, len·(p+1)/P)`; it reads a line that starts inside its range to the end even
//! when the line crosses into the next range. Offsets are byte offsets of the next line,
//! so a checkpoint can record them and a restore can seek back.
//!
//! Reads are buffered `read` calls on the core that owns the partition; the file is
//! expected to be local (page cache), so they do not block for long.

use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::PathBuf;

use crate::dataflow::{Out, PartitionContext, Source, SourcePartition, SourcePoll};
use crate::error::{EngineError, Result};

const READ_BUFFER_BYTES: usize = 256 * 1024;

/// One line of the input, without its line ending.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileLine {
    /// Byte offset of the line's first byte in the file.
    pub offset: u64,
    /// The line's bytes (not checked to be UTF-8).
    pub line: Vec<u8>,
}

/// A newline-delimited file, split across source partitions.
pub struct FileSource {
    path: PathBuf,
}

impl FileSource {
    /// Reads `path` (relative paths resolve against the job directory).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }
}

impl Source<FileLine> for FileSource {
    fn partition(&self, ctx: &PartitionContext<'_>) -> Result<Box<dyn SourcePartition<FileLine>>> {
        let path = ctx.resolve(&self.path);
        let file = File::open(&path).map_err(|e| EngineError::io("open", &path, e))?;
        let len = file
            .metadata()
            .map_err(|e| EngineError::io("stat", &path, e))?
            .len();
        let p = u64::from(ctx.partition.0);
        let n = u64::from(ctx.parallelism);
        let start = (u128::from(len) * u128::from(p) / u128::from(n)) as u64;
        let end = (u128::from(len) * u128::from(p + 1) / u128::from(n)) as u64;
        let mut part = FilePartition {
            path,
            reader: BufReader::with_capacity(READ_BUFFER_BYTES, file),
            pos: 0,
            end,
            buf: Vec::new(),
        };
        part.seek_to_line_at_or_after(start)?;
        Ok(Box::new(part))
    }
}

struct FilePartition {
    path: PathBuf,
    reader: BufReader<File>,
    /// Offset of the next line to read.
    pos: u64,
    /// First byte not owned by this partition.
    end: u64,
    buf: Vec<u8>,
}

impl FilePartition {
    fn io(&self, op: &'static str, e: std::io::Error) -> EngineError {
        EngineError::io(op, &self.path, e)
    }

    fn seek_exact(&mut self, pos: u64) -> Result<()> {
        self.reader
            .seek(SeekFrom::Start(pos))
            .map_err(|e| self.io("seek", e))?;
        self.pos = pos;
        Ok(())
    }

    /// Positions at the first line that starts at or after `start`.
    fn seek_to_line_at_or_after(&mut self, start: u64) -> Result<()> {
        if start == 0 {
            return self.seek_exact(0);
        }
        // The byte before `start` tells whether a line begins exactly at `start`.
        self.seek_exact(start - 1)?;
        self.buf.clear();
        let n = self
            .reader
            .read_until(b'\n', &mut self.buf)
            .map_err(|e| self.io("read", e))?;
        self.pos = start - 1 + n as u64;
        Ok(())
    }
}

impl SourcePartition<FileLine> for FilePartition {
    fn poll(
        &mut self,
        _now_ns: u64,
        max: usize,
        out: &mut Out<'_, FileLine>,
    ) -> Result<SourcePoll> {
        let mut emitted = 0;
        while emitted < max && self.pos < self.end {
            let mut line = Vec::new();
            let n = self
                .reader
                .read_until(b'\n', &mut line)
                .map_err(|e| self.io("read", e))?;
            if n == 0 {
                // The file is shorter than when the split was computed.
                self.end = self.pos;
                break;
            }
            let offset = self.pos;
            self.pos += n as u64;
            if line.last() == Some(&b'\n') {
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
            }
            out.emit(FileLine { offset, line });
            emitted += 1;
        }
        Ok(if emitted > 0 {
            SourcePoll::Emitted(emitted)
        } else {
            SourcePoll::Done
        })
    }

    fn offset(&self) -> u64 {
        self.pos
    }

    fn seek(&mut self, offset: u64) -> Result<()> {
        self.seek_exact(offset)
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::rc::Rc;

    use proptest::prelude::*;

    use super::*;
    use crate::clock::MonotonicClock;
    use crate::dataflow::ops::testing::{Collect, Seen};
    use crate::ids::{CoreId, PartitionId};
    use crate::metrics::MetricsHandle;

    fn read_all(path: &std::path::Path, p: u32, of: u32, from: Option<u64>) -> Vec<FileLine> {
        let ctx = PartitionContext {
            operator: "src",
            partition: PartitionId(p),
            parallelism: of,
            core: CoreId(0),
            job_dir: std::path::Path::new("/"),
            clock: MonotonicClock::new(std::time::Instant::now()),
            metrics: MetricsHandle::default(),
            transactional: false,
        };
        let mut part = FileSource::new(path).partition(&ctx).unwrap();
        if let Some(off) = from {
            part.seek(off).unwrap();
        }
        let seen = Rc::new(RefCell::new(Vec::new()));
        let mut c = Collect(seen.clone());
        while part.poll(0, 3, &mut Out::new(&mut c)).unwrap() != SourcePoll::Done {}
        let v = seen
            .borrow()
            .iter()
            .map(|s| match s {
                Seen::Data(l) => l.clone(),
                _ => unreachable!(),
            })
            .collect();
        v
    }

    proptest! {
        /// However the file is split, every line is read exactly once, in order, with
        /// its offset.
        #[test]
        fn splits_cover_every_line_once(
            lines in proptest::collection::vec("[a-z]{0,12}", 0..40),
            parts in 1u32..7,
            trailing_newline in any::<bool>(),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("in.txt");
            let mut text = lines.join("\n");
            if trailing_newline && !lines.is_empty() { text.push('\n'); }
            std::fs::write(&path, &text).unwrap();
            let mut want = Vec::new();
            let mut off = 0u64;
            for (i, l) in lines.iter().enumerate() {
                let last = i + 1 == lines.len();
                if !(last && l.is_empty() && !trailing_newline) {
                    want.push(FileLine { offset: off, line: l.as_bytes().to_vec() });
                }
                off += l.len() as u64 + 1;
            }
            let got: Vec<FileLine> = (0..parts).flat_map(|p| read_all(&path, p, parts, None)).collect();
            prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn seek_resumes_from_a_reported_offset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.txt");
        std::fs::write(&path, "one\r\ntwo\nthree\n").unwrap();
        let all = read_all(&path, 0, 1, None);
        assert_eq!(all[0].line, b"one");
        let rest = read_all(&path, 0, 1, Some(all[1].offset));
        assert_eq!(rest, all[1..].to_vec());
    }

    #[test]
    fn a_missing_file_names_its_path() {
        let ctx = PartitionContext {
            operator: "src",
            partition: PartitionId(0),
            parallelism: 1,
            core: CoreId(0),
            job_dir: std::path::Path::new("/nonexistent-rill-dir"),
            clock: MonotonicClock::new(std::time::Instant::now()),
            metrics: MetricsHandle::default(),
            transactional: false,
        };
        let err = FileSource::new("in.jsonl").partition(&ctx).err().unwrap();
        assert!(
            err.to_string().contains("/nonexistent-rill-dir/in.jsonl"),
            "{err}"
        );
    }
}
