//! Per-core timers and socket IO for async operators: a heap of deadlines on the job
//! clock, fired by the core's shard loop (through the async operators' `flush`), the
//! `Sleep` future that waits on one, and the core's io_uring for network clients
//! (created on first use, polled at the same place; while it has operations in flight the
//! core parks for at most `IO_POLL_NS`). No thread sleeps and nothing blocks. The
//! checkpoint log keeps its own ring (`checkpoint::runtime`), so a job without async
//! clients pays nothing here.

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use crate::clock::Clock;

#[derive(Default)]
struct Heap {
    heap: BinaryHeap<Reverse<(u64, u64)>>,
    wakers: HashMap<u64, Waker>,
    next_id: u64,
}

/// How long a core parks at most while its async io_uring has operations in flight
/// (their completions do not ring the doorbell).
pub const IO_POLL_NS: u64 = 100_000;

/// One core's timers, clock and async io_uring. Cheap to clone (shared within the core
/// only).
#[derive(Clone)]
pub struct Timers {
    inner: Rc<RefCell<Heap>>,
    clock: Rc<dyn Clock>,
    uring: Rc<std::cell::OnceCell<Rc<rill_storage::Uring>>>,
}

impl Timers {
    /// Timers on `clock` (the job clock, or a manual clock in tests).
    pub fn new(clock: Rc<dyn Clock>) -> Self {
        Self {
            inner: Rc::default(),
            clock,
            uring: Rc::default(),
        }
    }

    /// Now on the job clock, ns.
    pub fn now_ns(&self) -> u64 {
        self.clock.now_ns()
    }

    /// A future that is ready at `at_ns` on the job clock.
    pub fn sleep_until(&self, at_ns: u64) -> Sleep {
        Sleep {
            timers: self.clone(),
            at_ns,
            id: None,
        }
    }

    /// A future that is ready `ns` from now.
    pub fn sleep_ns(&self, ns: u64) -> Sleep {
        self.sleep_until(self.now_ns().saturating_add(ns))
    }

    /// The core's io_uring for async clients (created on first use, 256 entries).
    pub fn uring(&self) -> std::io::Result<Rc<rill_storage::Uring>> {
        if let Some(u) = self.uring.get() {
            return Ok(u.clone());
        }
        let u = Rc::new(rill_storage::Uring::new(256)?);
        let _ = self.uring.set(u.clone());
        Ok(u)
    }

    /// Reaps io_uring completions and wakes every timer due at `now_ns`. Returns how many
    /// completions and timers woke something.
    pub fn fire(&self, now_ns: u64) -> usize {
        let reaped = self.uring.get().map_or(0, |u| u.poll());
        let mut h = self.inner.borrow_mut();
        let mut woken = Vec::new();
        while let Some(Reverse((at, id))) = h.heap.peek().copied() {
            if at > now_ns {
                break;
            }
            h.heap.pop();
            if let Some(w) = h.wakers.remove(&id) {
                woken.push(w);
            }
        }
        drop(h);
        let n = woken.len();
        woken.into_iter().for_each(Waker::wake);
        n + reaped
    }

    /// The earliest armed deadline, ns (IO in flight counts as due `IO_POLL_NS` from now).
    pub fn next_deadline(&self) -> Option<u64> {
        let h = self.inner.borrow();
        let t = h.heap.peek().map(|Reverse((at, _))| *at);
        let io = self
            .uring
            .get()
            .filter(|u| u.in_flight() > 0)
            .map(|_| self.now_ns() + IO_POLL_NS);
        t.into_iter().chain(io).min()
    }

    /// Armed timers.
    pub fn armed(&self) -> usize {
        self.inner.borrow().wakers.len()
    }

    fn arm(&self, at_ns: u64, waker: &Waker, id: &mut Option<u64>) {
        let mut h = self.inner.borrow_mut();
        match id {
            Some(i) if h.wakers.contains_key(i) => {
                h.wakers.insert(*i, waker.clone());
            }
            _ => {
                let i = h.next_id;
                h.next_id += 1;
                h.heap.push(Reverse((at_ns, i)));
                h.wakers.insert(i, waker.clone());
                *id = Some(i);
            }
        }
    }

    fn disarm(&self, id: u64) {
        // The heap entry stays until it is due; without a waker it fires nothing.
        self.inner.borrow_mut().wakers.remove(&id);
    }
}

/// Ready once the job clock reaches its deadline.
pub struct Sleep {
    timers: Timers,
    at_ns: u64,
    id: Option<u64>,
}

impl Future for Sleep {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if this.timers.now_ns() >= this.at_ns {
            if let Some(id) = this.id.take() {
                this.timers.disarm(id);
            }
            return Poll::Ready(());
        }
        let (t, at) = (this.timers.clone(), this.at_ns);
        t.arm(at, cx.waker(), &mut this.id);
        Poll::Pending
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            self.timers.disarm(id);
        }
    }
}

/// A clock the test moves by hand.
#[derive(Clone, Default)]
pub struct ManualClock(pub Rc<std::cell::Cell<u64>>);

impl ManualClock {
    /// Sets now to `ns`.
    pub fn set(&self, ns: u64) {
        self.0.set(ns);
    }
}

impl Clock for ManualClock {
    fn now_ns(&self) -> u64 {
        self.0.get()
    }
}
