//! The file source: newline-delimited records from one file, split across partitions by
//! byte range. Partition `p` of `P` owns every line whose first byte lies in
//! `[len·p/P, len·(p+1)/P)`; it reads a line that starts inside its range to the end even
//! when the line crosses into the next range. Offsets are byte offsets of the next line,
//! so a checkpoint can record them and a restore can seek back.
//!
//! Reads go through the core's connector io_uring (`IoCx::uring`), 256 KiB at a time
//! with one read ahead in flight while the lines already read are emitted; a partition
//! whose next bytes are not there yet returns `Pending` and is woken by the read's
//! completion, so a slow disk never blocks its core. Opening the file and reading its
//! length are plain system calls, once, when the partition is created.

use std::fs::File;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;

use crate::dataflow::{
    AsyncSource, AsyncSourcePartition, IoCx, Out, PartitionContext, SourcePoll, Uring,
};
use crate::error::{EngineError, Result};

const READ_CHUNK_BYTES: usize = 256 * 1024;

/// Marks an offset taken before the partition found its first line: the partition then
/// starts at the first line that begins after byte `offset & !ALIGN`.
const ALIGN: u64 = 1 << 63;

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

impl AsyncSource<FileLine> for FileSource {
    fn open_partition(
        &self,
        ctx: &PartitionContext<'_>,
    ) -> Result<Box<dyn AsyncSourcePartition<FileLine>>> {
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
            file: Rc::new(file),
            uring: None,
            data: Vec::new(),
            at: 0,
            pos: 0,
            read_pos: 0,
            end,
            aligning: false,
            eof: false,
            read: None,
        };
        // The byte before `start` tells whether a line begins exactly at `start`.
        part.reset(if start == 0 { 0 } else { (start - 1) | ALIGN });
        Ok(Box::new(part))
    }
}

type Read = Pin<Box<dyn Future<Output = (std::io::Result<usize>, Vec<u8>)>>>;

struct FilePartition {
    path: PathBuf,
    file: Rc<File>,
    uring: Option<Rc<Uring>>,
    /// Bytes read and not consumed are `data[at..]`; `data[at]` is at offset `pos`.
    data: Vec<u8>,
    at: usize,
    /// Offset of the next line to emit (while aligning: of the next byte to scan).
    pos: u64,
    /// Offset of the next byte to read.
    read_pos: u64,
    /// First byte not owned by this partition.
    end: u64,
    /// Skipping to the first line that starts after the byte before the range.
    aligning: bool,
    /// A read returned 0 bytes: the file ends at `read_pos`.
    eof: bool,
    read: Option<Read>,
}

impl FilePartition {
    fn io(&self, op: &'static str, e: std::io::Error) -> EngineError {
        EngineError::io(op, &self.path, e)
    }

    /// Positions at `offset` (with `ALIGN`: at the first line after that byte).
    fn reset(&mut self, offset: u64) {
        self.read = None; // The ring keeps its buffer until the kernel is done with it.
        self.data.clear();
        self.at = 0;
        self.aligning = offset & ALIGN != 0;
        self.pos = offset & !ALIGN;
        self.read_pos = self.pos;
        self.eof = false;
    }

    /// Moves past the rest of the line the range starts in. Returns whether it is done.
    fn align(&mut self) -> bool {
        let rest = &self.data[self.at..];
        match rest.iter().position(|b| *b == b'\n') {
            Some(i) => {
                self.at += i + 1;
                self.pos += i as u64 + 1;
                self.aligning = false;
                true
            }
            None => {
                self.pos += rest.len() as u64;
                self.at = self.data.len();
                false
            }
        }
    }

    /// The next complete line in what was read (or the file's last, unterminated one).
    fn next_line(&mut self) -> Option<FileLine> {
        let rest = &self.data[self.at..];
        let (len, used) = match rest.iter().position(|b| *b == b'\n') {
            Some(i) => (i, i + 1),
            None if self.eof && !rest.is_empty() => (rest.len(), rest.len()),
            None => return None,
        };
        let mut line = rest[..len].to_vec();
        if len < used && line.last() == Some(&b'\r') {
            line.pop();
        }
        let offset = self.pos;
        self.at += used;
        self.pos += used as u64;
        Some(FileLine { offset, line })
    }

    /// Starts the next read if none is in flight; polls the one in flight. `Ready` once
    /// its bytes were added (or the end of the file was seen).
    fn poll_read(&mut self, cx: &mut IoCx<'_>) -> Result<Poll<()>> {
        if self.read.is_none() {
            let uring = match &self.uring {
                Some(u) => u.clone(),
                None => {
                    let u = cx.uring()?;
                    self.uring = Some(u.clone());
                    u
                }
            };
            let (file, pos) = (self.file.clone(), self.read_pos);
            self.read = Some(Box::pin(async move {
                uring
                    .read_file_at(file, vec![0; READ_CHUNK_BYTES], pos)
                    .await
            }));
        }
        let read = self.read.as_mut().expect("started above");
        let Poll::Ready((n, buf)) = read.as_mut().poll(cx.context()) else {
            return Ok(Poll::Pending);
        };
        self.read = None;
        let n = n.map_err(|e| self.io("read", e))?;
        if n == 0 {
            self.eof = true;
        } else {
            self.data.drain(..self.at);
            self.at = 0;
            self.data.extend_from_slice(&buf[..n]);
            self.read_pos += n as u64;
        }
        Ok(Poll::Ready(()))
    }
}

impl AsyncSourcePartition<FileLine> for FilePartition {
    fn poll_next(
        &mut self,
        cx: &mut IoCx<'_>,
        max: usize,
        out: &mut Out<'_, FileLine>,
    ) -> Result<SourcePoll> {
        let mut emitted = 0;
        loop {
            if self.aligning {
                if self.align() {
                    continue;
                }
            } else {
                while emitted < max && self.pos < self.end {
                    let Some(line) = self.next_line() else { break };
                    out.emit(line);
                    emitted += 1;
                }
                if self.pos >= self.end || (self.eof && self.at == self.data.len()) {
                    // Done (a file shorter than when the split was computed ends here).
                    return Ok(if emitted > 0 {
                        SourcePoll::Emitted(emitted)
                    } else {
                        SourcePoll::Done
                    });
                }
                if emitted == max {
                    // Read ahead while the lines already read go downstream.
                    if self.read.is_none() && self.data.len() - self.at < READ_CHUNK_BYTES {
                        let _ = self.poll_read(cx)?;
                    }
                    return Ok(SourcePoll::Emitted(emitted));
                }
            }
            if self.eof {
                // Aligning reached the end: no line starts in this range.
                self.pos = self.read_pos;
                self.aligning = false;
                continue;
            }
            if self.poll_read(cx)?.is_pending() {
                return Ok(if emitted > 0 {
                    SourcePoll::Emitted(emitted)
                } else {
                    SourcePoll::Pending
                });
            }
        }
    }

    fn offset(&self) -> u64 {
        if self.aligning {
            self.pos | ALIGN
        } else {
            self.pos
        }
    }

    fn seek(&mut self, offset: u64) -> Result<()> {
        self.reset(offset);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::rc::Rc;

    use proptest::prelude::*;

    use super::*;
    use crate::clock::MonotonicClock;
    use crate::dataflow::io::testing::Standalone;
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
            process: crate::ids::Process::SINGLE,
        };
        let mut part = FileSource::new(path).open_partition(&ctx).unwrap();
        if let Some(off) = from {
            part.seek(off).unwrap();
        }
        let seen = Rc::new(RefCell::new(Vec::new()));
        let mut c = Collect(seen.clone());
        let io = Standalone::new();
        loop {
            match part
                .poll_next(&mut io.cx(), 3, &mut Out::new(&mut c))
                .unwrap()
            {
                SourcePoll::Done => break,
                SourcePoll::Pending => io.wait(),
                _ => {}
            }
        }
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
    fn an_offset_taken_before_the_range_start_was_aligned_resumes_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.txt");
        std::fs::write(&path, "aaaa\nbbbb\ncccc\ndddd\n").unwrap();
        let ctx = PartitionContext {
            operator: "src",
            partition: PartitionId(1),
            parallelism: 2,
            core: CoreId(0),
            job_dir: std::path::Path::new("/"),
            clock: MonotonicClock::new(std::time::Instant::now()),
            metrics: MetricsHandle::default(),
            transactional: false,
            process: crate::ids::Process::SINGLE,
        };
        // A barrier before the first poll records the unaligned start.
        let off = FileSource::new(&path)
            .open_partition(&ctx)
            .unwrap()
            .offset();
        assert_ne!(off & ALIGN, 0);
        let fresh = read_all(&path, 1, 2, None);
        assert_eq!(fresh[0].line, b"cccc");
        assert_eq!(read_all(&path, 1, 2, Some(off)), fresh);
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
            process: crate::ids::Process::SINGLE,
        };
        let err = FileSource::new("in.jsonl")
            .open_partition(&ctx)
            .err()
            .unwrap();
        assert!(
            err.to_string().contains("/nonexistent-rill-dir/in.jsonl"),
            "{err}"
        );
    }
}
