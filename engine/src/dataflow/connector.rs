//! The source and sink traits a connector implements: synchronous (`Source`, `Sink`)
//! and asynchronous (`AsyncSource`, `AsyncSink`: partitions that may wait for IO on
//! their core, polled with an `IoCx`), the adapters that run a synchronous one as an
//! asynchronous one, and `IntoSource` / `IntoSink`, which let the builder take either.
//! Nothing here runs partitions; the drivers and the sink operator in `instantiate` do.

use std::rc::Rc;
use std::task::Poll;

use super::{IoCx, Out, PartitionContext, RecoverContext};
use crate::error::Result;
use crate::ids::CheckpointId;

/// What a source partition's `poll` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourcePoll {
    /// Emitted this many records (at least one).
    Emitted(usize),
    /// Nothing ready; the next record is due at this time (ns on the job clock), or
    /// unknown. The partition is polled again every round of its core (or, when the
    /// core parks, by `next_due_ns`).
    Idle {
        /// When to poll again, if known.
        next_due_ns: Option<u64>,
    },
    /// Nothing ready, and the partition handed the waker of its [`IoCx`] to whatever
    /// will make data ready (an io_uring operation, a future, another thread). It is
    /// not polled again until that waker is called, and its core may park meanwhile:
    /// waiting costs no CPU. Only an [`AsyncSourcePartition`] can return this (a
    /// synchronous `SourcePartition` returning it is treated as `Idle { None }`).
    Pending,
    /// The input is done; `poll` will not be called again.
    Done,
}

/// A source whose partitions are synchronous: each `poll` returns at once with what is
/// ready. The simplest way to write a source; `Pipeline::source` takes it or an
/// [`AsyncSource`]. A source
/// that waits for IO (a socket, a remote service) implements [`AsyncSource`] instead,
/// so that waiting never blocks or spins its core.
///
/// ```
/// use rill_engine::dataflow::{Out, PartitionContext, Source, SourcePartition, SourcePoll};
///
/// /// The numbers `0..n`, split across partitions by residue.
/// struct Count(u64);
///
/// struct CountPartition { next: u64, step: u64, end: u64 }
///
/// impl Source<u64> for Count {
///     fn partition(&self, ctx: &PartitionContext<'_>)
///         -> rill_engine::Result<Box<dyn SourcePartition<u64>>> {
///         Ok(Box::new(CountPartition {
///             next: u64::from(ctx.partition.0),
///             step: u64::from(ctx.parallelism),
///             end: self.0,
///         }))
///     }
/// }
///
/// impl SourcePartition<u64> for CountPartition {
///     fn poll(&mut self, _now_ns: u64, max: usize, out: &mut Out<'_, u64>)
///         -> rill_engine::Result<SourcePoll> {
///         let mut n = 0;
///         while n < max && self.next < self.end {
///             out.emit(self.next);
///             self.next += self.step;
///             n += 1;
///         }
///         Ok(if n > 0 { SourcePoll::Emitted(n) } else { SourcePoll::Done })
///     }
///     // The offset is what a checkpoint records and a restore seeks back to.
///     fn offset(&self) -> u64 { self.next }
///     fn seek(&mut self, offset: u64) -> rill_engine::Result<()> {
///         self.next = offset;
///         Ok(())
///     }
/// }
///
/// let p = rill_engine::dataflow::Pipeline::new(128);
/// p.source("numbers", Count(1000)).map("double", |x| x * 2);
/// ```
pub trait Source<T>: Send + Sync + 'static {
    /// Creates partition `ctx.partition` of `ctx.parallelism`.
    fn partition(&self, ctx: &PartitionContext<'_>) -> Result<Box<dyn SourcePartition<T>>>;
}

/// One parallel instance of a synchronous source. Replayable sources report and seek to
/// offsets.
pub trait SourcePartition<T> {
    /// Called once when every core is ready, with the job's start time (ns).
    fn start(&mut self, _start_ns: u64) {}
    /// Emits at most `max` records that are ready at `now_ns`.
    fn poll(&mut self, now_ns: u64, max: usize, out: &mut Out<'_, T>) -> Result<SourcePoll>;
    /// The position of the next record this partition will emit.
    fn offset(&self) -> u64;
    /// Moves to `offset` (a value `offset` returned earlier).
    fn seek(&mut self, offset: u64) -> Result<()>;
    /// The position when one offset is not enough (a partition reading several splits,
    /// such as Kafka partitions): opaque bytes the checkpoint stores next to `offset`
    /// and a restore hands to `seek_position` instead of calling `seek`. Default `None`:
    /// the position is `offset` alone.
    fn position(&self) -> Option<Vec<u8>> {
        None
    }
    /// Moves to `position` (bytes `position` returned earlier); called before `start`
    /// instead of `seek` when the restored checkpoint holds a position for this
    /// partition. The default refuses (a source that never returns a position).
    fn seek_position(&mut self, _position: &[u8]) -> Result<()> {
        Err(no_seek_position())
    }
    /// Checkpoint `id` completed (its manifest is published); `offset` and `position`
    /// are what this partition reported at the checkpoint's barrier. Called on the
    /// partition's core, in checkpoint order, only for checkpoints it took part in;
    /// must not block (e.g. committing offsets somewhere for monitoring). Default:
    /// nothing.
    fn checkpoint_complete(&mut self, _id: CheckpointId, _offset: u64, _position: Option<&[u8]>) {}
}

/// A source whose partitions may wait for IO without blocking their core. Partitions
/// are polled by the core that owns them with an [`IoCx`]: they start IO on the core's
/// io_uring ([`IoCx::uring`]) or hand [`IoCx::waker`] to another thread, and return
/// [`SourcePoll::Pending`] until data is there. A pending partition is not polled again
/// until woken; the core meanwhile runs its other partitions, or parks and is woken by
/// the completion. Checkpoints work as for [`Source`]: at a barrier the core asks
/// [`AsyncSourcePartition::offset`] for the position of the next record not yet emitted
/// (IO in flight, read ahead but not emitted, is simply read again after a restore).
///
/// `Pipeline::source` takes a [`Source`] as well (through [`FromSyncSource`]; its
/// partitions never return `Pending`).
///
/// ```no_run
/// use std::rc::Rc;
/// use rill_engine::dataflow::{
///     AsyncSource, AsyncSourcePartition, IoCx, Out, PartitionContext, SourcePoll, Uring,
/// };
/// use std::future::Future;
/// use std::os::fd::AsRawFd;
/// use std::pin::Pin;
///
/// type Recv = Pin<Box<dyn Future<Output = (std::io::Result<usize>, Vec<u8>)>>>;
///
/// /// Chunks of bytes from a TCP connection, received through the core's io_uring.
/// struct Tcp(std::net::SocketAddr);
///
/// struct TcpPartition { stream: std::net::TcpStream, recv: Option<Recv>, received: u64 }
///
/// impl AsyncSource<Vec<u8>> for Tcp {
///     fn open_partition(&self, _ctx: &PartitionContext<'_>)
///         -> rill_engine::Result<Box<dyn AsyncSourcePartition<Vec<u8>>>> {
///         let stream = std::net::TcpStream::connect(self.0).map_err(|e| {
///             rill_engine::EngineError::io("connect", std::path::Path::new("tcp"), e)
///         })?;
///         Ok(Box::new(TcpPartition { stream, recv: None, received: 0 }))
///     }
/// }
///
/// impl AsyncSourcePartition<Vec<u8>> for TcpPartition {
///     fn poll_next(&mut self, cx: &mut IoCx<'_>, _max: usize, out: &mut Out<'_, Vec<u8>>)
///         -> rill_engine::Result<SourcePoll> {
///         if self.recv.is_none() {
///             let uring: Rc<Uring> = cx.uring()?;
///             let fd = self.stream.as_raw_fd();
///             self.recv = Some(Box::pin(async move { uring.recv(fd, vec![0; 4096]).await }));
///         }
///         let recv = self.recv.as_mut().expect("started above");
///         match recv.as_mut().poll(cx.context()) {
///             // The completion will wake this partition: its core may sleep until then.
///             std::task::Poll::Pending => Ok(SourcePoll::Pending),
///             std::task::Poll::Ready((n, mut buf)) => {
///                 self.recv = None;
///                 let n = n.map_err(|e| {
///                     rill_engine::EngineError::io("recv", std::path::Path::new("tcp"), e)
///                 })?;
///                 if n == 0 {
///                     return Ok(SourcePoll::Done);
///                 }
///                 buf.truncate(n);
///                 self.received += n as u64;
///                 out.emit(buf);
///                 Ok(SourcePoll::Emitted(1))
///             }
///         }
///     }
///     fn offset(&self) -> u64 { self.received }
///     // A socket cannot go back: this source is not replayable.
///     fn seek(&mut self, _offset: u64) -> rill_engine::Result<()> { Ok(()) }
/// }
/// ```
pub trait AsyncSource<T>: Send + Sync + 'static {
    /// Creates partition `ctx.partition` of `ctx.parallelism` (on its core).
    fn open_partition(
        &self,
        ctx: &PartitionContext<'_>,
    ) -> Result<Box<dyn AsyncSourcePartition<T>>>;
}

/// One parallel instance of an [`AsyncSource`].
pub trait AsyncSourcePartition<T> {
    /// Called once when every core is ready, with the job's start time (ns).
    fn start(&mut self, _start_ns: u64) {}
    /// Emits at most `max` records that are ready now, or returns
    /// [`SourcePoll::Pending`] after handing `cx`'s waker to what will make some ready.
    /// Never blocks.
    fn poll_next(
        &mut self,
        cx: &mut IoCx<'_>,
        max: usize,
        out: &mut Out<'_, T>,
    ) -> Result<SourcePoll>;
    /// The position of the next record this partition will emit.
    fn offset(&self) -> u64;
    /// Moves to `offset` (a value `offset` returned earlier); called before `start`
    /// when the job restores a checkpoint.
    fn seek(&mut self, offset: u64) -> Result<()>;
    /// The position when one offset is not enough (a partition reading several splits,
    /// such as Kafka partitions): opaque bytes the checkpoint stores next to `offset`
    /// and a restore hands to `seek_position` instead of calling `seek`. Default `None`:
    /// the position is `offset` alone.
    fn position(&self) -> Option<Vec<u8>> {
        None
    }
    /// Moves to `position` (bytes `position` returned earlier); called before `start`
    /// instead of `seek` when the restored checkpoint holds a position for this
    /// partition. The default refuses (a source that never returns a position).
    fn seek_position(&mut self, _position: &[u8]) -> Result<()> {
        Err(no_seek_position())
    }
    /// Checkpoint `id` completed (its manifest is published); `offset` and `position`
    /// are what this partition reported at the checkpoint's barrier. Called on the
    /// partition's core, in checkpoint order, only for checkpoints it took part in;
    /// must not block (e.g. committing offsets somewhere for monitoring). Default:
    /// nothing.
    fn checkpoint_complete(&mut self, _id: CheckpointId, _offset: u64, _position: Option<&[u8]>) {}
}

/// A synchronous source partition seen as an asynchronous one.
struct SyncSource<T>(Box<dyn SourcePartition<T>>);

impl<T> AsyncSourcePartition<T> for SyncSource<T> {
    fn start(&mut self, start_ns: u64) {
        self.0.start(start_ns);
    }
    fn poll_next(
        &mut self,
        cx: &mut IoCx<'_>,
        max: usize,
        out: &mut Out<'_, T>,
    ) -> Result<SourcePoll> {
        Ok(match self.0.poll(cx.now_ns(), max, out)? {
            // It holds no waker: poll it every round like an idle one.
            SourcePoll::Pending => SourcePoll::Idle { next_due_ns: None },
            p => p,
        })
    }
    fn offset(&self) -> u64 {
        self.0.offset()
    }
    fn seek(&mut self, offset: u64) -> Result<()> {
        self.0.seek(offset)
    }
    fn position(&self) -> Option<Vec<u8>> {
        self.0.position()
    }
    fn seek_position(&mut self, position: &[u8]) -> Result<()> {
        self.0.seek_position(position)
    }
    fn checkpoint_complete(&mut self, id: CheckpointId, offset: u64, position: Option<&[u8]>) {
        self.0.checkpoint_complete(id, offset, position);
    }
}

/// What the default `seek_position` returns.
fn no_seek_position() -> crate::error::EngineError {
    crate::error::EngineError::Graph {
        operator: "source".into(),
        reason: "the checkpoint holds a multi-offset position for this source partition, \
                 but the source does not implement `seek_position`"
            .into(),
    }
}

/// A [`Source`] seen as an [`AsyncSource`] (what `Pipeline::source` makes of one).
pub struct FromSyncSource<S>(pub S);

impl<T: 'static, S: Source<T>> AsyncSource<T> for FromSyncSource<S> {
    fn open_partition(
        &self,
        ctx: &PartitionContext<'_>,
    ) -> Result<Box<dyn AsyncSourcePartition<T>>> {
        Ok(Box::new(SyncSource(self.0.partition(ctx)?)))
    }
}

/// Marks the [`IntoSource`] / [`IntoSink`] impl of synchronous sources and sinks.
pub enum SyncApi {}
/// Marks the [`IntoSource`] / [`IntoSink`] impl of asynchronous sources and sinks.
pub enum AsyncApi {}

/// What `Pipeline::source` takes: a [`Source`] or an [`AsyncSource`] (`M` is inferred;
/// a type implementing both needs `FromSyncSource(s)` or an explicit `M`).
pub trait IntoSource<T, M> {
    /// The source as the engine runs it.
    type Source: AsyncSource<T>;
    /// Converts.
    fn into_source(self) -> Self::Source;
}

impl<T: 'static, S: Source<T>> IntoSource<T, SyncApi> for S {
    type Source = FromSyncSource<S>;
    fn into_source(self) -> FromSyncSource<S> {
        FromSyncSource(self)
    }
}

impl<T, S: AsyncSource<T>> IntoSource<T, AsyncApi> for S {
    type Source = S;
    fn into_source(self) -> S {
        self
    }
}

/// A sink whose partitions are synchronous: `write` takes a record and returns.
/// `Stream::sink` takes it or an [`AsyncSink`]; a sink whose writes wait for IO
/// implements [`AsyncSink`] instead.
///
/// ```
/// use rill_engine::dataflow::{PartitionContext, Sink, SinkPartition};
///
/// /// Prints every record (not transactional: a restore may print some again).
/// struct Print;
/// struct PrintPartition(u32);
///
/// impl Sink<String> for Print {
///     fn partition(&self, ctx: &PartitionContext<'_>)
///         -> rill_engine::Result<Box<dyn SinkPartition<String>>> {
///         Ok(Box::new(PrintPartition(ctx.partition.0)))
///     }
/// }
///
/// impl SinkPartition<String> for PrintPartition {
///     fn write(&mut self, rec: String) -> rill_engine::Result<()> {
///         println!("[{}] {rec}", self.0);
///         Ok(())
///     }
///     fn finish(&mut self) -> rill_engine::Result<()> { Ok(()) }
/// }
///
/// let p = rill_engine::dataflow::Pipeline::new(128);
/// p.source("lines", rill_engine::connectors::FileSource::new("in.txt"))
///     .map("text", |l| String::from_utf8_lossy(&l.line).into_owned())
///     .sink("print", Print);
/// ```
pub trait Sink<T>: Send + Sync + 'static {
    /// Creates partition `ctx.partition` of `ctx.parallelism`.
    fn partition(&self, ctx: &PartitionContext<'_>) -> Result<Box<dyn SinkPartition<T>>>;
    /// Called once per job (re)start, before any partition exists: settle what an
    /// earlier run left behind — commit what was pre-committed for the restored
    /// checkpoint or before, discard everything newer (the restore re-creates it).
    fn recover(&self, _ctx: &RecoverContext<'_>) -> Result<()> {
        Ok(())
    }
}

/// One parallel instance of a synchronous sink. A transactional sink (one created with
/// `PartitionContext::transactional`) keeps what it writes invisible until `commit`.
pub trait SinkPartition<T> {
    /// Takes one record.
    fn write(&mut self, rec: T) -> Result<()>;
    /// The input is done: flush and make durable what was written (and, when not
    /// transactional, visible).
    fn finish(&mut self) -> Result<()>;
    /// Barrier `id`: everything written since the previous barrier becomes ready to
    /// commit. Returns the files whose data must be synced before the checkpoint counts
    /// (the core syncs them through its io_uring, off the record path).
    fn pre_commit(&mut self, _id: CheckpointId) -> Result<Vec<std::fs::File>> {
        Ok(Vec::new())
    }
    /// Checkpoint `id` completed: make everything pre-committed at `id` or before
    /// visible. Idempotent. Returns directories whose entries should be synced.
    fn commit(&mut self, _id: CheckpointId) -> Result<Vec<std::fs::File>> {
        Ok(Vec::new())
    }
}

/// A sink whose partitions may wait for IO without blocking their core (Flink's
/// two-phase-commit sink, poll-style like `futures::Sink`). The core calls a partition:
///
/// - [`poll_ready`](AsyncSinkPartition::poll_ready) before each record, then
///   [`write`](AsyncSinkPartition::write). `Pending` is backpressure: the record waits
///   in a bounded queue in front of the partition, and when the queue is full the
///   operators feeding it stop, while the core goes on with its other partitions or
///   parks until the partition's waker is called.
/// - at checkpoint barrier `n`, once every record before it was written,
///   [`poll_pre_commit`](AsyncSinkPartition::poll_pre_commit) until `Ready`: the first
///   call seals transaction `n`, later calls drive its writes still in flight. Records
///   after the barrier wait meanwhile (no `write` before it is `Ready`); the checkpoint
///   counts only once it is.
/// - when checkpoint `n` completes, [`poll_commit`](AsyncSinkPartition::poll_commit)
///   until `Ready` (commits are in checkpoint order and may interleave with writes).
/// - when the input ends, [`poll_finish`](AsyncSinkPartition::poll_finish) until `Ready`.
///
/// Before any partition of a (re)started job exists,
/// [`recover_output`](AsyncSink::recover_output) settles what an earlier run left: commit
/// what the restored checkpoint pre-committed, discard the rest. `Stream::sink` takes a
/// [`Sink`] as well (through [`FromSyncSink`]).
///
/// ```no_run
/// use std::rc::Rc;
/// use std::task::Poll;
/// use std::future::Future;
/// use std::pin::Pin;
/// use rill_engine::dataflow::{AsyncSink, AsyncSinkPartition, IoCx, PartitionContext};
/// use rill_engine::ids::CheckpointId;
///
/// type Write = Pin<Box<dyn Future<Output = (std::io::Result<usize>, Vec<u8>)>>>;
///
/// /// Appends lines to one file per partition through the core's io_uring, one write
/// /// in flight at a time (not transactional; see `FileSink` for one that is).
/// struct Append(std::path::PathBuf);
///
/// struct AppendPartition { file: Rc<std::fs::File>, pos: u64, buf: Vec<u8>, write: Option<Write> }
///
/// impl AppendPartition {
///     /// Drives the write in flight; starts one for buffered bytes if `flush`.
///     fn drive(&mut self, cx: &mut IoCx<'_>, flush: bool) -> Poll<rill_engine::Result<()>> {
///         loop {
///             if let Some(w) = &mut self.write {
///                 let (n, _buf) = std::task::ready!(w.as_mut().poll(cx.context()));
///                 self.write = None;
///                 let n = n.map_err(|e| rill_engine::EngineError::io("write", std::path::Path::new("out"), e))?;
///                 self.pos += n as u64; // (a real sink re-issues a short write's rest)
///             }
///             if self.buf.is_empty() || !flush {
///                 return Poll::Ready(Ok(()));
///             }
///             let (uring, file, pos) = (cx.uring()?, self.file.clone(), self.pos);
///             let buf = std::mem::take(&mut self.buf);
///             self.write = Some(Box::pin(async move { uring.write_file_at(file, buf, pos).await }));
///         }
///     }
/// }
///
/// impl AsyncSink<String> for Append {
///     fn open_partition(&self, ctx: &PartitionContext<'_>)
///         -> rill_engine::Result<Box<dyn AsyncSinkPartition<String>>> {
///         let path = ctx.resolve(&self.0).join(format!("part-{}.txt", ctx.partition.0));
///         let file = std::fs::File::create(&path)
///             .map_err(|e| rill_engine::EngineError::io("create", &path, e))?;
///         Ok(Box::new(AppendPartition { file: Rc::new(file), pos: 0, buf: Vec::new(), write: None }))
///     }
/// }
///
/// impl AsyncSinkPartition<String> for AppendPartition {
///     fn poll_ready(&mut self, cx: &mut IoCx<'_>) -> Poll<rill_engine::Result<()>> {
///         // Backpressure: at most 64 KiB buffered while a write is in flight.
///         std::task::ready!(self.drive(cx, self.buf.len() >= 64 << 10))?;
///         if self.buf.len() >= 64 << 10 { Poll::Pending } else { Poll::Ready(Ok(())) }
///     }
///     fn write(&mut self, rec: String) -> rill_engine::Result<()> {
///         self.buf.extend_from_slice(rec.as_bytes());
///         self.buf.push(b'\n');
///         Ok(())
///     }
///     fn poll_pre_commit(&mut self, _id: CheckpointId, cx: &mut IoCx<'_>)
///         -> Poll<rill_engine::Result<Vec<std::fs::File>>> {
///         // At-least-once: everything before the barrier is written before it counts.
///         std::task::ready!(self.drive(cx, true))?;
///         Poll::Ready(Ok(Vec::new()))
///     }
///     fn poll_finish(&mut self, cx: &mut IoCx<'_>) -> Poll<rill_engine::Result<()>> {
///         self.drive(cx, true)
///     }
/// }
/// ```
pub trait AsyncSink<T>: Send + Sync + 'static {
    /// Creates partition `ctx.partition` of `ctx.parallelism` (on its core).
    fn open_partition(&self, ctx: &PartitionContext<'_>) -> Result<Box<dyn AsyncSinkPartition<T>>>;
    /// Called once per job (re)start, before any partition exists (not on a core: it may
    /// block): commit what was pre-committed for the restored checkpoint or before,
    /// discard everything newer (the restore re-creates it).
    fn recover_output(&self, _ctx: &RecoverContext<'_>) -> Result<()> {
        Ok(())
    }
}

/// One parallel instance of an [`AsyncSink`]; see there for the order of calls. No
/// method blocks: one that must wait returns `Pending` after handing `cx`'s waker to
/// what it waits for.
pub trait AsyncSinkPartition<T> {
    /// Whether the partition takes a record now.
    fn poll_ready(&mut self, cx: &mut IoCx<'_>) -> Poll<Result<()>>;
    /// Takes one record (after `poll_ready` returned `Ready(Ok)`).
    fn write(&mut self, rec: T) -> Result<()>;
    /// Barrier `id`: seals what was written since the previous barrier (first call) and
    /// drives its IO until it may be committed. `Ready` with the files whose data must
    /// be synced before the checkpoint counts (the core syncs them with the checkpoint).
    fn poll_pre_commit(
        &mut self,
        _id: CheckpointId,
        _cx: &mut IoCx<'_>,
    ) -> Poll<Result<Vec<std::fs::File>>> {
        Poll::Ready(Ok(Vec::new()))
    }
    /// Checkpoint `id` completed: make everything pre-committed at `id` or before
    /// visible. Idempotent.
    fn poll_commit(&mut self, _id: CheckpointId, _cx: &mut IoCx<'_>) -> Poll<Result<()>> {
        Poll::Ready(Ok(()))
    }
    /// The input is done: flush and make durable what was written (and, when not
    /// transactional, visible).
    fn poll_finish(&mut self, cx: &mut IoCx<'_>) -> Poll<Result<()>>;
}

type LocalTask = std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>;

/// A synchronous sink partition seen as an asynchronous one. The directories its commit
/// returns are synced through the core's io_uring before the commit counts as done.
struct SyncSink<T> {
    inner: Box<dyn SinkPartition<T>>,
    /// The checkpoint being committed and its directory syncs.
    committing: Option<(CheckpointId, LocalTask)>,
}

impl<T> AsyncSinkPartition<T> for SyncSink<T> {
    #[inline]
    fn poll_ready(&mut self, _cx: &mut IoCx<'_>) -> Poll<Result<()>> {
        Poll::Ready(Ok(()))
    }
    #[inline]
    fn write(&mut self, rec: T) -> Result<()> {
        self.inner.write(rec)
    }
    fn poll_pre_commit(
        &mut self,
        id: CheckpointId,
        _cx: &mut IoCx<'_>,
    ) -> Poll<Result<Vec<std::fs::File>>> {
        Poll::Ready(self.inner.pre_commit(id))
    }
    fn poll_commit(&mut self, id: CheckpointId, cx: &mut IoCx<'_>) -> Poll<Result<()>> {
        if self.committing.as_ref().map(|(c, _)| *c) != Some(id) {
            let dirs = match self.inner.commit(id) {
                Ok(d) => d,
                Err(e) => return Poll::Ready(Err(e)),
            };
            if dirs.is_empty() {
                return Poll::Ready(Ok(()));
            }
            let uring = match cx.uring() {
                Ok(u) => u,
                Err(e) => return Poll::Ready(Err(e)),
            };
            let task: LocalTask = Box::pin(async move {
                for d in dirs {
                    if let Err(e) = uring.sync_file(Rc::new(d), false).await {
                        tracing::warn!("syncing a committed sink directory: {e}");
                    }
                }
            });
            self.committing = Some((id, task));
        }
        let (_, task) = self.committing.as_mut().expect("set above");
        match task.as_mut().poll(cx.context()) {
            Poll::Ready(()) => {
                self.committing = None;
                Poll::Ready(Ok(()))
            }
            Poll::Pending => Poll::Pending,
        }
    }
    fn poll_finish(&mut self, _cx: &mut IoCx<'_>) -> Poll<Result<()>> {
        Poll::Ready(self.inner.finish())
    }
}

/// A [`Sink`] seen as an [`AsyncSink`] (what `Stream::sink` makes of one).
pub struct FromSyncSink<S>(pub S);

impl<T: 'static, S: Sink<T>> AsyncSink<T> for FromSyncSink<S> {
    fn open_partition(&self, ctx: &PartitionContext<'_>) -> Result<Box<dyn AsyncSinkPartition<T>>> {
        Ok(Box::new(SyncSink {
            inner: self.0.partition(ctx)?,
            committing: None,
        }))
    }
    fn recover_output(&self, ctx: &RecoverContext<'_>) -> Result<()> {
        self.0.recover(ctx)
    }
}

/// What `Stream::sink` takes: a [`Sink`] or an [`AsyncSink`] (`M` is inferred).
pub trait IntoSink<T, M> {
    /// The sink as the engine runs it.
    type Sink: AsyncSink<T>;
    /// Converts.
    fn into_sink(self) -> Self::Sink;
}

impl<T: 'static, S: Sink<T>> IntoSink<T, SyncApi> for S {
    type Sink = FromSyncSink<S>;
    fn into_sink(self) -> FromSyncSink<S> {
        FromSyncSink(self)
    }
}

impl<T, S: AsyncSink<T>> IntoSink<T, AsyncApi> for S {
    type Sink = S;
    fn into_sink(self) -> S {
        self
    }
}
