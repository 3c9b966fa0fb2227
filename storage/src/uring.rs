//! One core's own io_uring, driven by polling, and the log-file backend built on it
//! ([`UringFs`]). [`Uring`] owns the ring, the userspace queue of operations waiting for room
//! in the submission queue and the slot table of operations the kernel has not completed;
//! each slot owns its operation's buffer (and, for [`UringFs`], its file) until the
//! completion is reaped, so a future dropped early never frees memory the kernel still
//! reads. The shard loop calls [`Uring::poll`] every iteration: it never blocks, spawns no
//! thread and needs no executor — the futures are polled by hand with any `Waker`.
//! [`Uring::wait`] and [`Uring::block_on`] block and are for tools and tests only. This
//! module knows nothing of log framing (see [`crate::writer`]).
#![allow(unsafe_code)]

use crate::io::{LogFile, LogFs};
use io_uring::{opcode, squeue, types, IoUring};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::fmt;
use std::fs::File;
use std::future::Future;
use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

/// Where an operation is.
enum Phase {
    /// Waiting in the userspace queue: the kernel has not seen it (holds the SQE to push).
    Queued(squeue::Entry),
    /// Pushed to the submission queue; its completion has not been reaped.
    InKernel,
    /// Completed with this result; waiting for its future to take it.
    Done(i32),
}

/// One operation's state and everything the kernel may touch until it completed.
struct Slot {
    phase: Phase,
    waker: Option<Waker>,
    /// The future was dropped while the kernel had the operation: free on completion.
    abandoned: bool,
    /// The buffer the kernel reads from (writes, sends) or writes into (recv); owned here
    /// until the completion is reaped.
    buf: Option<Vec<u8>>,
    /// Keeps the file (and so its fd number) open until the completion is reaped.
    _file: Option<Rc<File>>,
}

struct Ring {
    ring: IoUring,
    /// Indexed by `user_data`.
    slots: Vec<Option<Slot>>,
    free: Vec<usize>,
    /// Operations not yet pushed to the submission queue, oldest first.
    queued: VecDeque<usize>,
    /// Operations pushed to the submission queue whose completion is not reaped.
    in_kernel: usize,
    /// At most this many operations are given to the kernel at once (the completion queue's
    /// size), so completions never overflow.
    kernel_limit: usize,
    /// Wakers collected while reaping, woken once the ring is no longer borrowed.
    to_wake: Vec<Waker>,
}

/// One core's io_uring: submissions queue up, [`poll`](Uring::poll) submits them and reaps
/// completions without blocking. `!Send`: used from the one thread that owns it (share it
/// between that thread's tasks with `Rc`).
///
/// The `fd` handed to an operation must stay open until its completion is reaped: its
/// future resolved, or, for a future dropped early, until [`in_flight`](Uring::in_flight)
/// no longer counts it (an operation the kernel never saw is cancelled on drop). [`UringFs`]
/// keeps its files open that way by itself. Dropping the ring cancels what the kernel can
/// cancel and waits for the rest.
pub struct Uring {
    inner: RefCell<Ring>,
    _not_send: PhantomData<Rc<()>>,
}

/// `user_data` of the cancel request `Drop for Uring` sends (no slot has this index).
const CANCEL_TAG: u64 = u64::MAX;

fn cvt(res: i32) -> io::Result<u32> {
    if res < 0 {
        Err(io::Error::from_raw_os_error(-res))
    } else {
        Ok(res as u32)
    }
}

fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINTR) | Some(libc::EAGAIN) | Some(libc::EBUSY)
    )
}

impl Ring {
    fn insert(&mut self, slot: Slot) -> usize {
        match self.free.pop() {
            Some(i) => {
                self.slots[i] = Some(slot);
                i
            }
            None => {
                self.slots.push(Some(slot));
                self.slots.len() - 1
            }
        }
    }

    fn release(&mut self, idx: usize) -> Slot {
        let slot = self.slots[idx]
            .take()
            .expect("a slot is released once, by its owner");
        self.free.push(idx);
        slot
    }

    fn slot(&mut self, idx: usize) -> &mut Slot {
        self.slots[idx]
            .as_mut()
            .expect("an operation's slot lives until the operation finished")
    }

    /// The future of `idx` is gone: cancel it if the kernel never saw it, else let the
    /// completion free it. Returns what to drop once the ring is no longer borrowed.
    fn abandon(&mut self, idx: usize) -> Option<Slot> {
        let slot = self.slot(idx);
        match slot.phase {
            Phase::Queued(_) => {
                if let Some(at) = self.queued.iter().position(|&q| q == idx) {
                    self.queued.remove(at);
                }
                Some(self.release(idx))
            }
            Phase::InKernel => {
                slot.abandoned = true;
                slot.waker.take();
                None
            }
            Phase::Done(_) => Some(self.release(idx)),
        }
    }

    /// Moves queued operations into the submission queue while it and the kernel budget
    /// have room; the rest stay queued for a later call.
    fn push_queued(&mut self) {
        let Ring {
            ring,
            slots,
            queued,
            in_kernel,
            kernel_limit,
            ..
        } = self;
        let mut sq = ring.submission();
        while *in_kernel < *kernel_limit && !sq.is_full() {
            let Some(idx) = queued.pop_front() else { break };
            let slot = slots[idx].as_mut().expect("a queued operation has a slot");
            let Phase::Queued(entry) = std::mem::replace(&mut slot.phase, Phase::InKernel) else {
                unreachable!("only queued operations are in the queue")
            };
            let entry = entry.user_data(idx as u64);
            // SAFETY: the entry names at most a buffer and an fd. The buffer is the heap
            // allocation of the Vec in `slots[idx].buf`, which stays there (moving a Vec
            // does not move its heap data) until this entry's completion is reaped; the slot
            // is not released before that even if the future is dropped, and `Drop for
            // Uring` waits for every in-kernel operation. The fd is kept open by the caller
            // while the future lives (or by `slot.file`), and the kernel takes its own
            // reference to the file when it consumes the entry.
            match unsafe { sq.push(&entry) } {
                Ok(()) => *in_kernel += 1,
                Err(_) => {
                    slot.phase = Phase::Queued(entry);
                    queued.push_front(idx);
                    break;
                }
            }
        }
    }

    /// Tells the kernel about new entries (and waits for `want` completions) with one
    /// `io_uring_enter`, only when there is something to tell or wait for.
    fn enter(&mut self, want: usize) {
        let needed = {
            let sq = self.ring.submission();
            !sq.is_empty() || sq.cq_overflow() || sq.taskrun()
        };
        if !needed && want == 0 {
            return;
        }
        loop {
            match self.ring.submit_and_wait(want) {
                Ok(_) => return,
                // Interrupted while waiting: wait again. Short of resources or completions
                // backed up: reap what is there and submit on a later call.
                Err(e) if e.raw_os_error() == Some(libc::EINTR) && want > 0 => continue,
                Err(e) if is_transient(&e) => return,
                Err(e) => {
                    tracing::error!("io_uring_enter failed: {e}");
                    return;
                }
            }
        }
    }

    /// Reaps every ready completion; collects the wakers to call in `to_wake`.
    fn reap(&mut self) -> usize {
        let Ring {
            ring,
            slots,
            free,
            in_kernel,
            to_wake,
            ..
        } = self;
        let mut n = 0;
        for cqe in ring.completion() {
            if cqe.user_data() == CANCEL_TAG {
                continue;
            }
            n += 1;
            let idx = cqe.user_data() as usize;
            let Some(slot) = slots.get_mut(idx).and_then(Option::as_mut) else {
                tracing::error!(user_data = idx, "completion for no operation");
                continue;
            };
            debug_assert!(matches!(slot.phase, Phase::InKernel));
            *in_kernel -= 1;
            if slot.abandoned {
                // The kernel is done with the buffer and the file: free them now.
                slots[idx] = None;
                free.push(idx);
            } else {
                slot.phase = Phase::Done(cqe.result());
                if let Some(w) = slot.waker.take() {
                    to_wake.push(w);
                }
            }
        }
        n
    }
}

impl Uring {
    /// A ring with a submission queue of `entries` (rounded up to a power of two by the
    /// kernel). More operations than that may be outstanding: the rest wait in userspace.
    pub fn new(entries: u32) -> io::Result<Uring> {
        let ring = IoUring::new(entries)?;
        let kernel_limit = ring.params().cq_entries() as usize;
        Ok(Uring {
            inner: RefCell::new(Ring {
                ring,
                slots: Vec::new(),
                free: Vec::new(),
                queued: VecDeque::new(),
                in_kernel: 0,
                kernel_limit,
                to_wake: Vec::new(),
            }),
            _not_send: PhantomData,
        })
    }

    /// Submits queued operations (one `io_uring_enter` when there are any) and reaps every
    /// ready completion, waking the futures waiting on them. Never blocks. Returns how many
    /// completions were reaped.
    pub fn poll(&self) -> usize {
        self.drive(false)
    }

    /// Operations submitted or queued whose completion has not been reaped yet.
    pub fn in_flight(&self) -> usize {
        let r = self.inner.borrow();
        r.queued.len() + r.in_kernel
    }

    /// Blocks the thread until at least one in-flight operation completes, then reaps like
    /// [`poll`](Uring::poll). Returns at once (0) when nothing is in flight. For tools and
    /// tests; a core never calls this.
    pub fn wait(&self) -> usize {
        if self.in_flight() == 0 {
            return 0;
        }
        self.drive(true)
    }

    fn drive(&self, wait: bool) -> usize {
        let (n, mut to_wake) = {
            let mut r = self.inner.borrow_mut();
            r.push_queued();
            let want = usize::from(wait && r.in_kernel > 0);
            r.enter(want);
            // Operations still queued go in on a later call, as completions free room.
            let n = r.reap();
            (n, std::mem::take(&mut r.to_wake))
        };
        for w in to_wake.drain(..) {
            w.wake();
        }
        // Keep the allocation for the next call.
        let mut r = self.inner.borrow_mut();
        if r.to_wake.is_empty() {
            r.to_wake = to_wake;
        }
        n
    }

    /// Runs `fut` to completion on this thread, polling the ring and blocking in
    /// [`wait`](Uring::wait) (or parking, when nothing is in flight) while it is pending.
    /// For tools and tests.
    pub fn block_on<F: Future>(&self, fut: F) -> F::Output {
        let mut fut = std::pin::pin!(fut);
        let signal = Arc::new(Signal {
            woken: AtomicBool::new(false),
            thread: std::thread::current(),
        });
        let waker = Waker::from(signal.clone());
        let mut cx = Context::from_waker(&waker);
        loop {
            signal.woken.store(false, Ordering::Release);
            if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
                return v;
            }
            self.poll();
            if signal.woken.load(Ordering::Acquire) {
                continue;
            }
            if self.in_flight() > 0 {
                self.wait();
            } else {
                std::thread::park();
            }
        }
    }

    /// Queues one operation; its future resolves with the raw result and the buffer.
    fn submit(&self, entry: squeue::Entry, buf: Option<Vec<u8>>, file: Option<Rc<File>>) -> Op<'_> {
        let mut r = self.inner.borrow_mut();
        let idx = r.insert(Slot {
            phase: Phase::Queued(entry),
            waker: None,
            abandoned: false,
            buf,
            _file: file,
        });
        r.queued.push_back(idx);
        Op {
            uring: self,
            idx,
            finished: false,
        }
    }

    /// Writes `buf` at `pos` of `fd`; resolves with the count written (possibly short) and
    /// the buffer back. The buffer belongs to the operation until the kernel completed it.
    pub async fn write_at(
        &self,
        fd: RawFd,
        buf: Vec<u8>,
        pos: u64,
    ) -> (io::Result<usize>, Vec<u8>) {
        self.write_at_keeping(fd, buf, pos, None).await
    }

    async fn write_at_keeping(
        &self,
        fd: RawFd,
        buf: Vec<u8>,
        pos: u64,
        file: Option<Rc<File>>,
    ) -> (io::Result<usize>, Vec<u8>) {
        // A longer buffer is written in part (a short write the caller continues).
        let len = buf.len().min(u32::MAX as usize) as u32;
        let entry = opcode::Write::new(types::Fd(fd), buf.as_ptr(), len)
            .offset(pos)
            .build();
        let (res, buf) = self.submit(entry, Some(buf), file).await;
        let buf = buf.expect("a write's buffer comes back with its completion");
        (cvt(res).map(|n| n as usize), buf)
    }

    /// fdatasync of `fd`: on success the data written before is durable.
    pub async fn fdatasync(&self, fd: RawFd) -> io::Result<()> {
        self.fsync_keeping(fd, types::FsyncFlags::DATASYNC, None)
            .await
    }

    /// fsync of `fd` (data and metadata, e.g. a file's size or a directory's entries).
    pub async fn fsync(&self, fd: RawFd) -> io::Result<()> {
        self.fsync_keeping(fd, types::FsyncFlags::empty(), None)
            .await
    }

    async fn fsync_keeping(
        &self,
        fd: RawFd,
        flags: types::FsyncFlags,
        file: Option<Rc<File>>,
    ) -> io::Result<()> {
        let entry = opcode::Fsync::new(types::Fd(fd)).flags(flags).build();
        cvt(self.submit(entry, None, file).await.0).map(drop)
    }

    /// Sends `buf` on socket `fd`; resolves with the count sent (possibly short) and the
    /// buffer back. The buffer belongs to the operation until the kernel completed it.
    pub async fn send(&self, fd: RawFd, buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        let len = buf.len().min(u32::MAX as usize) as u32;
        let entry = opcode::Send::new(types::Fd(fd), buf.as_ptr(), len).build();
        let (res, buf) = self.submit(entry, Some(buf), None).await;
        let buf = buf.expect("a send's buffer comes back with its completion");
        (cvt(res).map(|n| n as usize), buf)
    }

    /// Receives into `buf` (up to its length) from socket `fd`; resolves with the count
    /// received (0: the peer closed) and the buffer back. The kernel writes into the buffer,
    /// which the slot owns until the completion is reaped.
    pub async fn recv(&self, fd: RawFd, mut buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        let len = buf.len().min(u32::MAX as usize) as u32;
        let entry = opcode::Recv::new(types::Fd(fd), buf.as_mut_ptr(), len).build();
        let (res, buf) = self.submit(entry, Some(buf), None).await;
        let buf = buf.expect("a recv's buffer comes back with its completion");
        (cvt(res).map(|n| n as usize), buf)
    }

    /// Reads into `buf` (up to its length) from `file` at `pos`; resolves with the count
    /// read (0: end of file) and the buffer back. The operation keeps `file` open and owns
    /// the buffer until its completion is reaped, so dropping the future early is safe.
    pub async fn read_file_at(
        &self,
        file: Rc<File>,
        mut buf: Vec<u8>,
        pos: u64,
    ) -> (io::Result<usize>, Vec<u8>) {
        let len = buf.len().min(u32::MAX as usize) as u32;
        let entry = opcode::Read::new(types::Fd(file.as_raw_fd()), buf.as_mut_ptr(), len)
            .offset(pos)
            .build();
        let (res, buf) = self.submit(entry, Some(buf), Some(file)).await;
        let buf = buf.expect("a read's buffer comes back with its completion");
        (cvt(res).map(|n| n as usize), buf)
    }

    /// Like [`write_at`](Uring::write_at), keeping `file` open until the completion is
    /// reaped (dropping the future early is safe).
    pub async fn write_file_at(
        &self,
        file: Rc<File>,
        buf: Vec<u8>,
        pos: u64,
    ) -> (io::Result<usize>, Vec<u8>) {
        let fd = file.as_raw_fd();
        self.write_at_keeping(fd, buf, pos, Some(file)).await
    }

    /// fdatasync (`data_only`) or fsync of `file`, keeping it open until the completion
    /// is reaped.
    pub async fn sync_file(&self, file: Rc<File>, data_only: bool) -> io::Result<()> {
        let flags = if data_only {
            types::FsyncFlags::DATASYNC
        } else {
            types::FsyncFlags::empty()
        };
        let fd = file.as_raw_fd();
        self.fsync_keeping(fd, flags, Some(file)).await
    }

    /// Makes the kernel signal `eventfd` whenever it posts a completion to this ring
    /// (`IORING_REGISTER_EVENTFD`), so a thread that sleeps elsewhere can learn of it.
    pub fn register_eventfd(&self, eventfd: RawFd) -> io::Result<()> {
        self.inner
            .borrow()
            .ring
            .submitter()
            .register_eventfd(eventfd)
    }

    /// Whether [`poll`](Uring::poll) has something to do right now: operations queued
    /// for submission, or completions posted and not reaped. Never blocks.
    pub fn has_ready(&self) -> bool {
        let mut r = self.inner.borrow_mut();
        !r.queued.is_empty() || !r.ring.completion().is_empty()
    }

    /// Preallocates bytes `0..len` of `fd` (fallocate mode 0: the file grows to `len`).
    pub async fn fallocate(&self, fd: RawFd, len: u64) -> io::Result<()> {
        self.fallocate_keeping(fd, len, None).await
    }

    async fn fallocate_keeping(
        &self,
        fd: RawFd,
        len: u64,
        file: Option<Rc<File>>,
    ) -> io::Result<()> {
        let entry = opcode::Fallocate::new(types::Fd(fd), len).build();
        cvt(self.submit(entry, None, file).await.0).map(drop)
    }
}

impl fmt::Debug for Uring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = self.inner.borrow();
        f.debug_struct("Uring")
            .field("queued", &r.queued.len())
            .field("in_kernel", &r.in_kernel)
            .field("kernel_limit", &r.kernel_limit)
            .finish()
    }
}

impl Drop for Uring {
    fn drop(&mut self) {
        let r = self.inner.get_mut();
        while let Some(idx) = r.queued.pop_front() {
            r.slots[idx] = None;
        }
        if r.in_kernel == 0 {
            return;
        }
        // Cancel what can be cancelled (e.g. a write waiting on a full pipe); file IO
        // already running finishes. Kernels before 5.19 refuse "any": then wait it out.
        let cancel = opcode::AsyncCancel2::new(types::CancelBuilder::any())
            .build()
            .user_data(CANCEL_TAG);
        // SAFETY: a cancel request names no buffer and no fd.
        if unsafe { r.ring.submission().push(&cancel) }.is_err() {
            let _ = r.ring.submit();
            // SAFETY: as above.
            let _ = unsafe { r.ring.submission().push(&cancel) };
        }
        // The kernel may still read buffers in the slot table: wait until it is done.
        while r.in_kernel > 0 {
            match r.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if is_transient(&e) => {}
                Err(e) => {
                    tracing::error!(
                        in_kernel = r.in_kernel,
                        "io_uring_enter failed while draining ({e}); leaking the buffers in flight"
                    );
                    std::mem::forget(std::mem::take(&mut r.slots));
                    return;
                }
            }
            r.reap();
            r.to_wake.clear();
        }
    }
}

/// An operation's future: resolves once [`Uring::poll`] reaped its completion.
struct Op<'a> {
    uring: &'a Uring,
    idx: usize,
    finished: bool,
}

impl Future for Op<'_> {
    type Output = (i32, Option<Vec<u8>>);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let uring = self.uring;
        let mut r = uring.inner.borrow_mut();
        let slot = r.slot(self.idx);
        if let Phase::Done(res) = slot.phase {
            let slot = r.release(self.idx);
            drop(r);
            self.finished = true;
            return Poll::Ready((res, slot.buf));
        }
        match &slot.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => slot.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

impl Drop for Op<'_> {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let gone = self.uring.inner.borrow_mut().abandon(self.idx);
        drop(gone);
    }
}

/// Wakes [`Uring::block_on`]'s thread.
struct Signal {
    woken: AtomicBool,
    thread: std::thread::Thread,
}

impl Wake for Signal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.thread.unpark();
    }
}

/// Segment files whose IO goes through a core's own [`Uring`] (buffered IO, no O_DIRECT):
/// for a shard loop that polls the ring itself and never yields to an executor.
#[derive(Clone, Debug)]
pub struct UringFs {
    uring: Rc<Uring>,
}

impl UringFs {
    /// Segment files on `uring`.
    pub fn new(uring: Rc<Uring>) -> Self {
        UringFs { uring }
    }

    /// The ring the files' IO goes through (poll it to make progress).
    pub fn uring(&self) -> &Rc<Uring> {
        &self.uring
    }
}

/// A segment file opened by [`UringFs`]. Every operation keeps the file open until its
/// completion is reaped, so closing (or dropping) it with IO in flight is safe.
#[derive(Debug)]
pub struct UringSegment {
    uring: Rc<Uring>,
    file: Rc<File>,
    /// The last write's buffer, reused by the next one.
    spare: RefCell<Option<Vec<u8>>>,
}

impl LogFs for UringFs {
    type File = UringSegment;

    async fn create_segment(&self, path: &Path, capacity: u64) -> io::Result<UringSegment> {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)?;
        let file = Rc::new(file);
        let fd = file.as_raw_fd();
        match self
            .uring
            .fallocate_keeping(fd, capacity, Some(file.clone()))
            .await
        {
            Ok(()) => {}
            // A file system without fallocate: a sparse file of the same size.
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => file.set_len(capacity)?,
            Err(e) => return Err(e),
        }
        // The size must be durable so that later fdatasyncs carry data only.
        self.uring
            .fsync_keeping(fd, types::FsyncFlags::empty(), Some(file.clone()))
            .await?;
        if let Some(parent) = path.parent() {
            let parent = if parent.as_os_str().is_empty() {
                Path::new(".")
            } else {
                parent
            };
            let dir = Rc::new(File::open(parent)?);
            self.uring
                .fsync_keeping(
                    dir.as_raw_fd(),
                    types::FsyncFlags::empty(),
                    Some(dir.clone()),
                )
                .await?;
        }
        Ok(UringSegment {
            uring: self.uring.clone(),
            file,
            spare: RefCell::new(None),
        })
    }
}

impl LogFile for UringSegment {
    async fn write_at(&self, data: &[u8], pos: u64) -> io::Result<usize> {
        let mut buf = self.spare.borrow_mut().take().unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(data);
        let mut written = 0usize;
        let result = loop {
            if written == data.len() {
                break Ok(data.len());
            }
            let (res, back) = self
                .uring
                .write_at_keeping(
                    self.file.as_raw_fd(),
                    buf,
                    pos + written as u64,
                    Some(self.file.clone()),
                )
                .await;
            buf = back;
            match res {
                Ok(0) => {
                    break Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "io_uring write wrote nothing",
                    ))
                }
                Ok(n) => {
                    written += n;
                    if written < data.len() {
                        buf.clear();
                        buf.extend_from_slice(&data[written..]);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        *self.spare.borrow_mut() = Some(buf);
        result
    }

    async fn sync_data(&self) -> io::Result<()> {
        self.uring
            .fsync_keeping(
                self.file.as_raw_fd(),
                types::FsyncFlags::DATASYNC,
                Some(self.file.clone()),
            )
            .await
    }

    async fn close(self) -> io::Result<()> {
        // The fd closes once the last operation holding it is reaped.
        drop(self);
        Ok(())
    }
}
