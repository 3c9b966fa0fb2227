//! Exchanges: where records change partition (`key_by`, `rebalance`) and, when the
//! owning partition lives on another core, change core over an SPSC ring.
//!
//! On the sending core an `OutputPort` (one per exchange per core) routes each record to
//! its target partition. A target on the same core gets a direct call into the local
//! `Receiver`; a target on another core gets the record appended to that core's batch.
//! Batches are adaptive: a batch goes onto the ring at once when the receiving core has
//! drained its ring (it is idle or keeping up), otherwise it grows until `batch_max`
//! records or the flush deadline. A full ring is backpressure: the batch waits in
//! `pending`, the port reports itself blocked, and the drivers feeding it stop pulling
//! input until the consumer frees a slot (nothing is dropped; `pending` is bounded by
//! what one driver step produces).
//!
//! On the receiving core a `Receiver` (one per exchange per core) drains the rings from
//! every producing core and routes records to the local partitions' chains. Control
//! items (barriers, watermarks, end-of-stream) stay in order with the data on each ring
//! and are combined over the inputs by `InputSet`.

use std::any::Any;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;

use super::instantiate::Instantiator;
use super::ops::{BoxEmit, Emit};
use super::Data;
use crate::checkpoint::core::{CoreCheckpoints, Participant};
use crate::clock::{Clock, MonotonicClock};
use crate::ids::CheckpointId;
use crate::message::{Control, InputSet, Message};
use crate::ring::{Consumer, Doorbell, Producer};

/// What a route function may consult and update.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RouteState {
    /// Partitions of the receiving operator.
    pub(crate) parallelism: u32,
    /// Key groups of the job.
    pub(crate) max_key_groups: u16,
    /// Counter for round-robin routing.
    pub(crate) round_robin: u32,
}

/// Turns an input record into (target partition index, wire record).
pub(crate) type RouteFn<In, W> = Arc<dyn Fn(In, &mut RouteState) -> (u32, W) + Send + Sync>;

/// A record on a ring, with the index of the partition it is for.
pub(crate) type Routed<W> = (u32, W);

/// How the records of an exchange are persisted as channel state (unaligned checkpoints)
/// and routed again on restore, when the partition count may have changed.
pub(crate) struct ChannelCodec<W> {
    pub(crate) encode: fn(&Vec<Routed<W>>) -> rill_storage::Result<rkyv::util::AlignedVec>,
    pub(crate) decode: fn(&[u8]) -> rill_storage::Result<Vec<Routed<W>>>,
    /// The partition a restored record goes to: (record, partition it was sent to, route
    /// state of the restored job).
    pub(crate) reroute: fn(&W, u32, &RouteState) -> u32,
}

impl<W> ChannelCodec<W>
where
    (u32, W): crate::checkpoint::codec::Record,
{
    pub(crate) fn new(reroute: fn(&W, u32, &RouteState) -> u32) -> Self {
        use crate::checkpoint::codec::Record;
        Self {
            encode: <(u32, W)>::encode,
            decode: <(u32, W)>::decode,
            reroute,
        }
    }
}

/// The typed definition of one exchange.
pub(crate) struct ExchangeDef<In, W> {
    pub(crate) route: RouteFn<In, W>,
}

impl<In, W> ExchangeDef<In, W> {
    pub(crate) fn new(route: RouteFn<In, W>) -> Self {
        Self { route }
    }
}

/// The parts of an exchange that do not depend on its input type.
pub(crate) trait ExchangeErased: Send + Sync {
    /// Creates one ring of `capacity` slots for this exchange's wire type: the producer
    /// and the consumer end, each boxed for the core that will own it.
    fn make_ring(&self, capacity: usize) -> (Box<dyn Any + Send>, Box<dyn Any + Send>);
    /// Creates this exchange's receiver on the instantiating core, if it has none yet.
    fn ensure_receiver(&self, inst: &mut Instantiator<'_>, node: usize);
}

impl<In: Data, W: Data> ExchangeErased for ExchangeDef<In, W> {
    fn make_ring(&self, capacity: usize) -> (Box<dyn Any + Send>, Box<dyn Any + Send>) {
        let (p, c) = crate::ring::channel::<Message<Routed<W>>>(capacity);
        (Box::new(p), Box::new(c))
    }

    fn ensure_receiver(&self, inst: &mut Instantiator<'_>, node: usize) {
        inst.receiver::<W>(node);
    }
}

/// The status of a port, seen by the shard loop.
pub(crate) trait Port {
    /// Pushes what is due onto the rings. Returns whether anything moved.
    fn flush(&mut self, now_ns: u64) -> bool;
    /// Whether the drivers feeding this port must stop (a ring is full and batches wait).
    fn is_blocked(&self) -> bool;
    /// Whether a flush would move something now (for the park re-check).
    fn can_progress(&self, now_ns: u64) -> bool;
    /// Whether nothing is buffered or waiting.
    fn is_drained(&self) -> bool;
    /// The earliest flush deadline of a buffered batch, if any (ns).
    fn next_deadline(&self) -> Option<u64>;
}

/// The sending end of one ring.
struct Target<W> {
    ring: Producer<Message<Routed<W>>>,
    doorbell: Arc<Doorbell>,
    batch: Vec<Routed<W>>,
    batch_started_ns: u64,
    pending: VecDeque<Message<Routed<W>>>,
}

impl<W> Target<W> {
    /// Moves the current batch to the pending queue.
    fn seal(&mut self, batch_max: usize) {
        if !self.batch.is_empty() {
            // Size the next batch like this one: one-record batches at low load should not
            // each allocate room for `batch_max`.
            let next = self.batch.len().next_power_of_two().min(batch_max);
            let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(next));
            self.pending.push_back(Message::Data(batch));
        }
    }

    /// Pushes pending messages until the ring is full. Returns how many moved.
    fn drain(&mut self) -> usize {
        let mut moved = 0;
        while let Some(m) = self.pending.pop_front() {
            match self.ring.try_push(m) {
                Ok(()) => moved += 1,
                Err(full) => {
                    self.pending.push_front(full.0);
                    break;
                }
            }
        }
        if moved > 0 {
            self.doorbell.notify();
        }
        moved
    }
}

/// The local end of an exchange on a core that also receives it.
struct LocalLink<W> {
    receiver: Rc<RefCell<Receiver<W>>>,
    input: usize,
}

/// One exchange's sending side on one core.
pub(crate) struct OutputPort<In, W> {
    route: RouteFn<In, W>,
    rs: RouteState,
    /// Partition index → core index.
    placement: Rc<[usize]>,
    /// Per core index: the ring to it (cores that receive this exchange, but this one).
    targets: Vec<Option<Target<W>>>,
    local: Option<LocalLink<W>>,
    /// Ports reachable behind the local receiver (they block this port too).
    local_ports: Vec<Rc<RefCell<dyn Port>>>,
    inputs: InputSet,
    batch_max: usize,
    deadline_ns: u64,
    now_ns: u64,
}

/// A ring to another core and that core's doorbell.
pub(crate) type RingTo<W> = (Producer<Message<Routed<W>>>, Arc<Doorbell>);

/// The local receiver, this core's input index on it, and the ports behind it.
pub(crate) type LocalWiring<W> = (Rc<RefCell<Receiver<W>>>, usize, Vec<Rc<RefCell<dyn Port>>>);

/// How an `OutputPort` is wired on its core.
pub(crate) struct PortWiring<W> {
    pub(crate) placement: Rc<[usize]>,
    pub(crate) rings: Vec<Option<RingTo<W>>>,
    pub(crate) local: Option<LocalWiring<W>>,
    pub(crate) local_inputs: usize,
    pub(crate) parallelism: u32,
    pub(crate) max_key_groups: u16,
    pub(crate) batch_max: usize,
    pub(crate) flush_deadline_ns: u64,
}

impl<In, W: Clone> OutputPort<In, W> {
    pub(crate) fn new(route: RouteFn<In, W>, w: PortWiring<W>) -> Self {
        let (local, local_ports) = match w.local {
            Some((receiver, input, ports)) => (Some(LocalLink { receiver, input }), ports),
            None => (None, Vec::new()),
        };
        Self {
            route,
            rs: RouteState {
                parallelism: w.parallelism,
                max_key_groups: w.max_key_groups,
                round_robin: 0,
            },
            placement: w.placement,
            targets: w
                .rings
                .into_iter()
                .map(|r| {
                    r.map(|(ring, doorbell)| Target {
                        ring,
                        doorbell,
                        batch: Vec::with_capacity(w.batch_max),
                        batch_started_ns: 0,
                        pending: VecDeque::new(),
                    })
                })
                .collect(),
            local,
            local_ports,
            inputs: InputSet::new(w.local_inputs),
            batch_max: w.batch_max,
            deadline_ns: w.flush_deadline_ns,
            now_ns: 0,
        }
    }

    #[inline]
    fn send(&mut self, rec: In) {
        let (part, w) = (self.route)(rec, &mut self.rs);
        let core = self.placement[part as usize];
        match &mut self.targets[core] {
            Some(t) => {
                if t.batch.is_empty() {
                    t.batch_started_ns = self.now_ns;
                }
                t.batch.push((part, w));
                if t.batch.len() >= self.batch_max {
                    t.seal(self.batch_max);
                    t.drain();
                }
            }
            None => {
                let local = self
                    .local
                    .as_ref()
                    .expect("a partition with no ring is on this core");
                local.receiver.borrow_mut().deliver(part, w);
            }
        }
    }

    fn broadcast(
        &mut self,
        m: impl Fn() -> Message<Routed<W>>,
        local: impl FnOnce(&mut Receiver<W>, usize),
    ) {
        for t in self.targets.iter_mut().flatten() {
            t.seal(self.batch_max);
            t.pending.push_back(m());
            t.drain();
        }
        if let Some(l) = &self.local {
            local(&mut l.receiver.borrow_mut(), l.input);
        }
    }
}

/// One upstream partition's handle on an `OutputPort`.
pub(crate) struct ExchangeInput<In, W> {
    pub(crate) index: usize,
    pub(crate) port: Rc<RefCell<OutputPort<In, W>>>,
}

impl<In, W: Clone> OutputPort<In, W> {
    /// Sends a control item, in order, to every core that receives this exchange.
    fn broadcast_control(&mut self, c: Control) {
        let m = move || match c {
            Control::Barrier(b) => Message::Barrier(b),
            Control::Watermark(w) => Message::Watermark(w),
        };
        self.broadcast(m, |r, i| r.on_control(i, c));
    }
}

impl<In, W: Clone> Emit<In> for ExchangeInput<In, W> {
    #[inline]
    fn data(&mut self, rec: In) {
        self.port.borrow_mut().send(rec);
    }

    fn control(&mut self, c: Control) {
        let mut port = self.port.borrow_mut();
        let forward = match c {
            Control::Barrier(b) => port.inputs.on_barrier(self.index, b).map(Control::Barrier),
            Control::Watermark(w) => port
                .inputs
                .on_watermark(self.index, w)
                .map(Control::Watermark),
        };
        if let Some(c) = forward {
            port.broadcast_control(c);
        }
    }

    fn end(&mut self) {
        let mut port = self.port.borrow_mut();
        let f = port.inputs.on_end(self.index);
        for c in f.controls() {
            port.broadcast_control(c);
        }
        if f.end {
            port.broadcast(|| Message::End, |r, i| r.on_end(i));
        }
    }
}

impl<In, W: Clone> Port for OutputPort<In, W> {
    fn flush(&mut self, now_ns: u64) -> bool {
        self.now_ns = now_ns;
        let mut moved = false;
        for t in self.targets.iter_mut().flatten() {
            if !t.batch.is_empty() {
                // Adaptive batching: go now if the consumer has caught up, else wait for
                // a full batch or the deadline.
                let consumer_idle = t.pending.is_empty() && t.ring.is_empty();
                let overdue = now_ns.saturating_sub(t.batch_started_ns) >= self.deadline_ns;
                if consumer_idle || overdue || t.batch.len() >= self.batch_max {
                    t.seal(self.batch_max);
                }
            }
            if !t.pending.is_empty() && t.drain() > 0 {
                moved = true;
            }
        }
        moved
    }

    fn is_blocked(&self) -> bool {
        self.targets.iter().flatten().any(|t| !t.pending.is_empty())
            || self
                .local
                .as_ref()
                .is_some_and(|l| l.receiver.borrow().held_full())
            || self.local_ports.iter().any(|p| p.borrow().is_blocked())
    }

    fn can_progress(&self, now_ns: u64) -> bool {
        self.targets.iter().flatten().any(|t| {
            (!t.pending.is_empty() && !t.ring.is_full())
                || (!t.batch.is_empty()
                    && (t.ring.is_empty()
                        || now_ns.saturating_sub(t.batch_started_ns) >= self.deadline_ns))
        })
    }

    fn is_drained(&self) -> bool {
        self.targets
            .iter()
            .flatten()
            .all(|t| t.pending.is_empty() && t.batch.is_empty())
    }

    fn next_deadline(&self) -> Option<u64> {
        self.targets
            .iter()
            .flatten()
            .filter(|t| !t.batch.is_empty())
            .map(|t| t.batch_started_ns + self.deadline_ns)
            .min()
    }
}

/// The receiving end of one ring.
pub(crate) struct RecvInput<W> {
    /// `None` for the input from this same core (delivered by direct calls).
    pub(crate) ring: Option<Consumer<Message<Routed<W>>>>,
    /// The producing core's doorbell (rung when slots free up).
    pub(crate) producer: Arc<Doorbell>,
    /// The producing core, for messages.
    pub(crate) core: crate::ids::CoreId,
}

/// How a receiver treats barriers.
#[derive(Clone)]
pub(crate) struct Alignment {
    /// Exactly-once: hold an input that delivered a barrier until all have.
    pub(crate) hold: bool,
    /// Unaligned checkpoints: after this long aligning (ns; 0 = at once), forward the
    /// barrier and persist what still arrives ahead of it as channel state.
    pub(crate) unaligned_after_ns: Option<u64>,
    /// This core's checkpoint participant state (alignment statistics).
    pub(crate) core: Rc<RefCell<CoreCheckpoints>>,
    /// The receiver as a participant (it reports its channel state), when unaligned.
    pub(crate) participant: Option<Participant>,
    /// The job clock.
    pub(crate) clock: MonotonicClock,
    /// The exchange's name, for messages.
    pub(crate) name: Rc<str>,
    /// This core's index (the channel state's owner partition).
    pub(crate) core_index: usize,
}

/// What the local input delivered while it was held back by alignment.
enum Held<W> {
    Data(u32, W),
    Control(Control),
    End,
}

/// An unaligned checkpoint in progress at a receiver: the barrier went ahead; records
/// still arriving before it on the other inputs are copied here.
struct Capture<W> {
    id: CheckpointId,
    waiting: Vec<bool>,
    records: Vec<Routed<W>>,
}

/// Most records held back from the local input during alignment before the port that
/// feeds it reports itself blocked (its drivers then stop).
const HELD_MAX: usize = 4096;

/// One exchange's receiving side on one core.
pub(crate) struct Receiver<W> {
    inputs: Vec<RecvInput<W>>,
    set: InputSet,
    /// Partition index → that partition's chain, for the partitions on this core.
    chains: Vec<Option<BoxEmit<W>>>,
    /// Messages taken from one ring per poll.
    burst: usize,
    align: Option<Alignment>,
    /// Per input: held back until the barrier being aligned completes.
    blocked: Vec<bool>,
    /// Since when (ns) the barrier being aligned is waited for.
    aligning_since: Option<(CheckpointId, u64)>,
    /// The barrier being aligned is the final one: it never goes unaligned.
    aligning_last: bool,
    local: Option<usize>,
    held: VecDeque<Held<W>>,
    /// Per input: messages read ahead of processing while looking for an unaligned
    /// barrier (processed before the ring).
    ahead: Vec<VecDeque<Message<Routed<W>>>>,
    capture: Option<Capture<W>>,
    /// The barrier forwarded early (unaligned), not to be forwarded again.
    forwarded_early: Option<CheckpointId>,
    codec: Option<Arc<ChannelCodec<W>>>,
    /// Channel state of the restored checkpoint for this core's partitions, delivered
    /// before anything else.
    restored: Option<Vec<Routed<W>>>,
}

impl<W: Clone> Receiver<W> {
    pub(crate) fn new(
        inputs: Vec<RecvInput<W>>,
        chains: Vec<Option<BoxEmit<W>>>,
        burst: usize,
        align: Option<Alignment>,
    ) -> Self {
        let set = InputSet::new(inputs.len());
        let local = inputs.iter().position(|i| i.ring.is_none());
        Self {
            blocked: vec![false; inputs.len()],
            ahead: (0..inputs.len()).map(|_| VecDeque::new()).collect(),
            inputs,
            set,
            chains,
            burst,
            align,
            aligning_since: None,
            aligning_last: false,
            local,
            held: VecDeque::new(),
            capture: None,
            forwarded_early: None,
            codec: None,
            restored: None,
        }
    }

    /// Persists channel state with `codec`, and delivers `restored` first.
    pub(crate) fn with_channel_state(
        mut self,
        codec: Option<Arc<ChannelCodec<W>>>,
        restored: Vec<Routed<W>>,
    ) -> Self {
        self.codec = codec;
        self.restored = (!restored.is_empty()).then_some(restored);
        self
    }

    fn replay_restored(&mut self) {
        if let Some(rs) = self.restored.take() {
            for (p, w) in rs {
                self.route(p, w);
            }
        }
    }

    fn local_held(&self, input: usize) -> bool {
        self.local == Some(input) && self.blocked[input]
    }

    #[inline]
    pub(crate) fn deliver(&mut self, part: u32, w: W) {
        if self.restored.is_some() {
            self.replay_restored();
        }
        if let Some(l) = self.local {
            if self.blocked[l] {
                self.held.push_back(Held::Data(part, w));
                return;
            }
            if let Some(c) = &mut self.capture {
                if c.waiting[l] {
                    c.records.push((part, w.clone()));
                }
            }
        }
        self.route(part, w);
    }

    #[inline]
    fn route(&mut self, part: u32, w: W) {
        match self.chains.get_mut(part as usize) {
            Some(Some(chain)) => chain.data(w),
            _ => panic!("record for partition {part}, which is not on this core"),
        }
    }

    fn forward(&mut self, c: Control) {
        self.chains
            .iter_mut()
            .flatten()
            .for_each(|ch| ch.control(c));
    }

    /// Whether the local input's held-back records reached their bound.
    pub(crate) fn held_full(&self) -> bool {
        self.held.len() >= HELD_MAX
    }

    pub(crate) fn on_control(&mut self, input: usize, c: Control) {
        if self.local_held(input) {
            self.held.push_back(Held::Control(c));
            return;
        }
        self.control_now(input, c);
    }

    fn control_now(&mut self, input: usize, c: Control) {
        match c {
            Control::Barrier(b) => self.barrier_now(input, b),
            Control::Watermark(w) => {
                if let Some(w) = self.set.on_watermark(input, w) {
                    self.forward(Control::Watermark(w));
                }
            }
        }
    }

    fn barrier_now(&mut self, input: usize, b: crate::message::Barrier) {
        let hold = self.align.as_ref().is_some_and(|a| a.hold);
        if let Some(c) = &mut self.capture {
            if b.id == c.id {
                c.waiting[input] = false;
                if let Some(done) = self.set.on_barrier(input, b) {
                    self.barrier_complete(done);
                }
                self.finish_capture_if_done();
            } else {
                // The next checkpoint's barrier, while this one is still capturing: hold
                // the input (aligned) until the capture is over.
                let _ = self.set.on_barrier(input, b);
                self.blocked[input] = true;
            }
            return;
        }
        match self.set.on_barrier(input, b) {
            Some(b) => self.barrier_complete(b),
            None if hold => {
                // The final checkpoint is aligned: nothing may be processed after its
                // barrier, since no later checkpoint commits what that would output.
                self.aligning_last |= b.last;
                let unaligned_now = self
                    .align
                    .as_ref()
                    .and_then(|a| a.unaligned_after_ns)
                    .is_some_and(|t| t == 0)
                    && self.codec.is_some()
                    && !b.last;
                if unaligned_now {
                    if self.aligning_since.is_none() {
                        self.start_aligning(b.id);
                    }
                    self.go_unaligned(b.id);
                } else {
                    self.blocked[input] = true;
                    if self.aligning_since.is_none() {
                        self.start_aligning(b.id);
                    }
                }
            }
            None => {}
        }
    }

    fn start_aligning(&mut self, id: CheckpointId) {
        let Some(a) = &self.align else { return };
        let now = a.clock.now_ns();
        self.aligning_since = Some((id, now));
        let waiting: Vec<crate::ids::CoreId> = self
            .inputs
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.set.has_delivered(*i, id))
            .map(|(_, inp)| inp.core)
            .collect();
        a.core.borrow_mut().note_aligning(id, &a.name, waiting, now);
    }

    /// Forwards barrier `id` now, ahead of what the inputs without it still carry, and
    /// starts capturing that as channel state.
    fn go_unaligned(&mut self, id: CheckpointId) {
        if let (Some(a), Some((aid, since))) = (&self.align, self.aligning_since.take()) {
            let now = a.clock.now_ns();
            a.core
                .borrow_mut()
                .note_alignment(aid, &a.name, now.saturating_sub(since), now);
        }
        let waiting: Vec<bool> = (0..self.inputs.len())
            .map(|i| !self.set.has_delivered(i, id))
            .collect();
        // Records an earlier capture read ahead and that are not processed yet are
        // ahead of this barrier too: the snapshot taken as it goes forward does not
        // hold them, and the ring no longer does. They are this checkpoint's channel
        // state as much as what is still in the ring (issue 13: without this, an
        // unaligned checkpoint taken while a backlog was read ahead lost that backlog
        // on restore).
        let mut records = Vec::new();
        for (i, ahead) in self.ahead.iter().enumerate() {
            debug_assert!(
                waiting[i] || ahead.is_empty(),
                "an input that delivered barrier {id:?} has nothing read ahead of it"
            );
            if !waiting[i] {
                continue;
            }
            for m in ahead {
                if let Message::Data(batch) = m {
                    records.extend(batch.iter().cloned());
                }
            }
        }
        self.capture = Some(Capture {
            id,
            waiting,
            records,
        });
        self.forwarded_early = Some(id);
        self.forward(Control::Barrier(crate::message::Barrier::new(id)));
        self.blocked.iter_mut().for_each(|x| *x = false);
        self.replay_held();
        self.finish_capture_if_done();
    }

    fn finish_capture_if_done(&mut self) {
        if !self
            .capture
            .as_ref()
            .is_some_and(|c| c.waiting.iter().all(|w| !w))
        {
            return;
        }
        let c = self.capture.take().expect("checked above");
        self.report_channel(c.id, c.records);
    }

    fn report_channel(&mut self, id: CheckpointId, records: Vec<Routed<W>>) {
        let Some(a) = &self.align else { return };
        let Some(p) = &a.participant else { return };
        let now = a.clock.now_ns();
        let count = records.len() as u64;
        let mut blobs = Vec::new();
        if !records.is_empty() {
            let codec = self.codec.as_ref().expect("capturing needs a codec");
            match (codec.encode)(&records) {
                Ok(bytes) => {
                    let owner = rill_storage::Owner::new(
                        crate::checkpoint::core::channel_operator_id(&a.name),
                        rill_storage::PartitionId(a.core_index as u32),
                        rill_storage::KeyGroupRange::default(),
                    );
                    blobs.push((owner, bytes));
                }
                Err(e) => {
                    tracing::error!("channel state of `{}`: {e}", a.name);
                    return; // Never acked: the checkpoint expires and says so.
                }
            }
        }
        p.channel(id, blobs, count, now);
    }

    fn barrier_complete(&mut self, b: crate::message::Barrier) {
        self.aligning_last = false;
        if self.forwarded_early == Some(b.id) {
            self.forwarded_early = None;
            return;
        }
        if let (Some(a), Some((id, since))) = (&self.align, self.aligning_since.take()) {
            let now = a.clock.now_ns();
            a.core
                .borrow_mut()
                .note_alignment(id, &a.name, now.saturating_sub(since), now);
        }
        self.forward(Control::Barrier(b));
        self.blocked.iter_mut().for_each(|x| *x = false);
        self.report_channel(b.id, Vec::new());
        self.replay_held();
    }

    /// Delivers what the local input sent while held, until it is held again.
    fn replay_held(&mut self) {
        let Some(l) = self.local else { return };
        while !self.blocked[l] {
            let Some(h) = self.held.pop_front() else {
                break;
            };
            match h {
                Held::Data(p, w) => {
                    if let Some(c) = &mut self.capture {
                        if c.waiting[l] {
                            c.records.push((p, w.clone()));
                        }
                    }
                    self.route(p, w)
                }
                Held::Control(c) => self.control_now(l, c),
                Held::End => self.end_now(l),
            }
        }
    }

    pub(crate) fn on_end(&mut self, input: usize) {
        if self.local_held(input) {
            self.held.push_back(Held::End);
            return;
        }
        self.end_now(input);
    }

    fn end_now(&mut self, input: usize) {
        if let Some(c) = &mut self.capture {
            c.waiting[input] = false;
        }
        let f = self.set.on_end(input);
        if let Some(b) = f.barrier {
            self.barrier_complete(b);
        }
        self.finish_capture_if_done();
        if let Some(w) = f.watermark {
            self.forward(Control::Watermark(w));
        }
        if f.end {
            self.chains.iter_mut().flatten().for_each(|ch| ch.end());
        }
    }

    /// When alignment switches to unaligned, if it may (ns).
    pub(crate) fn deadline(&self) -> Option<u64> {
        let t = self.align.as_ref()?.unaligned_after_ns?;
        self.codec.as_ref()?;
        if self.aligning_last {
            return None;
        }
        self.aligning_since.map(|(_, since)| since + t)
    }

    /// Reads the rings of inputs that still owe the unaligned barrier ahead of
    /// processing, copying their records as channel state, up to the barrier.
    fn scan_ahead(&mut self) -> bool {
        let Some(id) = self.capture.as_ref().map(|c| c.id) else {
            return false;
        };
        let mut any = false;
        for i in 0..self.inputs.len() {
            if !self.capture.as_ref().is_some_and(|c| c.waiting[i]) {
                continue;
            }
            let Some(ring) = self.inputs[i].ring.as_mut() else {
                continue;
            };
            let mut popped = false;
            while let Some(m) = ring.try_pop() {
                popped = true;
                let c = self.capture.as_mut().expect("capturing");
                match m {
                    Message::Data(batch) => {
                        c.records.extend(batch.iter().cloned());
                        self.ahead[i].push_back(Message::Data(batch));
                    }
                    Message::Barrier(b) if b.id == id => {
                        c.waiting[i] = false;
                        if let Some(done) = self.set.on_barrier(i, b) {
                            self.barrier_complete(done);
                        }
                        break;
                    }
                    Message::End => {
                        c.waiting[i] = false;
                        self.ahead[i].push_back(Message::End);
                        break;
                    }
                    other => self.ahead[i].push_back(other),
                }
            }
            if popped {
                any = true;
                self.inputs[i].producer.notify();
            }
        }
        self.finish_capture_if_done();
        any
    }

    /// Handles one message; returns how much work it was (records, at least 1), or
    /// `None` at end-of-stream.
    fn handle(&mut self, i: usize, m: Message<Routed<W>>) -> Option<usize> {
        match m {
            Message::Data(batch) => {
                let n = batch.len().max(1);
                for (part, w) in batch {
                    self.route(part, w);
                }
                return Some(n);
            }
            Message::Barrier(b) => self.control_now(i, Control::Barrier(b)),
            Message::Watermark(w) => self.control_now(i, Control::Watermark(w)),
            Message::End => {
                self.end_now(i);
                return None;
            }
        }
        Some(1)
    }

    /// Takes up to about `burst` records (at least one message) from each input that is
    /// not held back, so that one step stays short and the core keeps answering its
    /// checkpoint messages under load. Returns whether anything arrived.
    pub(crate) fn poll(&mut self) -> bool {
        if self.restored.is_some() {
            self.replay_restored();
        }
        let mut any = false;
        if let (Some(deadline), Some((id, _))) = (self.deadline(), self.aligning_since) {
            let now = self.align.as_ref().expect("aligning").clock.now_ns();
            if now >= deadline && self.capture.is_none() {
                self.go_unaligned(id);
                any = true;
            }
        }
        any |= self.scan_ahead();
        for i in 0..self.inputs.len() {
            let mut taken = 0;
            while taken < self.burst && !self.blocked[i] {
                let Some(m) = self.ahead[i].pop_front() else {
                    break;
                };
                match self.handle(i, m) {
                    Some(n) => taken += n,
                    None => break,
                }
            }
            let mut popped = 0;
            while taken < self.burst && !self.blocked[i] && self.ahead[i].is_empty() {
                if self.capture.as_ref().is_some_and(|c| c.waiting[i]) {
                    break; // scan_ahead reads this ring until the barrier.
                }
                let Some(ring) = self.inputs[i].ring.as_mut() else {
                    break;
                };
                let Some(m) = ring.try_pop() else { break };
                popped += 1;
                match self.handle(i, m) {
                    Some(n) => taken += n,
                    None => break,
                }
            }
            if popped > 0 {
                self.inputs[i].producer.notify();
            }
            any |= taken > 0;
        }
        any
    }

    /// Whether any ring that is not held back has something waiting.
    pub(crate) fn has_input(&self) -> bool {
        self.restored.is_some()
            || self.inputs.iter().enumerate().any(|(i, inp)| {
                !self.blocked[i]
                    && (!self.ahead[i].is_empty()
                        || inp.ring.as_ref().is_some_and(|r| !r.is_empty()))
            })
    }

    /// Whether every input has ended.
    pub(crate) fn is_done(&self) -> bool {
        self.set.all_ended() && self.ahead.iter().all(VecDeque::is_empty)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::channel;

    /// A port on core 0 whose every record goes to core 1 over a ring of `slots`.
    fn port(
        slots: usize,
        batch_max: usize,
        deadline_ns: u64,
    ) -> (ExchangeInput<u64, u64>, Consumer<Message<Routed<u64>>>) {
        let (tx, rx) = channel::<Message<Routed<u64>>>(slots);
        let port = OutputPort::new(
            Arc::new(|x: u64, _rs: &mut RouteState| (0, x)),
            PortWiring {
                placement: Rc::from(vec![1usize]),
                rings: vec![None, Some((tx, Arc::new(Doorbell::new())))],
                local: None,
                local_inputs: 1,
                parallelism: 1,
                max_key_groups: 128,
                batch_max,
                flush_deadline_ns: deadline_ns,
            },
        );
        (
            ExchangeInput {
                index: 0,
                port: Rc::new(RefCell::new(port)),
            },
            rx,
        )
    }

    fn batch_len(m: Option<Message<Routed<u64>>>) -> usize {
        match m {
            Some(Message::Data(b)) => b.len(),
            other => panic!("expected a data batch, got {other:?}"),
        }
    }

    #[test]
    fn an_idle_consumer_gets_each_record_at_once_a_busy_one_gets_batches() {
        let (mut input, mut rx) = port(8, 100, 1_000);
        let p = input.port.clone();
        // Consumer idle (ring empty): the record goes on the next flush.
        input.data(1);
        assert!(p.borrow_mut().flush(0));
        assert_eq!(batch_len(rx.try_pop()), 1);
        // Consumer busy (it has not taken the last batch): records wait for the deadline.
        input.data(2);
        assert!(p.borrow_mut().flush(10));
        input.data(3);
        input.data(4);
        assert!(
            !p.borrow_mut().flush(500),
            "before the deadline nothing moves"
        );
        // A batch is stamped with the last flush time (10 here): deadlines err early.
        assert_eq!(p.borrow().next_deadline(), Some(10 + 1_000));
        assert!(p.borrow_mut().flush(1_600), "the deadline sends the batch");
        assert_eq!(batch_len(rx.try_pop()), 1);
        assert_eq!(batch_len(rx.try_pop()), 2);
    }

    #[test]
    fn a_full_batch_goes_at_once_and_a_full_ring_blocks_without_dropping() {
        let (mut input, mut rx) = port(2, 4, u64::MAX / 2);
        let p = input.port.clone();
        for x in 0..20 {
            input.data(x);
        }
        // Two batches of 4 fit the ring; the rest waits and the port is blocked.
        assert!(p.borrow().is_blocked());
        assert!(!p.borrow().can_progress(0));
        let mut got = Vec::new();
        while let Some(m) = rx.try_pop() {
            if let Message::Data(b) = m {
                got.extend(b.into_iter().map(|(_, x)| x));
            }
            if p.borrow().is_blocked() {
                assert!(
                    p.borrow().can_progress(0),
                    "a freed slot lets the port move"
                );
            }
            p.borrow_mut().flush(0);
        }
        input.end();
        p.borrow_mut().flush(0);
        while let Some(m) = rx.try_pop() {
            match m {
                Message::Data(b) => got.extend(b.into_iter().map(|(_, x)| x)),
                Message::End => got.push(u64::MAX),
                other => panic!("unexpected {other:?}"),
            }
            p.borrow_mut().flush(0);
        }
        let mut want: Vec<u64> = (0..20).collect();
        want.push(u64::MAX);
        assert_eq!(got, want, "every record once, in order, then end-of-stream");
        assert!(p.borrow().is_drained() && !p.borrow().is_blocked());
    }
}
