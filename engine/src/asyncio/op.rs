//! The async operator's per-partition state machine. The chain calls it (`Emit`) with
//! records and control items; the shard loop calls it as a `Port` (`flush`) every round
//! to poll the futures that were woken, fire timers, time requests out, retry them and
//! emit what is ready. It never blocks and never waits for a request at a barrier (see
//! the module doc of `asyncio` for the one exception): what a barrier archives is the
//! operator's pending sequence — inputs whose results are not out and the watermarks
//! queued between them, in order — and a restore replays that sequence first.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

use super::policy::{Admit, Breaker, BreakerState};
use super::{AsyncMode, AsyncOptions, BoxFuture, Capacity, OnTimeout, Timers};
use crate::checkpoint::codec::Record;
use crate::checkpoint::core::Participant;
use crate::dataflow::exchange::Port;
use crate::dataflow::ops::{BoxEmit, Emit, FailureSlot};
use crate::error::EngineError;
use crate::ids::CheckpointId;
use crate::message::{Control, Watermark};
use crate::metrics::MetricsHandle;

/// The storage owner id of the in-flight inputs of async operator `op`.
pub(crate) fn async_operator_id(op: &str) -> rill_storage::OperatorId {
    crate::checkpoint::core::state_operator_id(op, "\0async")
}

/// The storage owner id of the watermarks queued among those inputs: per partition, a
/// list of (number of archived inputs before it, watermark).
pub(crate) fn async_watermark_id(op: &str) -> rill_storage::OperatorId {
    crate::checkpoint::core::state_operator_id(op, "\0async-watermarks")
}

/// One element of the sequence a barrier archives and a restore replays.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Pending<T> {
    /// An input whose result had not been emitted.
    Input(T),
    /// A watermark that had not been forwarded (it waited for results before it).
    Watermark(Watermark),
}

/// What one partition archived: its inputs, and its watermarks as (number of inputs
/// before it, watermark).
pub(crate) type Archive<T> = (Vec<T>, Vec<(u64, u64)>);

/// The sequence to replay from what old partitions archived (their inputs, and their
/// watermarks as (inputs before it, watermark)). One partition's archive is replayed
/// exactly. Several (a restore at another parallelism) are replayed input by input,
/// partition after partition, then the highest of their real watermarks: each was below
/// every record the sources send after the barrier, but one partition's watermark may be
/// above another partition's archived inputs, so none may come before them.
pub(crate) fn replay<T>(parts: Vec<Archive<T>>) -> Vec<Pending<T>> {
    let single = parts.len() == 1;
    let mut out = Vec::new();
    let mut highest: Option<u64> = None;
    for (inputs, marks) in parts {
        let mut marks = marks.into_iter().peekable();
        for (i, t) in inputs.into_iter().enumerate() {
            while let Some((_, w)) = marks.next_if(|(at, _)| *at <= i as u64) {
                if single {
                    out.push(Pending::Watermark(Watermark(w)));
                }
                if !Watermark(w).is_idle() {
                    highest = highest.max(Some(w));
                }
            }
            out.push(Pending::Input(t));
        }
        for (_, w) in marks {
            if single {
                out.push(Pending::Watermark(Watermark(w)));
            } else if !Watermark(w).is_idle() {
                highest = highest.max(Some(w));
            }
        }
    }
    if !single {
        if let Some(w) = highest {
            out.push(Pending::Watermark(Watermark(w)));
        }
    }
    out
}

/// Woken request sequence numbers, filled by wakers (which must be `Send`).
type ReadyList = Arc<Mutex<Vec<u64>>>;

struct ReqWake {
    seq: u64,
    ready: ReadyList,
}

impl Wake for ReqWake {
    fn wake(self: Arc<Self>) {
        self.ready.lock().expect("ready list").push(self.seq);
    }
}

struct Req<T, U> {
    input: T,
    attempts: u32,
    issued_ns: u64,
    deadline_ns: u64,
    fut: Option<BoxFuture<U>>,
    waker: Waker,
    result: Option<Vec<U>>,
}

enum Slot {
    Req(u64),
    Mark(Control),
}

enum Item<T> {
    Data(T),
    Control(Control),
    End,
}

/// Adaptive-capacity bookkeeping.
struct Auto {
    min: usize,
    max: usize,
    window_start_ns: u64,
    arrivals: u64,
    latency_sum_ns: u64,
    completions: u64,
}

const AUTO_WINDOW_NS: u64 = 100_000_000;

/// What the operator needs from its core.
pub(crate) struct AsyncParts {
    pub(crate) name: String,
    pub(crate) partition: u32,
    pub(crate) timers: Timers,
    pub(crate) failure: FailureSlot,
    pub(crate) metrics: MetricsHandle,
    pub(crate) ckpt: Option<Participant>,
    /// Whether every source on this core has finished (barriers then wait, see above).
    pub(crate) sources_done: Box<dyn Fn() -> bool>,
}

/// One partition of an async operator.
pub(crate) struct AsyncCore<T, U> {
    p: AsyncParts,
    opts: AsyncOptions<T, U>,
    call: Box<dyn FnMut(T) -> BoxFuture<U>>,
    down: BoxEmit<U>,
    ready: ReadyList,
    reqs: HashMap<u64, Req<T, U>>,
    queue: VecDeque<Slot>,
    /// Sequence numbers at which a watermark boundary starts (unordered mode).
    marks: VecDeque<u64>,
    waiting: VecDeque<Item<T>>,
    next_seq: u64,
    timeouts: BTreeSet<(u64, u64)>,
    retries: BTreeSet<(u64, u64)>,
    breaker: Option<Breaker>,
    limit: usize,
    auto: Option<Auto>,
    in_flight_max: usize,
    reported_capacity: usize,
    /// Since when every slot has been taken (requests wait for capacity), ns.
    full_since: Option<u64>,
    ended: bool,
    failed: bool,
    /// What each barrier archived, in order (tests look at it without a checkpoint).
    #[cfg(test)]
    pub(crate) archived: Vec<(CheckpointId, Vec<Pending<T>>)>,
}

impl<T: Clone + Record + 'static, U: 'static> AsyncCore<T, U> {
    pub(crate) fn new(
        p: AsyncParts,
        opts: AsyncOptions<T, U>,
        call: Box<dyn FnMut(T) -> BoxFuture<U>>,
        down: BoxEmit<U>,
        restored: Vec<Pending<T>>,
    ) -> Self {
        let (limit, auto) = match opts.capacity {
            Capacity::Fixed(n) => (n.max(1), None),
            Capacity::Auto { min, max } => (
                min.max(1),
                Some(Auto {
                    min: min.max(1),
                    max: max.max(min.max(1)),
                    window_start_ns: 0,
                    arrivals: 0,
                    latency_sum_ns: 0,
                    completions: 0,
                }),
            ),
        };
        let inputs = restored
            .iter()
            .filter(|x| matches!(x, Pending::Input(_)))
            .count();
        p.metrics.add("async_restored_requests", inputs as u64);
        // Partitions and their starting bounds, for `rill doctor` (N in model N/t).
        p.metrics.add("async_partitions", 1);
        p.metrics.add("async_capacity_start", limit as u64);
        Self {
            breaker: opts.breaker.map(Breaker::new),
            p,
            opts,
            call,
            down,
            ready: Arc::default(),
            reqs: HashMap::new(),
            queue: VecDeque::new(),
            marks: VecDeque::new(),
            waiting: restored
                .into_iter()
                .map(|x| match x {
                    Pending::Input(t) => Item::Data(t),
                    Pending::Watermark(w) => Item::Control(Control::Watermark(w)),
                })
                .collect(),
            next_seq: 0,
            timeouts: BTreeSet::new(),
            retries: BTreeSet::new(),
            limit,
            auto,
            in_flight_max: 0,
            reported_capacity: 0,
            full_since: None,
            ended: false,
            failed: false,
            #[cfg(test)]
            archived: Vec::new(),
        }
    }

    /// The current in-flight bound.
    #[cfg(test)]
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// Requests issued and not yet emitted.
    #[cfg(test)]
    pub(crate) fn in_flight(&self) -> usize {
        self.reqs.len()
    }

    fn now(&self) -> u64 {
        self.p.timers.now_ns()
    }

    fn fail(&mut self, reason: String) {
        self.failed = true;
        self.p.failure.fail(EngineError::Operator {
            operator: self.p.name.clone(),
            partition: self.p.partition,
            reason,
        });
    }

    fn on_data(&mut self, rec: T) {
        if let Some(a) = &mut self.auto {
            a.arrivals += 1;
        }
        self.waiting.push_back(Item::Data(rec));
        self.admit();
    }

    fn on_control(&mut self, c: Control) {
        match c {
            Control::Barrier(b) if !(self.p.sources_done)() => {
                // Emit what is already due in output order, archive every input whose
                // result is not out yet and the watermarks among them (all of it came
                // before the barrier), forward the barrier at once.
                self.emit_ready();
                self.snapshot(b.id, self.waiting.len());
                self.down.control(c);
            }
            _ => {
                self.waiting.push_back(Item::Control(c));
                self.admit();
            }
        }
    }

    /// Archives the pending sequence for barrier `id`: the queue, then the first
    /// `waiting` items (those that came before the barrier).
    fn snapshot(&mut self, id: CheckpointId, waiting: usize) {
        #[cfg(test)]
        {
            let pending = self.pending(waiting);
            self.archived.push((id, pending));
        }
        let Some(part) = &self.p.ckpt else { return };
        if !part.wants(id) {
            return;
        }
        let mut inputs = Vec::new();
        let mut marks: Vec<(u64, u64)> = Vec::new();
        for x in self.pending(waiting) {
            match x {
                Pending::Input(t) => inputs.push(t),
                Pending::Watermark(w) => marks.push((inputs.len() as u64, w.0)),
            }
        }
        let count = inputs.len() as u64;
        let owner = |op| {
            rill_storage::Owner::new(
                op,
                rill_storage::PartitionId(self.p.partition),
                rill_storage::KeyGroupRange::default(),
            )
        };
        let mut blobs = Vec::new();
        let encoded = [
            (!inputs.is_empty()).then(|| T::encode(&inputs)),
            (!marks.is_empty()).then(|| <(u64, u64)>::encode(&marks)),
        ];
        let ids = [
            async_operator_id(&self.p.name),
            async_watermark_id(&self.p.name),
        ];
        for (bytes, op) in encoded.into_iter().zip(ids) {
            match bytes {
                None => {}
                Some(Ok(bytes)) => blobs.push((owner(op), bytes)),
                Some(Err(e)) => {
                    let reason = format!("archiving in-flight inputs for checkpoint {}: {e}", id.0);
                    self.fail(reason);
                    return;
                }
            }
        }
        self.p.metrics.add("async_snapshot_requests", count);
        let part = part.clone();
        part.channel(id, blobs, count, self.now());
    }

    /// The pending sequence in input order: the inputs of issued requests whose result
    /// has not been emitted (in flight or held for ordering) and the watermarks queued
    /// among them, then the first `waiting` items (inputs waiting for capacity and the
    /// watermarks behind them).
    fn pending(&self, waiting: usize) -> Vec<Pending<T>> {
        let mut out = Vec::new();
        for s in &self.queue {
            match s {
                Slot::Req(seq) => {
                    if let Some(r) = self.reqs.get(seq) {
                        out.push(Pending::Input(r.input.clone()));
                    }
                }
                Slot::Mark(Control::Watermark(w)) => out.push(Pending::Watermark(*w)),
                Slot::Mark(Control::Barrier(_)) => unreachable!("barriers are never queued"),
            }
        }
        for i in self.waiting.iter().take(waiting) {
            match i {
                Item::Data(t) => out.push(Pending::Input(t.clone())),
                Item::Control(Control::Watermark(w)) => out.push(Pending::Watermark(*w)),
                Item::Control(Control::Barrier(_)) | Item::End => break,
            }
        }
        out
    }

    /// Moves waiting items in while capacity allows (after emitting what is done, so
    /// that the slots it frees are used in the same step).
    fn admit(&mut self) {
        self.emit_ready();
        while !self.failed {
            match self.waiting.front() {
                None => break,
                Some(Item::Data(_)) => {
                    if self.reqs.len() >= self.limit {
                        break;
                    }
                    let Some(Item::Data(t)) = self.waiting.pop_front() else {
                        unreachable!("front is data")
                    };
                    self.issue(t);
                }
                Some(Item::Control(Control::Barrier(b))) => {
                    if !self.queue.is_empty() {
                        break;
                    }
                    // Every result before the barrier is out; what waits behind it came
                    // after it, so the barrier archives nothing.
                    let id = b.id;
                    let c = Control::Barrier(*b);
                    self.waiting.pop_front();
                    self.snapshot(id, 0);
                    self.down.control(c);
                }
                Some(Item::Control(c)) => {
                    let c = *c;
                    self.waiting.pop_front();
                    if self.queue.is_empty() {
                        self.down.control(c);
                    } else {
                        self.marks.push_back(self.next_seq);
                        self.queue.push_back(Slot::Mark(c));
                    }
                }
                Some(Item::End) => {
                    if !self.queue.is_empty() {
                        break;
                    }
                    self.waiting.pop_front();
                    self.ended = true;
                    self.down.end();
                }
            }
        }
        self.emit_ready();
        self.note_fullness();
    }

    /// Accounts the time every slot is taken (`async_full_us`): the operator is then
    /// the bottleneck unless capacity grows or IO gets faster (model N/t).
    fn note_fullness(&mut self) {
        let full = self.reqs.len() >= self.limit;
        match (full, self.full_since) {
            (true, None) => self.full_since = Some(self.now()),
            (false, Some(since)) => {
                self.full_since = None;
                let us = self.now().saturating_sub(since) / 1_000;
                self.p.metrics.add("async_full_us", us);
            }
            _ => {}
        }
    }

    fn issue(&mut self, input: T) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let now = self.now();
        let waker = Waker::from(Arc::new(ReqWake {
            seq,
            ready: self.ready.clone(),
        }));
        let deadline_ns = now.saturating_add(self.opts.timeout.as_nanos() as u64);
        self.reqs.insert(
            seq,
            Req {
                input,
                attempts: 0,
                issued_ns: now,
                deadline_ns,
                fut: None,
                waker,
                result: None,
            },
        );
        self.queue.push_back(Slot::Req(seq));
        self.timeouts.insert((deadline_ns, seq));
        if self.reqs.len() > self.in_flight_max {
            self.p.metrics.add(
                "async_in_flight_max",
                (self.reqs.len() - self.in_flight_max) as u64,
            );
            self.in_flight_max = self.reqs.len();
        }
        self.attempt(seq, now);
    }

    /// Starts an attempt of `seq` (if the breaker lets it) and polls it once.
    fn attempt(&mut self, seq: u64, now: u64) {
        if let Some(b) = &mut self.breaker {
            if b.admit(now) == Admit::Reject {
                self.p.metrics.add("async_breaker_rejected", 1);
                self.give_up(seq, "was failed fast by the open circuit breaker");
                return;
            }
        }
        let Some(r) = self.reqs.get_mut(&seq) else {
            return;
        };
        r.attempts += 1;
        r.fut = Some((self.call)(r.input.clone()));
        self.p.metrics.add("async_attempts", 1);
        self.poll_req(seq);
    }

    fn poll_req(&mut self, seq: u64) {
        let Some(r) = self.reqs.get_mut(&seq) else {
            return;
        }; // late: ignored
        let Some(fut) = r.fut.as_mut() else { return }; // completed or timed out
        let waker = r.waker.clone();
        let mut cx = Context::from_waker(&waker);
        let Poll::Ready(out) = fut.as_mut().poll(&mut cx) else {
            return;
        };
        r.fut = None;
        let (attempts, deadline) = (r.attempts, r.deadline_ns);
        let now = self.now();
        let retry = match &out {
            Ok(v) => (self.opts.retry_on_result)(v),
            Err(e) => (self.opts.retry_on_error)(e),
        };
        match &out {
            Ok(_) if !retry => {
                if let Some(b) = &mut self.breaker {
                    b.on_success();
                }
            }
            _ => {
                if let Some(b) = &mut self.breaker {
                    let opened = b.opened;
                    b.on_failure(now);
                    if b.opened > opened {
                        self.p.metrics.add("async_breaker_opened", 1);
                    }
                }
            }
        }
        if retry {
            if let Some(d) = self.opts.retry.next_delay(attempts) {
                let at = now.saturating_add(d.as_nanos() as u64);
                if at < deadline {
                    self.p.metrics.add("async_retries", 1);
                    self.retries.insert((at, seq));
                    return;
                }
            }
        }
        match out {
            Ok(v) => self.complete(seq, v),
            Err(e) => {
                let reason = format!(
                    "request {seq} failed after {attempts} attempt{}: {e}",
                    if attempts == 1 { "" } else { "s" }
                );
                self.fail(reason);
            }
        }
    }

    fn complete(&mut self, seq: u64, v: Vec<U>) {
        let now = self.now();
        let Some(r) = self.reqs.get_mut(&seq) else {
            return;
        };
        r.result = Some(v);
        r.fut = None;
        self.timeouts.remove(&(r.deadline_ns, seq));
        let io_ns = now.saturating_sub(r.issued_ns);
        self.p.metrics.record_io_time(io_ns);
        if let Some(a) = &mut self.auto {
            a.latency_sum_ns += io_ns;
            a.completions += 1;
        }
        if self.opts.mode == AsyncMode::Unordered && self.marks.front().map_or(true, |m| seq < *m) {
            self.emit_one(seq);
        }
    }

    /// The timeout passed (or the breaker failed the request fast): apply the policy.
    fn give_up(&mut self, seq: u64, what: &str) {
        let Some(r) = self.reqs.get_mut(&seq) else {
            return;
        };
        r.fut = None; // a completion after this is never seen
        let input = r.input.clone();
        let attempts = r.attempts;
        match self.opts.on_timeout.clone() {
            OnTimeout::Fail => {
                let reason = format!(
                    "request {seq} {what} (timeout {:?}, {attempts} attempt{})",
                    self.opts.timeout,
                    if attempts == 1 { "" } else { "s" }
                );
                self.fail(reason);
            }
            OnTimeout::Drop => {
                self.p.metrics.add("async_dropped", 1);
                self.complete(seq, Vec::new());
            }
            OnTimeout::Fallback(f) => {
                self.p.metrics.add("async_fallbacks", 1);
                let v = f(&input);
                self.complete(seq, v);
            }
        }
    }

    fn emit_one(&mut self, seq: u64) {
        if let Some(r) = self.reqs.remove(&seq) {
            for u in r.result.expect("emitted only when complete") {
                self.down.data(u);
            }
        }
    }

    /// Emits what output order allows.
    fn emit_ready(&mut self) {
        loop {
            match self.queue.front() {
                Some(Slot::Req(seq)) => {
                    let seq = *seq;
                    match self.reqs.get(&seq) {
                        None => {
                            self.queue.pop_front(); // emitted already (unordered)
                        }
                        Some(r) if r.result.is_some() => {
                            self.queue.pop_front();
                            self.emit_one(seq);
                        }
                        Some(_) => break,
                    }
                }
                Some(Slot::Mark(_)) => {
                    let Some(Slot::Mark(c)) = self.queue.pop_front() else {
                        unreachable!("front is a mark")
                    };
                    self.marks.pop_front();
                    self.down.control(c);
                    if self.opts.mode == AsyncMode::Unordered {
                        let bound = self.marks.front().copied().unwrap_or(u64::MAX);
                        let done: Vec<u64> = self
                            .queue
                            .iter()
                            .filter_map(|s| match s {
                                Slot::Req(q) if *q < bound => Some(*q),
                                _ => None,
                            })
                            .filter(|q| self.reqs.get(q).is_some_and(|r| r.result.is_some()))
                            .collect();
                        done.into_iter().for_each(|q| self.emit_one(q));
                    }
                }
                None => break,
            }
        }
    }

    fn adapt(&mut self, now: u64) {
        let Some(a) = &mut self.auto else { return };
        if a.window_start_ns == 0 {
            a.window_start_ns = now.max(1);
            return;
        }
        let span = now.saturating_sub(a.window_start_ns);
        if span < AUTO_WINDOW_NS || a.completions == 0 {
            return;
        }
        let lambda = a.arrivals as f64 / (span as f64 / 1e9);
        let t = a.latency_sum_ns as f64 / a.completions as f64 / 1e9;
        let n = (lambda * t * 1.5).ceil() as usize;
        self.limit = n.clamp(a.min, a.max);
        *a = Auto {
            window_start_ns: now,
            arrivals: 0,
            latency_sum_ns: 0,
            completions: 0,
            ..*a
        };
        if self.limit > self.reported_capacity {
            self.p.metrics.add(
                "async_capacity_auto_max",
                (self.limit - self.reported_capacity) as u64,
            );
            self.reported_capacity = self.limit;
        }
    }

    fn step(&mut self, now: u64) -> bool {
        if self.failed {
            return false;
        }
        let mut progress = self.p.timers.fire(now) > 0;
        let woken = std::mem::take(&mut *self.ready.lock().expect("ready list"));
        progress |= !woken.is_empty();
        for seq in woken {
            self.poll_req(seq);
        }
        while let Some(&(at, seq)) = self.retries.first() {
            if at > now {
                break;
            }
            self.retries.remove(&(at, seq));
            progress = true;
            self.attempt(seq, now);
        }
        while let Some(&(at, seq)) = self.timeouts.first() {
            if at > now {
                break;
            }
            self.timeouts.remove(&(at, seq));
            self.retries.retain(|(_, s)| *s != seq);
            self.p.metrics.add("async_timeouts", 1);
            progress = true;
            self.give_up(seq, "timed out");
        }
        self.adapt(now);
        let before = self.reqs.len() + self.waiting.len();
        self.admit();
        progress | (self.reqs.len() + self.waiting.len() != before)
    }
}

/// Registers the partition's gauges with its core's metrics: requests in flight, the
/// capacity, inputs waiting for a slot, and whether the breaker is open (1), half open
/// (0.5) or closed (0). Read when the core publishes, never on the record path.
pub(crate) fn register_gauges<T: 'static, U: 'static>(
    core: &Rc<RefCell<AsyncCore<T, U>>>,
    metrics: &MetricsHandle,
) {
    let (name, partition) = {
        let c = core.borrow();
        (c.p.name.clone(), c.p.partition)
    };
    type Read<T, U> = fn(&AsyncCore<T, U>) -> Option<f64>;
    let reads: [(&'static str, Read<T, U>); 4] = [
        ("async_in_flight", |c| Some(c.reqs.len() as f64)),
        ("async_capacity", |c| Some(c.limit as f64)),
        ("async_waiting", |c| Some(c.waiting.len() as f64)),
        ("async_breaker_open", |c| {
            c.breaker.as_ref().map(|b| match b.state() {
                BreakerState::Closed { .. } => 0.0,
                BreakerState::Open { .. } => 1.0,
                BreakerState::HalfOpen => 0.5,
            })
        }),
    ];
    for (gauge, read) in reads {
        let weak = Rc::downgrade(core);
        metrics.gauge(gauge, &name, partition, move || {
            let core = weak.upgrade()?;
            let c = core.try_borrow().ok()?;
            read(&c)
        });
    }
}

/// The chain's handle and the shard's port on one async partition.
pub(crate) struct AsyncOp<T, U>(pub(crate) Rc<RefCell<AsyncCore<T, U>>>);

impl<T: Clone + Record + 'static, U: 'static> Emit<T> for AsyncOp<T, U> {
    fn data(&mut self, rec: T) {
        self.0.borrow_mut().on_data(rec);
    }
    fn control(&mut self, c: Control) {
        self.0.borrow_mut().on_control(c);
    }
    fn end(&mut self) {
        let mut c = self.0.borrow_mut();
        c.waiting.push_back(Item::End);
        c.admit();
    }
}

impl<T: Clone + Record + 'static, U: 'static> Port for AsyncCore<T, U> {
    fn flush(&mut self, now_ns: u64) -> bool {
        self.step(now_ns)
    }
    fn is_blocked(&self) -> bool {
        !self.failed && (self.reqs.len() >= self.limit || !self.waiting.is_empty())
    }
    fn can_progress(&self, now_ns: u64) -> bool {
        !self.ready.lock().expect("ready list").is_empty()
            || self.next_deadline().is_some_and(|t| t <= now_ns)
    }
    fn is_drained(&self) -> bool {
        self.failed || (self.reqs.is_empty() && self.waiting.is_empty() && self.queue.is_empty())
    }
    fn next_deadline(&self) -> Option<u64> {
        [
            self.p.timers.next_deadline(),
            self.timeouts.first().map(|x| x.0),
            self.retries.first().map(|x| x.0),
        ]
        .into_iter()
        .flatten()
        .min()
    }
}
