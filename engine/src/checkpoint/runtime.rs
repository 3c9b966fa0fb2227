//! What the shard loop calls to take part in checkpoints: it polls the core's io_uring
//! and the log writer's task (hand-polled futures; the shard never yields to glommio),
//! takes the coordinator's messages (from a ring, or straight from the shell on the first
//! core), applies them to the core's drivers and participants, and sends the core's acks
//! back. Nothing here blocks.

use std::cell::RefCell;
use std::fs::File;
use std::future::Future;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Wake, Waker};

use rill_storage::{Uring, UringFs};

use super::core::{writer_loop, CoreCheckpoints};
use super::protocol::{ToCoordinator, ToCore};
use super::shell::Shell;
use crate::clock::{Clock, MonotonicClock};
use crate::dataflow::instantiate::Driver;
use crate::error::{EngineError, Result};
use crate::message::Barrier;
use crate::ring::{Consumer, Doorbell, Producer};

/// How long a core sleeps at most while its io_uring has operations in flight (their
/// completions do not ring the doorbell).
pub(crate) const IO_POLL_NS: u64 = 100_000;
/// How long the first core sleeps at most with checkpointing on (to notice savepoint
/// requests, which arrive by signal).
pub(crate) const COORDINATOR_POLL_NS: u64 = 50_000_000;

struct Flag(AtomicBool);

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::Release);
    }
}

type Task = Pin<Box<dyn Future<Output = ()>>>;

/// How a core reaches the coordinator.
pub(crate) enum Link {
    /// The coordinator runs here.
    Coordinator(Box<Shell>),
    /// Over rings to and from the first core.
    Remote {
        to: Producer<ToCoordinator>,
        from: Consumer<ToCore>,
        coordinator: Arc<Doorbell>,
        backlog: Vec<ToCoordinator>,
    },
}

/// One core's checkpointing, as the shard loop drives it.
pub(crate) struct CoreRuntime {
    pub(crate) core: Rc<RefCell<CoreCheckpoints>>,
    uring: Rc<Uring>,
    writer: Task,
    syncs: Vec<Task>,
    flag: Arc<Flag>,
    waker: Waker,
    link: Link,
    inbox: Vec<ToCore>,
    clock: MonotonicClock,
}

impl CoreRuntime {
    /// Opens the core's log under `dir` (core `cpu`, configured by `log`) on a fresh
    /// io_uring of `depth`.
    pub(crate) fn new(
        core: Rc<RefCell<CoreCheckpoints>>,
        dir: &std::path::Path,
        cpu: u32,
        depth: u32,
        log: rill_storage::LogConfig,
        link: Link,
        clock: MonotonicClock,
    ) -> Result<Self> {
        let uring = Rc::new(Uring::new(depth).map_err(|e| EngineError::Preflight {
            problem: format!("cannot set up the checkpoint io_uring: {e}"),
            fix: "check kernel.io_uring_disabled and the locked-memory limit (ulimit -l)".into(),
        })?);
        let log = rill_storage::LogWriter::open_with(
            UringFs::new(uring.clone()),
            dir,
            rill_storage::CoreId(cpu),
            log,
        )?;
        let writer: Task = Box::pin(writer_loop(
            core.clone(),
            Rc::new(log),
            uring.clone(),
            move || clock.now_ns(),
        ));
        let flag = Arc::new(Flag(AtomicBool::new(true)));
        let waker = Waker::from(flag.clone());
        Ok(Self {
            core,
            uring,
            writer,
            syncs: Vec::new(),
            flag,
            waker,
            link,
            inbox: Vec::new(),
            clock,
        })
    }

    fn poll_tasks(&mut self) {
        if !self.flag.0.swap(false, Ordering::AcqRel) {
            return;
        }
        let mut cx = Context::from_waker(&self.waker);
        // The writer loops forever; it only ever returns Pending.
        let _ = self.writer.as_mut().poll(&mut cx);
        self.syncs
            .retain_mut(|t| t.as_mut().poll(&mut cx).is_pending());
    }

    fn spawn_sync(&mut self, dirs: Vec<File>) {
        for d in dirs {
            let uring = self.uring.clone();
            self.syncs.push(Box::pin(async move {
                if let Err(e) = uring.fsync(d.as_raw_fd()).await {
                    tracing::warn!("syncing a committed sink directory: {e}");
                }
                drop(d);
            }));
        }
        self.flag.0.store(true, Ordering::Release);
    }

    /// One round. Returns whether anything happened.
    pub(crate) fn step(&mut self, drivers: &mut [Box<dyn Driver>]) -> Result<bool> {
        let mut progress = false;
        // A new round: the writer task's next archiving slice may run.
        self.core.borrow_mut().rounds += 1;
        if self.uring.poll() > 0 {
            progress = true;
        }
        self.poll_tasks();
        let now = self.clock.now_ns();
        self.core.borrow_mut().poll_finished();
        let outbox = std::mem::take(&mut self.core.borrow_mut().outbox);
        match &mut self.link {
            Link::Coordinator(shell) => {
                progress |= shell.step(now, outbox, &mut self.inbox)?;
            }
            Link::Remote {
                to,
                from,
                coordinator,
                backlog,
            } => {
                backlog.extend(outbox);
                let mut sent = false;
                while !backlog.is_empty() {
                    let m = backlog.remove(0);
                    if let Err(full) = to.try_push(m) {
                        backlog.insert(0, full.into_inner());
                        break;
                    }
                    sent = true;
                }
                if sent {
                    coordinator.notify();
                    progress = true;
                }
                while let Some(m) = from.try_pop() {
                    self.inbox.push(m);
                }
            }
        }
        let inbox = std::mem::take(&mut self.inbox);
        progress |= !inbox.is_empty();
        for m in inbox {
            match m {
                ToCore::Trigger { id, last } => {
                    self.core.borrow_mut().on_trigger(id, now);
                    for d in drivers.iter_mut() {
                        d.trigger(Barrier { id, last }, now);
                    }
                }
                ToCore::Complete { id, last } => {
                    let dirs = self.core.borrow_mut().on_complete(id, last)?;
                    self.spawn_sync(dirs);
                    for d in drivers.iter_mut() {
                        d.complete(id, last);
                    }
                }
                ToCore::Abort { id } => self.core.borrow_mut().on_abort(id, now),
            }
        }
        self.poll_tasks();
        Ok(progress)
    }

    /// Whether a message or IO completion is waiting (for the re-check before parking).
    pub(crate) fn has_input(&self) -> bool {
        self.flag.0.load(Ordering::Acquire)
            || !self.inbox.is_empty()
            || match &self.link {
                Link::Coordinator(s) => s.has_input(),
                Link::Remote { from, backlog, .. } => !from.is_empty() || !backlog.is_empty(),
            }
            || !self.core.borrow().outbox.is_empty()
    }

    /// The latest time the core may sleep until.
    pub(crate) fn wake_at(&self, now: u64) -> Option<u64> {
        let mut t: Option<u64> = None;
        let mut at = |x: u64| t = Some(t.map_or(x, |y: u64| y.min(x)));
        if self.uring.in_flight() > 0 {
            at(now + IO_POLL_NS);
        }
        if let Link::Coordinator(s) = &self.link {
            at(now + COORDINATOR_POLL_NS);
            if let Some(w) = s.next_wake_ns() {
                at(w);
            }
        }
        t
    }

    /// Whether this core may end: the final checkpoint completed here.
    pub(crate) fn may_end(&self) -> bool {
        self.core.borrow().final_complete
    }

    /// The finished checkpoints (first core only), for the run report.
    /// The checkpoints that ended so far, without taking them (the first core only).
    pub(crate) fn history_so_far(&self) -> Option<&[super::history::Entry]> {
        match &self.link {
            Link::Coordinator(s) => Some(&s.history),
            Link::Remote { .. } => None,
        }
    }

    pub(crate) fn history(&mut self) -> Vec<super::history::Entry> {
        match &mut self.link {
            Link::Coordinator(s) => std::mem::take(&mut s.history),
            Link::Remote { .. } => Vec::new(),
        }
    }
}
