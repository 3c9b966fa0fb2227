//! Waiting without blocking: what a source or sink partition needs to do IO on its core.
//!
//! Owns: [`IoCx`] (what a partition gets on every call: the time, a `Waker` that wakes
//! its core, the core's connector io_uring), the per-partition wake flag behind that
//! waker, the core's connector ring ([`CoreIo`]) with the port that reaps it every round
//! of the shard loop, and the one process-wide thread that turns the ring's completion
//! eventfd into a doorbell ring while the core is parked.
//!
//! Must not: block, spin, or run partition code; the shard loop decides when partitions
//! are polled.
//!
//! How a parked core learns of a completion: the connector ring has an eventfd registered
//! (`IORING_REGISTER_EVENTFD`); the kernel signals it when it posts a completion. One
//! unpinned thread per process sleeps in `epoll_wait` on every core's eventfd and rings
//! that core's doorbell (the same `Doorbell::notify` a ring producer calls). The core
//! reaps the completion itself on its next round and the operation's future wakes the
//! partition. No wake-up is lost: the core arms its doorbell, then re-checks the ring
//! (`can_progress`, after a SeqCst fence); the kernel posts the completion before it
//! signals the eventfd, and the thread's `notify` fences before it reads `armed`. So
//! either the re-check sees the completion or the thread sees the armed doorbell. A
//! partition woken by another thread (its waker called from anywhere) follows the same
//! protocol through its wake flag.
//!
//! Why not glommio's file and net APIs: the shard is one hand-polled task that never
//! yields to glommio and parks on a futex (see `runtime/park.rs`), so glommio's reactor
//! would not make progress; the core's own polled ring (`rill_storage::Uring`, the same
//! code the checkpoint log and the Redis client use) does.
#![allow(unsafe_code)]

use std::cell::{Cell, OnceCell};
use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Wake, Waker};

use rill_storage::Uring;

use super::exchange::Port;
use crate::clock::{Clock, MonotonicClock};
use crate::error::{EngineError, Result};
use crate::ring::Doorbell;

/// Submission-queue entries of a core's connector ring.
const CONNECTOR_RING_ENTRIES: u32 = 256;

/// How long a core parks at most while its connector ring has operations in flight and
/// no eventfd could be registered (the fallback: poll instead of being woken).
pub(crate) const IO_FALLBACK_POLL_NS: u64 = 100_000;

/// What a source or sink partition is given on every call that may start or poll IO:
/// the time, a [`Waker`] that wakes the partition's core, and the core's io_uring for
/// connectors. A partition that returns `Pending` (or [`SourcePoll::Pending`]) must have
/// handed [`IoCx::waker`] (or [`IoCx::context`]) to whatever will complete: an operation
/// on [`IoCx::uring`], a future polled with the context, or another thread that calls
/// `wake` on a clone of the waker. Until then the partition is not polled again and its
/// core may park.
///
/// [`SourcePoll::Pending`]: super::SourcePoll::Pending
pub struct IoCx<'a> {
    clock: &'a MonotonicClock,
    now_ns: Cell<Option<u64>>,
    cx: Context<'a>,
    io: &'a CoreIo,
}

impl<'a> IoCx<'a> {
    pub(crate) fn new(
        clock: &'a MonotonicClock,
        now_ns: Option<u64>,
        waker: &'a Waker,
        io: &'a CoreIo,
    ) -> Self {
        Self {
            clock,
            now_ns: Cell::new(now_ns),
            cx: Context::from_waker(waker),
            io,
        }
    }

    /// Now on the job clock, ns (read once per call).
    pub fn now_ns(&self) -> u64 {
        match self.now_ns.get() {
            Some(t) => t,
            None => {
                let t = self.clock.now_ns();
                self.now_ns.set(Some(t));
                t
            }
        }
    }

    /// The waker of this partition: calling `wake` (from any thread) makes the core poll
    /// the partition again, unparking the core if it sleeps.
    pub fn waker(&self) -> &Waker {
        self.cx.waker()
    }

    /// A task context around [`IoCx::waker`], to poll futures with.
    pub fn context(&mut self) -> &mut Context<'a> {
        &mut self.cx
    }

    /// The core's io_uring for connectors (created on first use): operations on it are
    /// reaped by the core every round and their completions wake a parked core. Keep the
    /// `Rc` (it is `!Send`: it lives and dies on this core).
    pub fn uring(&self) -> Result<Rc<Uring>> {
        self.io.uring().map_err(|e| EngineError::Preflight {
            problem: format!("cannot set up the connector io_uring: {e}"),
            fix: "check kernel.io_uring_disabled and the locked-memory limit (ulimit -l)".into(),
        })
    }
}

/// A partition's wake flag: set by its waker, read and cleared by the core.
pub(crate) struct WakeFlag {
    woken: AtomicBool,
    doorbell: Arc<Doorbell>,
}

impl WakeFlag {
    /// A flag that rings `doorbell` (the core's) when set.
    pub(crate) fn new(doorbell: Arc<Doorbell>) -> Arc<Self> {
        Arc::new(Self {
            woken: AtomicBool::new(false),
            doorbell,
        })
    }

    /// Whether the partition was woken since the last `take`, clearing it.
    pub(crate) fn take(&self) -> bool {
        self.woken.swap(false, Ordering::AcqRel)
    }

    /// Whether the partition was woken (for the park re-check; after the doorbell's
    /// `arm`, whose SeqCst fence orders this load).
    pub(crate) fn is_set(&self) -> bool {
        self.woken.load(Ordering::Acquire)
    }
}

impl Wake for WakeFlag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        // `notify` fences (SeqCst) before it reads `armed`: see the module doc.
        self.doorbell.notify();
    }
}

/// One core's io_uring for source and sink partitions, created on first use, with its
/// completion eventfd watched by the wake thread.
pub(crate) struct CoreIo {
    uring: OnceCell<Rc<Uring>>,
    signal: OnceCell<Option<Signal>>,
    doorbell: Arc<Doorbell>,
}

impl CoreIo {
    /// The connector IO of the core whose doorbell is `doorbell`.
    pub(crate) fn new(doorbell: Arc<Doorbell>) -> Self {
        Self {
            uring: OnceCell::new(),
            signal: OnceCell::new(),
            doorbell,
        }
    }

    /// The ring, created (and its eventfd registered) on first use.
    pub(crate) fn uring(&self) -> io::Result<Rc<Uring>> {
        if let Some(u) = self.uring.get() {
            return Ok(u.clone());
        }
        let u = Rc::new(Uring::new(CONNECTOR_RING_ENTRIES)?);
        let signal = match Signal::register(&u, self.doorbell.clone()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(
                    "connector io_uring: no completion eventfd ({e}); the core polls it \
                     every {} µs while IO is in flight",
                    IO_FALLBACK_POLL_NS / 1_000
                );
                None
            }
        };
        let _ = self.signal.set(signal);
        let _ = self.uring.set(u.clone());
        Ok(u)
    }

    /// Reaps completions (waking their partitions) and submits queued operations.
    /// Returns how many completions were reaped.
    pub(crate) fn poll(&self) -> usize {
        self.uring.get().map_or(0, |u| u.poll())
    }

    fn has_ready(&self) -> bool {
        self.uring.get().is_some_and(|u| u.has_ready())
    }

    fn in_flight(&self) -> usize {
        self.uring.get().map_or(0, |u| u.in_flight())
    }

    fn signalled(&self) -> bool {
        self.signal.get().is_some_and(Option::is_some)
    }
}

/// The shard loop's handle on a core's connector ring: reaps it every round.
pub(crate) struct IoPort {
    pub(crate) io: Rc<CoreIo>,
    pub(crate) clock: MonotonicClock,
}

impl Port for IoPort {
    fn flush(&mut self, _now_ns: u64) -> bool {
        self.io.poll() > 0
    }
    fn is_blocked(&self) -> bool {
        false
    }
    fn can_progress(&self, _now_ns: u64) -> bool {
        // Orders the doorbell's `armed = true` (stored before this re-check) before the
        // load of the completion queue's tail; see the module doc.
        fence(Ordering::SeqCst);
        self.io.has_ready()
    }
    fn is_drained(&self) -> bool {
        true
    }
    fn next_deadline(&self) -> Option<u64> {
        (!self.io.signalled() && self.io.in_flight() > 0)
            .then(|| self.clock.now_ns() + IO_FALLBACK_POLL_NS)
    }
}

/// The process-wide thread that rings a core's doorbell when its connector ring posts a
/// completion.
struct Reactor {
    epoll: OwnedFd,
    /// key → (eventfd, doorbell). An entry is removed (under this lock) before its eventfd
    /// is closed, so the thread never reads a closed or reused descriptor.
    cores: Mutex<HashMap<u64, (RawFd, Arc<Doorbell>)>>,
    next_key: AtomicU64,
}

fn reactor() -> io::Result<&'static Reactor> {
    static REACTOR: OnceLock<std::result::Result<&'static Reactor, i32>> = OnceLock::new();
    let r = REACTOR.get_or_init(|| {
        // SAFETY: epoll_create1 takes a flag and returns a new descriptor or -1.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO));
        }
        // SAFETY: `fd` is the descriptor epoll_create1 just returned; nothing else owns it.
        let epoll = unsafe { OwnedFd::from_raw_fd(fd) };
        let reactor: &'static Reactor = Box::leak(Box::new(Reactor {
            epoll,
            cores: Mutex::new(HashMap::new()),
            next_key: AtomicU64::new(0),
        }));
        let spawned = std::thread::Builder::new()
            .name("rill-io-wake".into())
            .spawn(move || reactor.run());
        match spawned {
            Ok(_) => Ok(reactor),
            Err(e) => Err(e.raw_os_error().unwrap_or(libc::EAGAIN)),
        }
    });
    r.map_err(io::Error::from_raw_os_error)
}

impl Reactor {
    fn run(&self) {
        const EVENTS: usize = 16;
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; EVENTS];
        loop {
            // SAFETY: `events` is a writable array of EVENTS epoll_event structs and the
            // epoll descriptor lives for the process (the reactor is leaked).
            let n = unsafe {
                libc::epoll_wait(
                    self.epoll.as_raw_fd(),
                    events.as_mut_ptr(),
                    EVENTS as i32,
                    -1,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                tracing::error!("the io wake thread's epoll_wait failed: {e}; it stops");
                return;
            }
            let cores = self.cores.lock().unwrap_or_else(|p| p.into_inner());
            for ev in &events[..n as usize] {
                let key = ev.u64;
                let Some((fd, bell)) = cores.get(&key) else {
                    continue;
                };
                let mut count = 0u64;
                // SAFETY: `fd` is an open eventfd (entries leave the map before their fd
                // is closed, under the lock held here); reading 8 bytes into a u64 is the
                // eventfd protocol. Non-blocking: EAGAIN when already drained.
                let _ = unsafe { libc::read(*fd, (&mut count as *mut u64).cast(), 8) };
                bell.notify();
            }
        }
    }
}

/// A connector ring's registration with the wake thread; unregisters on drop.
struct Signal {
    key: u64,
    eventfd: OwnedFd,
}

impl Signal {
    fn register(uring: &Uring, doorbell: Arc<Doorbell>) -> io::Result<Self> {
        let reactor = reactor()?;
        // SAFETY: eventfd takes an initial value and flags; returns a new descriptor or -1.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is the descriptor eventfd just returned; nothing else owns it.
        let eventfd = unsafe { OwnedFd::from_raw_fd(fd) };
        let key = reactor.next_key.fetch_add(1, Ordering::Relaxed);
        reactor
            .cores
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, (eventfd.as_raw_fd(), doorbell));
        let signal = Signal { key, eventfd };
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: key,
        };
        // SAFETY: both descriptors are open; `ev` is a valid epoll_event.
        let r = unsafe {
            libc::epoll_ctl(
                reactor.epoll.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                signal.eventfd.as_raw_fd(),
                &mut ev,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        uring.register_eventfd(signal.eventfd.as_raw_fd())?;
        Ok(signal)
    }
}

impl Drop for Signal {
    fn drop(&mut self) {
        let Ok(reactor) = reactor() else { return };
        let mut cores = reactor.cores.lock().unwrap_or_else(|p| p.into_inner());
        cores.remove(&self.key);
        // SAFETY: both descriptors are open; EPOLL_CTL_DEL ignores the event argument.
        unsafe {
            libc::epoll_ctl(
                reactor.epoll.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                self.eventfd.as_raw_fd(),
                std::ptr::null_mut(),
            );
        }
        // The eventfd closes when `self.eventfd` drops, after the entry left the map.
        drop(cores);
    }
}

/// Drives a partition outside a core, for tests: polls with a waker that unparks this
/// thread and waits on the connector ring between polls.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// A stand-alone core IO with its own doorbell.
    pub(crate) struct Standalone {
        pub(crate) io: CoreIo,
        pub(crate) clock: MonotonicClock,
        pub(crate) waker: Waker,
    }

    impl Standalone {
        pub(crate) fn new() -> Self {
            let bell = Arc::new(Doorbell::new());
            let flag = WakeFlag::new(bell.clone());
            Self {
                io: CoreIo::new(bell),
                clock: MonotonicClock::new(std::time::Instant::now()),
                waker: Waker::from(flag),
            }
        }

        pub(crate) fn cx(&self) -> IoCx<'_> {
            IoCx::new(&self.clock, None, &self.waker, &self.io)
        }

        /// Reaps completions, waiting for one when operations are in flight.
        pub(crate) fn wait(&self) {
            if let Some(u) = self.io.uring.get() {
                if u.in_flight() > 0 {
                    u.wait();
                    return;
                }
                u.poll();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::time::{Duration, Instant};

    #[test]
    fn a_completion_rings_the_doorbell_of_a_parked_core() {
        let bell = Arc::new(Doorbell::new());
        let io = CoreIo::new(bell.clone());
        let uring = io.uring().unwrap();
        assert!(io.signalled(), "the eventfd was registered");
        let (mut a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let fd = b.as_raw_fd();
        let recv = uring.recv(fd, vec![0u8; 16]);
        let mut recv = std::pin::pin!(recv);
        let flag = WakeFlag::new(bell.clone());
        let waker = Waker::from(flag.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(recv.as_mut().poll(&mut cx).is_pending());
        io.poll(); // submitted
                   // Park the way the shard does: arm, re-check, sleep on the doorbell.
        bell.arm();
        let port = IoPort {
            io: Rc::new(CoreIo::new(bell.clone())),
            clock: MonotonicClock::new(Instant::now()),
        };
        assert!(
            !port.can_progress(0),
            "a port on an unused ring has nothing"
        );
        assert!(!io.has_ready(), "nothing completed yet");
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            use std::io::Write;
            a.write_all(b"hello").unwrap();
            a
        });
        // A watchdog rings the bell after a minute, so a lost wake-up fails the test
        // instead of hanging it.
        let fired = Arc::new(AtomicBool::new(false));
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let watchdog = {
            let (bell, fired) = (bell.clone(), fired.clone());
            std::thread::spawn(move || {
                if done_rx.recv_timeout(Duration::from_secs(60)).is_err() {
                    fired.store(true, Ordering::SeqCst);
                    bell.notify();
                }
            })
        };
        let clock = MonotonicClock::new(Instant::now());
        crate::runtime::park::park(&bell, &crate::runtime::park::thread_waker(), &clock, None);
        bell.disarm();
        done_tx.send(()).unwrap();
        watchdog.join().unwrap();
        assert!(
            !fired.load(Ordering::SeqCst),
            "the completion did not wake the core"
        );
        assert_eq!(io.poll(), 1);
        assert!(flag.take(), "the recv's waker ran");
        let std::task::Poll::Ready((n, buf)) = recv.as_mut().poll(&mut cx) else {
            panic!("the recv completed");
        };
        assert_eq!(&buf[..n.unwrap()], b"hello");
        drop(writer.join().unwrap());
    }
}
