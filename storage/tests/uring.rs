//! The polled io_uring backend: the log writer on `UringFs` driven only by `Uring::block_on`
//! or by a hand-written loop of `poll()` plus polling futures (as the shard loop does), more
//! operations than the ring has entries, futures dropped with IO in flight, errors, and
//! `poll()` returning while an operation is still pending.

mod common;
use common::*;
use rill_storage::*;
use std::future::Future;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixStream;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

fn payload(i: usize) -> Vec<u8> {
    // Crosses flush chunks (8 KiB), segments (64 KiB) and one larger than a segment.
    let len = [10, 5000, 20_000, 100_000, 1, 9000, 40_000][i % 7];
    (0..len).map(|j| (i * 31 + j * 7) as u8).collect()
}

struct Flag(AtomicBool);

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::SeqCst);
    }
}

type Boxed<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

/// The shard loop in miniature: polls every pending future, then the ring, and never
/// blocks. Panics if nothing is in flight and nothing was woken while futures still wait.
fn drive<T>(ring: &Uring, mut futs: Vec<Boxed<'_, T>>) -> Vec<T> {
    let flag = Arc::new(Flag(AtomicBool::new(true)));
    let waker = Waker::from(flag.clone());
    let mut cx = Context::from_waker(&waker);
    let mut out: Vec<Option<T>> = futs.iter().map(|_| None).collect();
    while out.iter().any(Option::is_none) {
        let woken = flag.0.swap(false, Ordering::SeqCst);
        for (f, o) in futs.iter_mut().zip(out.iter_mut()) {
            if o.is_none() {
                if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
                    *o = Some(v);
                }
            }
        }
        ring.poll();
        let pending = out.iter().any(Option::is_none);
        assert!(
            !pending || woken || ring.in_flight() > 0 || flag.0.load(Ordering::SeqCst),
            "stalled: futures pending, nothing in flight, nothing woken"
        );
    }
    out.into_iter().map(Option::unwrap).collect()
}

fn rw_file(path: &std::path::Path) -> std::fs::File {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)
        .unwrap()
}

fn uring_writer(root: &std::path::Path, ring: &Rc<Uring>) -> LogWriter<UringFs> {
    LogWriter::open_with(UringFs::new(ring.clone()), root, CoreId(0), small_cfg()).unwrap()
}

/// Publishes `refs` as checkpoint 1, recovers, and checks every record byte for byte.
fn check_read_back(root: &std::path::Path, refs: &[(usize, RecordRef)]) {
    let records: Vec<RecordRef> = refs.iter().map(|(_, r)| *r).collect();
    let store = CheckpointStore::new(root);
    store
        .publish(&Manifest::new(CheckpointId(1), records, b"m".to_vec()))
        .unwrap();
    let rec = recover(root).unwrap();
    let cp = rec.checkpoint.expect("checkpoint 1 is complete");
    assert_eq!(cp.id(), CheckpointId(1));
    let reader = LogReader::new(root);
    for (i, r) in refs {
        assert_eq!(
            reader.read(r).unwrap().payload(),
            &payload(*i)[..],
            "record {i}"
        );
        let blobs = cp.blobs(&owner(*i as u32));
        assert!(
            blobs.iter().any(|b| b.payload() == &payload(*i)[..]),
            "record {i} in the recovered checkpoint"
        );
    }
}

#[test]
fn writer_on_uring_rolls_splits_and_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let ring = Rc::new(Uring::new(8).unwrap());
    let log = uring_writer(dir.path(), &ring);
    let refs = ring.block_on(async {
        let mut refs = Vec::new();
        for i in 0..21 {
            let spec = RecordSpec::blob(CheckpointId(1), owner(i as u32));
            let r = log.append(spec, &payload(i)).await.unwrap();
            assert!(log.durable_lsn() >= r.lsn.advance(r.len));
            refs.push((i, r));
        }
        refs
    });
    let stats = log.stats();
    assert_eq!(stats.records, 21);
    assert!(stats.segments >= 4, "rolled: {stats:?}");
    ring.block_on(log.close()).unwrap();
    assert_eq!(ring.in_flight(), 0);
    let segments = layout::list_segments(dir.path(), CoreId(0)).unwrap();
    assert_eq!(segments.len() as u64, stats.segments);
    check_read_back(dir.path(), &refs);
}

#[test]
fn concurrent_appends_polled_by_hand_share_flushes() {
    let dir = tempfile::tempdir().unwrap();
    let ring = Rc::new(Uring::new(4).unwrap());
    let log = uring_writer(dir.path(), &ring);
    let futs: Vec<Boxed<'_, (usize, RecordRef)>> = (0..30)
        .map(|i| {
            let log = &log;
            Box::pin(async move {
                let spec = RecordSpec::blob(CheckpointId(1), owner(i as u32));
                let r = log.append(spec, &payload(i)).await.unwrap();
                assert!(log.durable_lsn() >= r.lsn.advance(r.len));
                (i, r)
            }) as Boxed<'_, _>
        })
        .collect();
    let refs = drive(&ring, futs);
    let stats = log.stats();
    assert_eq!(stats.records, 30);
    assert!(
        stats.flushes < stats.records,
        "concurrent appends share flushes: {stats:?}"
    );
    drive(
        &ring,
        vec![Box::pin(log.close()) as Boxed<'_, rill_storage::Result<()>>],
    )
    .pop()
    .unwrap()
    .unwrap();
    check_read_back(dir.path(), &refs);
}

#[test]
fn more_operations_than_entries_all_complete() {
    let dir = tempfile::tempdir().unwrap();
    let file = rw_file(&dir.path().join("f"));
    let fd = file.as_raw_fd();
    let ring = Uring::new(4).unwrap();
    let block = |i: usize| vec![i as u8 ^ 0x5A; 4096];
    type WriteOut = (std::io::Result<usize>, Vec<u8>);
    let mut futs: Vec<Boxed<'_, WriteOut>> = (0..64)
        .map(|i| Box::pin(ring.write_at(fd, block(i), i as u64 * 4096)) as Boxed<'_, _>)
        .collect();
    // First poll of each queues its operation; none has reached the kernel yet.
    let flag = Arc::new(Flag(AtomicBool::new(false)));
    let waker = Waker::from(flag);
    let mut cx = Context::from_waker(&waker);
    for f in &mut futs {
        assert!(f.as_mut().poll(&mut cx).is_pending());
    }
    assert_eq!(ring.in_flight(), 64);
    let results = drive(&ring, futs);
    assert_eq!(ring.in_flight(), 0);
    for (i, (res, buf)) in results.into_iter().enumerate() {
        assert_eq!(res.unwrap(), 4096, "write {i}");
        assert_eq!(buf, block(i), "write {i} hands its buffer back");
    }
    let mut back = vec![0u8; 64 * 4096];
    file.read_exact_at(&mut back, 0).unwrap();
    for (i, chunk) in back.chunks(4096).enumerate() {
        assert_eq!(chunk, &block(i)[..], "block {i} on disk");
    }
}

/// A connected socket pair whose sending side is full: a write to it stays in flight until
/// the other side reads. Returns (sender, receiver, bytes already queued).
fn full_socket() -> (UnixStream, UnixStream, usize) {
    let (tx, rx) = UnixStream::pair().unwrap();
    tx.set_nonblocking(true).unwrap();
    let chunk = vec![0u8; 4096];
    let mut queued = 0;
    loop {
        match (&tx).write(&chunk) {
            Ok(n) => queued += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("filling the socket: {e}"),
        }
    }
    // The ring's write must wait for room, not fail with EAGAIN.
    tx.set_nonblocking(false).unwrap();
    (tx, rx, queued)
}

/// Reads from `rx` without blocking; appends to `got`; returns whether it read anything.
fn drain(rx: &UnixStream, got: &mut Vec<u8>) -> bool {
    rx.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 65536];
    let mut any = false;
    loop {
        match (&*rx).read(&mut buf) {
            Ok(0) => return any,
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                any = true;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return any,
            Err(e) => panic!("reading the socket: {e}"),
        }
    }
}

fn pattern() -> Vec<u8> {
    (0..4096).map(|j| (j * 13 + 7) as u8).collect()
}

#[test]
fn poll_returns_while_an_operation_is_pending() {
    let (tx, rx, queued) = full_socket();
    let ring = Uring::new(4).unwrap();
    let mut fut = Box::pin(ring.write_at(tx.as_raw_fd(), pattern(), 0));
    let flag = Arc::new(Flag(AtomicBool::new(false)));
    let waker = Waker::from(flag.clone());
    let mut cx = Context::from_waker(&waker);
    assert!(fut.as_mut().poll(&mut cx).is_pending());
    // The socket stays full: every poll comes back with nothing reaped.
    for _ in 0..1000 {
        assert_eq!(ring.poll(), 0);
        assert_eq!(ring.in_flight(), 1);
        assert!(fut.as_mut().poll(&mut cx).is_pending());
    }
    assert!(
        !flag.0.load(Ordering::SeqCst),
        "not woken before completing"
    );
    // Make room; keep polling until the write completes.
    let mut got = Vec::new();
    let (res, buf) = loop {
        drain(&rx, &mut got);
        ring.poll();
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            break v;
        }
    };
    assert!(flag.0.load(Ordering::SeqCst), "woken by poll()");
    assert_eq!(ring.in_flight(), 0);
    let n = res.unwrap();
    assert!(n > 0 && n <= 4096);
    assert_eq!(buf, pattern());
    drain(&rx, &mut got);
    assert_eq!(got.len(), queued + n);
    assert_eq!(&got[queued..], &pattern()[..n]);
}

#[test]
fn a_dropped_write_keeps_its_buffer_until_the_kernel_is_done() {
    let (tx, rx, queued) = full_socket();
    let ring = Uring::new(4).unwrap();
    let flag = Arc::new(Flag(AtomicBool::new(false)));
    let waker = Waker::from(flag);
    let mut cx = Context::from_waker(&waker);
    {
        let mut fut = Box::pin(ring.write_at(tx.as_raw_fd(), pattern(), 0));
        assert!(fut.as_mut().poll(&mut cx).is_pending());
        ring.poll();
        assert_eq!(ring.in_flight(), 1, "the kernel has the write");
    }
    // Were the buffer freed on drop, these allocations would likely reuse it.
    let clobber: Vec<Vec<u8>> = (0..16).map(|_| vec![0xEE; 4096]).collect();
    assert_eq!(
        ring.in_flight(),
        1,
        "dropping the future does not cancel it"
    );
    let mut got = Vec::new();
    while ring.in_flight() > 0 {
        drain(&rx, &mut got);
        ring.poll();
    }
    drain(&rx, &mut got);
    let n = got.len() - queued;
    assert!(n > 0 && n <= 4096, "wrote {n}");
    assert_eq!(
        &got[queued..],
        &pattern()[..n],
        "the kernel read the live buffer"
    );
    drop(clobber);
    // The ring is still usable.
    let (res, _) = ring.block_on(ring.write_at(tx.as_raw_fd(), b"after".to_vec(), 0));
    assert_eq!(res.unwrap(), 5);
    let mut after = [0u8; 5];
    rx.set_nonblocking(false).unwrap();
    (&rx).read_exact(&mut after).unwrap();
    assert_eq!(&after, b"after");
}

#[test]
fn a_write_dropped_before_submission_never_happens() {
    let dir = tempfile::tempdir().unwrap();
    let file = rw_file(&dir.path().join("f"));
    let ring = Uring::new(4).unwrap();
    let flag = Arc::new(Flag(AtomicBool::new(false)));
    let waker = Waker::from(flag);
    let mut cx = Context::from_waker(&waker);
    {
        let mut fut = Box::pin(ring.write_at(file.as_raw_fd(), vec![1; 4096], 0));
        assert!(fut.as_mut().poll(&mut cx).is_pending());
        assert_eq!(ring.in_flight(), 1);
    }
    assert_eq!(ring.in_flight(), 0, "cancelled before the kernel saw it");
    assert_eq!(ring.poll(), 0);
    assert_eq!(file.metadata().unwrap().len(), 0, "nothing was written");
    let (res, _) = ring.block_on(ring.write_at(file.as_raw_fd(), vec![2; 4096], 4096));
    assert_eq!(res.unwrap(), 4096);
    assert_eq!(file.metadata().unwrap().len(), 8192);
}

#[test]
fn a_large_file_write_dropped_in_flight_still_lands() {
    let dir = tempfile::tempdir().unwrap();
    let file = rw_file(&dir.path().join("f"));
    let ring = Uring::new(4).unwrap();
    let big: Vec<u8> = (0..8 << 20).map(|j: usize| (j % 251) as u8).collect();
    let flag = Arc::new(Flag(AtomicBool::new(false)));
    let waker = Waker::from(flag);
    let mut cx = Context::from_waker(&waker);
    {
        let mut fut = Box::pin(ring.write_at(file.as_raw_fd(), big.clone(), 0));
        assert!(fut.as_mut().poll(&mut cx).is_pending());
        ring.poll();
    }
    let _clobber = vec![0xEEu8; 8 << 20];
    while ring.in_flight() > 0 {
        ring.wait();
    }
    let mut back = vec![0u8; big.len()];
    let n = file.read_at(&mut back, 0).unwrap();
    assert!(n > 0);
    assert_eq!(&back[..n], &big[..n], "the kernel read the live buffer");
    assert!(ring.block_on(ring.fdatasync(file.as_raw_fd())).is_ok());
}

#[test]
fn dropping_the_ring_cancels_what_cannot_finish() {
    let (tx, _rx, _) = full_socket();
    let ring = Uring::new(4).unwrap();
    let flag = Arc::new(Flag(AtomicBool::new(false)));
    let waker = Waker::from(flag);
    let mut cx = Context::from_waker(&waker);
    {
        let mut fut = Box::pin(ring.write_at(tx.as_raw_fd(), pattern(), 0));
        assert!(fut.as_mut().poll(&mut cx).is_pending());
        ring.poll();
    }
    assert_eq!(ring.in_flight(), 1);
    // Would hang (the socket never drains) if drop only waited.
    drop(ring);
}

#[test]
fn errors_surface() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ro");
    std::fs::write(&path, b"x").unwrap();
    let ro = std::fs::File::open(&path).unwrap();
    let ring = Rc::new(Uring::new(4).unwrap());
    let (res, buf) = ring.block_on(ring.write_at(ro.as_raw_fd(), vec![1; 4096], 0));
    assert_eq!(res.unwrap_err().raw_os_error(), Some(libc::EBADF));
    assert_eq!(buf, vec![1; 4096], "the buffer comes back on failure too");
    let err = ring
        .block_on(ring.fallocate(ro.as_raw_fd(), 4096))
        .unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EBADF));
    let err = ring.block_on(ring.fsync(-1)).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EBADF));
    let err = ring.block_on(ring.fdatasync(-1)).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EBADF));
    // A segment that exists already is refused, as by the other backends.
    let fs = UringFs::new(ring.clone());
    let err = ring
        .block_on(fs.create_segment(&path, 64 << 10))
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::AlreadyExists);
    assert_eq!(ring.in_flight(), 0);
}

#[test]
fn a_uring_segment_is_preallocated_and_writes_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("seg");
    let ring = Rc::new(Uring::new(2).unwrap());
    let fs = UringFs::new(ring.clone());
    assert!(Rc::ptr_eq(fs.uring(), &ring));
    let data: Vec<u8> = (0..3 * 4096).map(|j: usize| (j % 253) as u8).collect();
    ring.block_on(async {
        let seg = fs.create_segment(&path, 64 << 10).await.unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 64 << 10);
        assert_eq!(seg.write_at(&data, 8192).await.unwrap(), data.len());
        seg.sync_data().await.unwrap();
        seg.close().await.unwrap();
    });
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(bytes.len(), 64 << 10);
    assert!(bytes[..8192].iter().all(|b| *b == 0));
    assert_eq!(&bytes[8192..8192 + data.len()], &data[..]);
}

/// Records staged one by one (as the engine stages a checkpoint's archives in slices
/// between rounds of a core's loop) are written and synced by one flush when waited
/// for together, and read back byte for byte; nothing is written before the wait.
#[test]
fn staged_records_are_written_by_one_flush_when_waited_for() {
    let dir = tempfile::tempdir().unwrap();
    let ring = Rc::new(Uring::new(8).unwrap());
    let log = uring_writer(dir.path(), &ring);
    let before = log.durable_lsn();
    let mut refs = Vec::new();
    let mut end = before;
    // Records that fit one segment of `small_cfg`, so that a single flush can take them.
    for i in [0usize, 1, 4, 5, 7, 8, 11] {
        let spec = RecordSpec::blob(CheckpointId(1), owner(i as u32));
        let (r, e) = log.stage_record(spec, &payload(i)).unwrap();
        assert!(e > end, "each staged record ends later");
        end = e;
        refs.push((i, r));
    }
    assert_eq!(log.durable_lsn(), before, "staging writes nothing");
    assert_eq!(log.stats().flushes, 0);
    ring.block_on(log.wait_durable(end)).unwrap();
    assert!(log.durable_lsn() >= end);
    let stats = log.stats();
    assert_eq!(stats.records, 7);
    assert_eq!(
        stats.flushes, 1,
        "one write and one fdatasync for them all: {stats:?}"
    );
    ring.block_on(log.close()).unwrap();
    check_read_back(dir.path(), &refs);
}
