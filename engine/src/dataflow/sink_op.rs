//! The sink operator: a sink partition at the end of a chain, the bounded queue of what
//! it could not take yet, its port (driven by the shard loop when the partition's waker
//! was called) and its committer (queues the commits of completed checkpoints). Owns the
//! order of calls an `AsyncSinkPartition` sees; must not block or wait.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};

use super::exchange::Port;
use super::instantiate::Instantiator;
use super::io::{CoreIo, IoCx, WakeFlag};
use super::ops::{Emit, FailureSlot};
use super::AsyncSinkPartition;
use crate::checkpoint::core::Participant;
use crate::clock::MonotonicClock;
use crate::error::{EngineError, Result};
use crate::ids::{CheckpointId, PartitionId};
use crate::message::Control;

type PortRef = Rc<RefCell<dyn Port>>;

/// What waits in front of a sink partition, in input order.
enum SinkItem<T> {
    Data(T),
    Barrier(CheckpointId),
    End,
}

/// Most items queued in front of a sink partition that is not ready before the drivers
/// feeding it stop (one step of a driver may add up to its batch on top).
const SINK_QUEUE_MAX: usize = 4096;

/// A sink partition at the end of a chain, with the bounded queue of what it could not
/// take yet. With checkpoints, a barrier pre-commits what the partition wrote before it
/// (possibly over several rounds, while the partition's IO is in flight: the core goes
/// on meanwhile) and reports the partition's part of the checkpoint once that is done;
/// when the checkpoint completes, the core's committer queues the commit here.
pub(crate) struct SinkOp<T>(Rc<RefCell<SinkState<T>>>);

struct SinkState<T> {
    part: Box<dyn AsyncSinkPartition<T>>,
    queue: std::collections::VecDeque<SinkItem<T>>,
    /// Completed checkpoints to commit, oldest first.
    commits: std::collections::VecDeque<CheckpointId>,
    io: Rc<CoreIo>,
    wake: Arc<WakeFlag>,
    waker: Waker,
    clock: MonotonicClock,
    failure: FailureSlot,
    failed: bool,
    ckpt: Option<Participant>,
    /// `poll_pre_commit` was called for the barrier at the head of the queue.
    sealing: bool,
    /// The last `drive` stopped at a `Pending`: wait for the waker.
    stalled: bool,
}

/// The core's handle on a sink partition, for commits: queues them (the core's
/// checkpoint state is borrowed while it calls this), the shard loop drives them.
struct SinkCommitter<T>(Rc<RefCell<SinkState<T>>>);

impl<T> crate::checkpoint::core::Committer for SinkCommitter<T> {
    fn commit(&mut self, id: CheckpointId) -> Result<Vec<std::fs::File>> {
        let mut st = self.0.borrow_mut();
        if !st.failed && !st.commits.contains(&id) {
            st.commits.push_back(id);
            st.stalled = false;
        }
        Ok(Vec::new())
    }
}

impl<T> SinkState<T> {
    fn fail(&mut self, e: EngineError) {
        self.failed = true;
        self.failure.fail(e);
        self.queue.clear();
        self.commits.clear();
    }

    /// Moves commits and the queue forward as far as the partition lets it. Returns
    /// whether anything moved.
    fn drive(&mut self) -> bool {
        if self.failed {
            return false;
        }
        match self.drive_inner() {
            Ok(moved) => moved,
            Err(e) => {
                self.fail(e);
                true
            }
        }
    }

    fn drive_inner(&mut self) -> Result<bool> {
        let SinkState {
            part,
            queue,
            commits,
            io,
            waker,
            clock,
            ckpt,
            sealing,
            stalled,
            ..
        } = self;
        let mut cx = IoCx::new(clock, None, waker, io);
        let mut moved = false;
        *stalled = false;
        while let Some(&id) = commits.front() {
            match part.poll_commit(id, &mut cx) {
                Poll::Ready(r) => {
                    r?;
                    commits.pop_front();
                    moved = true;
                }
                Poll::Pending => {
                    *stalled = true;
                    break;
                }
            }
        }
        loop {
            let ready = match queue.front() {
                None => break,
                Some(SinkItem::Data(_)) => part.poll_ready(&mut cx),
                Some(SinkItem::Barrier(id)) => {
                    let id = *id;
                    let Some(p) = ckpt.as_ref() else {
                        queue.pop_front();
                        continue;
                    };
                    // A barrier of an aborted checkpoint seals nothing: what came before
                    // it goes into the next one (unless sealing had begun).
                    if !*sealing && !p.wants(id) {
                        queue.pop_front();
                        moved = true;
                        continue;
                    }
                    *sealing = true;
                    match part.poll_pre_commit(id, &mut cx) {
                        Poll::Ready(files) => {
                            let files = files?;
                            *sealing = false;
                            queue.pop_front();
                            p.sink(id, files, cx.now_ns());
                            moved = true;
                            continue;
                        }
                        Poll::Pending => Poll::Pending,
                    }
                }
                // The end waits for the commits before it (the final checkpoint's).
                Some(SinkItem::End) if !commits.is_empty() => break,
                Some(SinkItem::End) => match part.poll_finish(&mut cx) {
                    Poll::Ready(r) => {
                        r?;
                        queue.pop_front();
                        moved = true;
                        continue;
                    }
                    Poll::Pending => Poll::Pending,
                },
            };
            match ready {
                Poll::Ready(r) => {
                    r?;
                    let Some(SinkItem::Data(rec)) = queue.pop_front() else {
                        unreachable!("the head was a record")
                    };
                    part.write(rec)?;
                    moved = true;
                }
                Poll::Pending => {
                    *stalled = true;
                    break;
                }
            }
        }
        Ok(moved)
    }

    /// Queues `item` and, when nothing is ahead of it, moves at once.
    fn push(&mut self, item: SinkItem<T>) {
        if self.failed {
            return;
        }
        let was_empty = self.queue.is_empty();
        self.queue.push_back(item);
        if was_empty {
            self.drive();
        }
    }
}

impl<T: 'static> SinkOp<T> {
    pub(crate) fn new(
        inst: &mut Instantiator<'_>,
        node: usize,
        p: PartitionId,
        part: Box<dyn AsyncSinkPartition<T>>,
    ) -> Self {
        let ckpt = inst.participant(node, p, "sink");
        let io = inst.core_io();
        let (wake, waker) = inst.wake_flag();
        let st = Rc::new(RefCell::new(SinkState {
            part,
            queue: std::collections::VecDeque::new(),
            commits: std::collections::VecDeque::new(),
            io,
            wake,
            waker,
            clock: inst.clock(),
            failure: inst.failure(),
            failed: false,
            ckpt: ckpt.clone(),
            sealing: false,
            stalled: false,
        }));
        if let Some(c) = &ckpt {
            c.core
                .borrow_mut()
                .add_committer(Rc::new(RefCell::new(SinkCommitter(st.clone()))));
        }
        let port: PortRef = Rc::new(RefCell::new(SinkPort(st.clone())));
        inst.register_port(port, node, p);
        Self(st)
    }
}

impl<T: 'static> Emit<T> for SinkOp<T> {
    #[inline]
    fn data(&mut self, rec: T) {
        let mut st = self.0.borrow_mut();
        if st.failed {
            return;
        }
        if st.queue.is_empty() {
            let ready = {
                let SinkState {
                    part,
                    io,
                    waker,
                    clock,
                    ..
                } = &mut *st;
                part.poll_ready(&mut IoCx::new(clock, None, waker, io))
            };
            match ready {
                Poll::Ready(Ok(())) => {
                    if let Err(e) = st.part.write(rec) {
                        st.fail(e);
                    }
                    return;
                }
                Poll::Ready(Err(e)) => {
                    st.fail(e);
                    return;
                }
                Poll::Pending => st.stalled = true,
            }
        }
        st.queue.push_back(SinkItem::Data(rec));
    }
    fn control(&mut self, c: Control) {
        let Control::Barrier(b) = c else { return };
        let mut st = self.0.borrow_mut();
        if st.ckpt.is_some() {
            st.push(SinkItem::Barrier(b.id));
        }
    }
    fn end(&mut self) {
        self.0.borrow_mut().push(SinkItem::End);
    }
}

/// The shard loop's handle on a sink partition: drives its queue and commits when the
/// partition's waker was called, stops the drivers feeding it while the queue is full,
/// and keeps the core running until the queue and the commits are done.
struct SinkPort<T>(Rc<RefCell<SinkState<T>>>);

impl<T> Port for SinkPort<T> {
    fn flush(&mut self, _now_ns: u64) -> bool {
        let mut st = self.0.borrow_mut();
        // Nothing queued (the common case: records went straight in): no atomic touched.
        // A wake left set meanwhile only means one extra `drive` later.
        if st.queue.is_empty() && st.commits.is_empty() {
            return false;
        }
        let woken = st.wake.take();
        if st.stalled && !woken {
            return false;
        }
        st.drive()
    }
    fn is_blocked(&self) -> bool {
        self.0.borrow().queue.len() >= SINK_QUEUE_MAX
    }
    fn can_progress(&self, _now_ns: u64) -> bool {
        let st = self.0.borrow();
        let work = !st.queue.is_empty() || !st.commits.is_empty();
        work && (!st.stalled || st.wake.is_set())
    }
    fn is_drained(&self) -> bool {
        let st = self.0.borrow();
        st.queue.is_empty() && st.commits.is_empty()
    }
    fn next_deadline(&self) -> Option<u64> {
        None
    }
}
