//! Per-core instantiation: turns the shared `JobGraph` into this core's drivers (source
//! partitions and exchange receivers, each owning its chain of operators) and ports
//! (exchange senders). Runs once per core, on that core, before the shard loop starts.
//! Also holds the drivers and the operators that need the shard's context (sinks,
//! keyed `process`).

use std::any::Any;
use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::marker::PhantomData;
use std::path::Path;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Waker;

use super::exchange::{
    Alignment, ChannelCodec, ExchangeDef, ExchangeInput, OutputPort, Port, PortWiring, Receiver,
    RecvInput, RouteState, Routed,
};
use super::graph::{AttachFn, JobGraph, NodeKind};
use super::io::{CoreIo, IoCx, IoPort, WakeFlag};
use super::ops::{BoxEmit, Discard, Emit, FailureSlot, FanOut, Out, UnionInput, UnionJoin};
use super::{AsyncSource, AsyncSourcePartition, Data, Keyed, PartitionContext, SourcePoll};
use crate::checkpoint::core::{group_owner, CoreCheckpoints, Participant};
use crate::checkpoint::protocol::SourceOffset;
use crate::checkpoint::restore::Restore;
use crate::clock::{Clock, MonotonicClock};
use crate::config::{CheckpointMode, CoreConfig};
use crate::error::{EngineError, Result};
use crate::ids::{CheckpointId, CoreId, KeyGroup, PartitionId};
use crate::message::{Barrier, Control, Message, Watermark};
use crate::metrics::MetricsHandle;
use crate::monitor::probe::{CoreProbe, Marker};
use crate::ring::{Consumer, Doorbell, Producer};
use crate::state::{KeyCtx, StateInit};

type PortRef = Rc<RefCell<dyn Port>>;

/// Per-core objects shared by several chains (ports, receivers, union joins), with the
/// ports reachable behind each.
type SharedObjects = HashMap<(usize, u32), (Box<dyn Any>, Vec<PortRef>)>;

/// What one step of a driver did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Records moved.
    Progress,
    /// Nothing to do; poll again by this time (ns) if known.
    Idle(Option<u64>),
    /// A port it feeds is full.
    Blocked,
    /// Finished for good.
    Done,
}

/// Something the shard loop polls: a source partition or an exchange receiver.
pub(crate) trait Driver {
    /// The job starts (every core is ready) at `start_ns`.
    fn start(&mut self, _start_ns: u64) {}
    /// Does a bounded amount of work.
    fn step(&mut self, now_ns: u64) -> Step;
    /// Whether input is waiting that a step could take now (for the re-check before
    /// parking).
    fn has_input(&self) -> bool {
        false
    }
    /// Checkpoint `barrier.id` was triggered: a source records its offset and emits the
    /// barrier.
    fn trigger(&mut self, _barrier: Barrier, _now_ns: u64) {}
    /// Checkpoint `id` completed; after the final one (`last`), a source ends its output.
    fn complete(&mut self, _id: CheckpointId, _last: bool) {}
}

/// A core's checkpointing context while it instantiates its partitions.
#[derive(Clone)]
pub(crate) struct CkptCtx {
    /// The core's participants and in-flight checkpoints.
    pub(crate) core: Rc<RefCell<CoreCheckpoints>>,
    /// The checkpoint the job restores from, if any.
    pub(crate) restore: Option<Arc<Restore>>,
}

/// The ring ends one core owns, keyed by (exchange node, other core index).
#[derive(Default)]
pub(crate) struct CoreEndpoints {
    pub(crate) producers: HashMap<(usize, usize), Box<dyn Any + Send>>,
    pub(crate) consumers: HashMap<(usize, usize), Box<dyn Any + Send>>,
}

/// Everything a core needs to instantiate its part of the graph.
pub(crate) struct InstantiateArgs<'a> {
    pub(crate) graph: &'a JobGraph,
    pub(crate) core: usize,
    pub(crate) core_id: CoreId,
    pub(crate) config: &'a CoreConfig,
    pub(crate) placement: Rc<[usize]>,
    pub(crate) endpoints: CoreEndpoints,
    pub(crate) doorbells: &'a [Arc<Doorbell>],
    pub(crate) job_dir: &'a Path,
    pub(crate) clock: MonotonicClock,
    pub(crate) metrics: MetricsHandle,
    pub(crate) stop: Arc<AtomicBool>,
    /// The CPU of every core of the job, by core index.
    pub(crate) core_ids: &'a [CoreId],
    /// Checkpointing, when the job has a `[checkpoint]` table.
    pub(crate) ckpt: Option<CkptCtx>,
    /// The core's probe when the stall detector runs: operators then note on it when
    /// they are entered and left.
    pub(crate) probe: Option<Arc<CoreProbe>>,
}

/// Builds one core's drivers and ports.
pub(crate) struct Instantiator<'a> {
    a: InstantiateArgs<'a>,
    shared: SharedObjects,
    frames: Vec<Vec<PortRef>>,
    drivers: Vec<Box<dyn Driver>>,
    driver_markers: Vec<Marker>,
    ports: Vec<PortRef>,
    port_markers: Vec<Marker>,
    failure: FailureSlot,
}

/// This core's instantiated part of the job.
pub(crate) struct CoreParts {
    pub(crate) drivers: Vec<Box<dyn Driver>>,
    /// The operator each driver runs (for the stall detector), by driver.
    pub(crate) driver_markers: Vec<Marker>,
    pub(crate) ports: Vec<PortRef>,
    /// The operator each port belongs to, by port.
    pub(crate) port_markers: Vec<Marker>,
    pub(crate) failure: FailureSlot,
}

const PORT: u32 = u32::MAX;
const RECEIVER: u32 = u32::MAX - 1;

impl<'a> Instantiator<'a> {
    /// Instantiates every partition placed on `args.core`.
    pub(crate) fn run(args: InstantiateArgs<'a>) -> Result<CoreParts> {
        let mut inst = Instantiator {
            a: args,
            shared: HashMap::new(),
            frames: Vec::new(),
            drivers: Vec::new(),
            driver_markers: Vec::new(),
            ports: Vec::new(),
            port_markers: Vec::new(),
            failure: FailureSlot::default(),
        };
        let graph = inst.a.graph;
        for (id, node) in graph.nodes.iter().enumerate() {
            if let Some(src) = &node.source {
                for p in inst.local_partitions(id) {
                    src.instantiate(&mut inst, id, p);
                }
            }
        }
        for (id, node) in graph.nodes.iter().enumerate() {
            if let Some(x) = &node.exchange {
                if !inst.local_partitions(id).is_empty() {
                    x.ensure_receiver(&mut inst, id);
                }
            }
        }
        if let Some(e) = inst.failure.take() {
            return Err(e);
        }
        Ok(CoreParts {
            drivers: inst.drivers,
            driver_markers: inst.driver_markers,
            ports: inst.ports,
            port_markers: inst.port_markers,
            failure: inst.failure,
        })
    }

    pub(crate) fn max_key_groups(&self) -> u16 {
        self.a.graph.max_key_groups
    }

    /// Whether keyed state tracks changed keys for incremental checkpoints.
    pub(crate) fn incremental(&self) -> bool {
        self.a
            .ckpt
            .as_ref()
            .is_some_and(|c| c.core.borrow().incremental)
    }

    /// The name of operator `node`.
    pub(crate) fn node_name(&self, node: usize) -> &str {
        &self.a.graph.nodes[node].name
    }

    pub(crate) fn fail(&self, e: EngineError) {
        self.failure.fail(e);
    }

    /// Adds a driver the shard loop polls (e.g. a keyed operator's processing-time
    /// timers) on behalf of operator `node` partition `p` (`None`: all partitions).
    pub(crate) fn add_driver(&mut self, d: Box<dyn Driver>, node: usize, p: Option<PartitionId>) {
        self.drivers.push(d);
        self.driver_markers
            .push(Marker::operator(node, p.map(|p| p.0)));
    }

    fn add_port(&mut self, port: PortRef, node: usize, p: Option<PartitionId>) {
        self.ports.push(port);
        self.port_markers
            .push(Marker::operator(node, p.map(|p| p.0)));
    }

    /// This core file's `async_capacity`: the in-flight bound of every async partition
    /// on this core, overriding the operator's own capacity.
    pub(crate) fn async_capacity(&self) -> Option<usize> {
        self.a.config.async_capacity
    }

    /// This core's metrics.
    pub(crate) fn metrics(&self) -> MetricsHandle {
        self.a.metrics.clone()
    }

    pub(crate) fn failure(&self) -> FailureSlot {
        self.failure.clone()
    }

    /// The partitions of `node` placed on this core.
    fn local_partitions(&self, node: usize) -> Vec<PartitionId> {
        let par = self.a.graph.nodes[node].parallelism;
        (0..par)
            .filter(|p| self.a.placement[*p as usize] == self.a.core)
            .map(PartitionId)
            .collect()
    }

    /// The distinct cores hosting a partition of `node`, sorted.
    fn cores_of(&self, node: usize) -> Vec<usize> {
        self.a.graph.cores_of(node, &self.a.placement)
    }

    pub(crate) fn partition_context(&self, node: usize, p: PartitionId) -> PartitionContext<'a> {
        let n = &self.a.graph.nodes[node];
        PartitionContext {
            operator: &n.name,
            partition: p,
            parallelism: n.parallelism,
            core: self.a.core_id,
            job_dir: self.a.job_dir,
            clock: self.a.clock,
            metrics: self.a.metrics.clone(),
            transactional: self.a.ckpt.is_some(),
            process: self.a.graph.process,
        }
    }

    /// The job clock.
    pub(crate) fn clock(&self) -> MonotonicClock {
        self.a.clock
    }

    /// Registers a checkpoint participant of `node` partition `p` (`what` says what it
    /// is: "source", "operator", "sink"). `None` without checkpointing.
    pub(crate) fn participant(
        &self,
        node: usize,
        p: PartitionId,
        what: &str,
    ) -> Option<Participant> {
        let c = self.a.ckpt.as_ref()?;
        let name = format!("{what} `{}` {p}", self.a.graph.nodes[node].name);
        Some(if what == "source" {
            CoreCheckpoints::register_source(&c.core, name)
        } else {
            CoreCheckpoints::register(&c.core, name)
        })
    }

    /// Restores the state tables of keyed partition `p` of `node` from the checkpoint the
    /// job starts from, and registers them with the core's checkpoints.
    pub(crate) fn setup_state<K: Clone + std::hash::Hash + Eq + 'static>(
        &mut self,
        node: usize,
        p: PartitionId,
        init: &StateInit<K>,
    ) -> Vec<KeyGroup> {
        let par = self.a.graph.nodes[node].parallelism;
        let max = self.a.graph.max_key_groups;
        let groups: Vec<KeyGroup> = (0..max)
            .map(KeyGroup)
            .filter(|kg| kg.partition(par, max) == p)
            .collect();
        let Some(c) = self.a.ckpt.clone() else {
            return groups;
        };
        let tables: Vec<_> = init.tables().iter().map(|(_, t)| t.clone()).collect();
        c.core.borrow_mut().add_tables(&tables);
        if let Some(r) = &c.restore {
            let op = &self.a.graph.nodes[node].name;
            for (name, t) in init.tables() {
                let id = crate::checkpoint::core::state_operator_id(op, name);
                for kg in &groups {
                    if let Some(chain) = r.chain(id, *kg) {
                        let loaded = t.borrow_mut().restore(*kg, chain);
                        match loaded {
                            Ok(n) => self.a.metrics.add("restored_keys", n as u64),
                            Err(e) => {
                                self.fail(EngineError::Restore {
                                    checkpoint: r.id,
                                    reason: format!(
                                        "state `{name}` of operator `{op}` key group {}: {e}",
                                        kg.0
                                    ),
                                });
                                return groups;
                            }
                        }
                    }
                }
            }
        }
        groups
    }

    /// This core's timers for async operators (created on first use).
    pub(crate) fn core_timers(&mut self) -> crate::asyncio::Timers {
        const TIMERS: (usize, u32) = (usize::MAX, u32::MAX);
        if let Some((any, _)) = self.shared.get(&TIMERS) {
            return any
                .downcast_ref::<crate::asyncio::Timers>()
                .expect("timers type")
                .clone();
        }
        let t = crate::asyncio::Timers::new(Rc::new(self.a.clock));
        self.shared
            .insert(TIMERS, (Box::new(t.clone()), Vec::new()));
        t
    }

    /// This core's connector IO (created on first use, with the port that reaps it).
    pub(crate) fn core_io(&mut self) -> Rc<CoreIo> {
        const IO: (usize, u32) = (usize::MAX, u32::MAX - 1);
        if let Some((any, _)) = self.shared.get(&IO) {
            return any
                .downcast_ref::<Rc<CoreIo>>()
                .expect("core io type")
                .clone();
        }
        let io = Rc::new(CoreIo::new(self.a.doorbells[self.a.core].clone()));
        let port: PortRef = Rc::new(RefCell::new(IoPort {
            io: io.clone(),
            clock: self.a.clock,
        }));
        self.ports.push(port);
        self.port_markers.push(Marker::LOOP);
        self.shared.insert(IO, (Box::new(io.clone()), Vec::new()));
        io
    }

    /// A wake flag (and its waker) that rings this core's doorbell.
    pub(crate) fn wake_flag(&self) -> (Arc<WakeFlag>, Waker) {
        let flag = WakeFlag::new(self.a.doorbells[self.a.core].clone());
        let waker = Waker::from(flag.clone());
        (flag, waker)
    }

    /// The checkpoint the job restores from, if any.
    pub(crate) fn restore(&self) -> Option<Arc<Restore>> {
        self.a.ckpt.as_ref().and_then(|c| c.restore.clone())
    }

    /// The partitions of `node`.
    pub(crate) fn parallelism(&self, node: usize) -> u32 {
        self.a.graph.nodes[node].parallelism
    }

    /// Whether every source partition on this core has finished (always false without
    /// checkpoints).
    pub(crate) fn sources_done(&self) -> Box<dyn Fn() -> bool> {
        match &self.a.ckpt {
            None => Box::new(|| false),
            Some(c) => {
                let core = c.core.clone();
                Box::new(move || core.borrow().all_sources_finished())
            }
        }
    }

    /// `downstream`, with the ports behind it also noted for the drivers feeding this
    /// operator.
    pub(crate) fn downstream_noted<T: Data>(&mut self, node: usize, p: PartitionId) -> BoxEmit<T> {
        let (down, ports) = self.with_frame(|inst| inst.downstream::<T>(node, p));
        self.note_ports(&ports);
        down
    }

    /// Adds a port of operator `node` partition `p` that the shard loop flushes every
    /// round and whose `is_blocked` stops the drivers feeding it (an async operator).
    pub(crate) fn register_port(&mut self, port: PortRef, node: usize, p: PartitionId) {
        self.add_port(port.clone(), node, Some(p));
        self.note_ports(&[port]);
    }

    fn with_frame<R>(&mut self, f: impl FnOnce(&mut Self) -> R) -> (R, Vec<PortRef>) {
        self.frames.push(Vec::new());
        let r = f(self);
        let ports = self.frames.pop().expect("frame pushed above");
        (r, ports)
    }

    fn note_ports(&mut self, ports: &[PortRef]) {
        if let Some(top) = self.frames.last_mut() {
            for p in ports {
                if !top
                    .iter()
                    .any(|q| Rc::as_ptr(q).cast::<()>() == Rc::as_ptr(p).cast::<()>())
                {
                    top.push(p.clone());
                }
            }
        }
    }

    /// The chain that takes `node`'s output for partition `p`: every consumer attached.
    pub(crate) fn downstream<T: Data>(&mut self, node: usize, p: PartitionId) -> BoxEmit<T> {
        let graph = self.a.graph;
        let consumers = &graph.nodes[node].consumers;
        let mut outs: Vec<BoxEmit<T>> = Vec::with_capacity(consumers.len());
        for &c in consumers {
            let attach = graph.nodes[c]
                .attach
                .as_ref()
                .and_then(|a| a.downcast_ref::<AttachFn<T>>())
                .expect("a consumer's input type matches its upstream's output type")
                .clone();
            let link = attach(self, c, node, p);
            let traced = matches!(graph.nodes[c].kind, NodeKind::Op | NodeKind::Sink);
            outs.push(match &self.a.probe {
                Some(probe) if traced => Box::new(Traced {
                    inner: link,
                    probe: probe.clone(),
                    marker: Marker::operator(c, Some(p.0)),
                }),
                _ => link,
            });
        }
        match outs.len() {
            0 => Box::new(Discard),
            1 => outs.pop().expect("one consumer"),
            _ => Box::new(FanOut { outs }),
        }
    }

    /// The input end of exchange `node` for upstream partition `p`.
    pub(crate) fn exchange_input<In: Data, W: Data>(
        &mut self,
        node: usize,
        def: &Arc<ExchangeDef<In, W>>,
        p: PartitionId,
    ) -> BoxEmit<In> {
        let port: Rc<RefCell<OutputPort<In, W>>> = match self.shared.get(&(node, PORT)) {
            Some((any, _)) => any
                .downcast_ref::<Rc<RefCell<OutputPort<In, W>>>>()
                .expect("port type")
                .clone(),
            None => {
                let port = Rc::new(RefCell::new(self.make_port(node, def)));
                let dyn_port: PortRef = port.clone();
                self.add_port(dyn_port.clone(), node, None);
                self.shared
                    .insert((node, PORT), (Box::new(port.clone()), vec![dyn_port]));
                port
            }
        };
        let ports = self.shared[&(node, PORT)].1.clone();
        self.note_ports(&ports);
        let upstream = self.a.graph.nodes[node].upstreams[0];
        let index = self
            .local_partitions(upstream)
            .iter()
            .position(|q| *q == p)
            .expect("upstream partition is on this core");
        Box::new(ExchangeInput { index, port })
    }

    fn make_port<In: Data, W: Data>(
        &mut self,
        node: usize,
        def: &ExchangeDef<In, W>,
    ) -> OutputPort<In, W> {
        let me = self.a.core;
        let consumer_cores = self.cores_of(node);
        let upstream = self.a.graph.nodes[node].upstreams[0];
        let producer_cores = self.cores_of(upstream);
        let ncores = self.a.doorbells.len();
        let mut rings = Vec::with_capacity(ncores);
        for c in 0..ncores {
            if c == me || !consumer_cores.contains(&c) {
                rings.push(None);
                continue;
            }
            let end = self
                .a
                .endpoints
                .producers
                .remove(&(node, c))
                .expect("a ring to every consuming core was created");
            let ring = *end
                .downcast::<Producer<Message<Routed<W>>>>()
                .expect("ring type matches the exchange");
            rings.push(Some((ring, self.a.doorbells[c].clone())));
        }
        let local = if consumer_cores.contains(&me) {
            let receiver = self.receiver::<W>(node);
            let input = producer_cores
                .iter()
                .position(|c| *c == me)
                .expect("this core produces into the exchange");
            let ports = self.shared[&(node, RECEIVER)].1.clone();
            Some((receiver, input, ports))
        } else {
            None
        };
        OutputPort::new(
            def.route.clone(),
            PortWiring {
                placement: self.a.placement.clone(),
                rings,
                local,
                local_inputs: self.local_partitions(upstream).len(),
                parallelism: self.a.graph.nodes[node].parallelism,
                max_key_groups: self.a.graph.max_key_groups,
                batch_max: self.a.config.batch_max,
                flush_deadline_ns: self.a.config.flush_deadline_us * 1_000,
            },
        )
    }

    /// This core's receiver of exchange `node`, created with its chains on first use.
    pub(crate) fn receiver<W: Data>(&mut self, node: usize) -> Rc<RefCell<Receiver<W>>> {
        if let Some((any, _)) = self.shared.get(&(node, RECEIVER)) {
            return any
                .downcast_ref::<Rc<RefCell<Receiver<W>>>>()
                .expect("receiver type")
                .clone();
        }
        let me = self.a.core;
        let upstream = self.a.graph.nodes[node].upstreams[0];
        let mut inputs = Vec::new();
        for pc in self.cores_of(upstream) {
            let ring = if pc == me {
                None
            } else {
                let end = self
                    .a
                    .endpoints
                    .consumers
                    .remove(&(node, pc))
                    .expect("a ring from every producing core was created");
                Some(
                    *end.downcast::<Consumer<Message<Routed<W>>>>()
                        .expect("ring type matches the exchange"),
                )
            };
            inputs.push(RecvInput {
                ring,
                producer: self.a.doorbells[pc].clone(),
                core: self.a.core_ids[pc],
            });
        }
        let parallelism = self.a.graph.nodes[node].parallelism as usize;
        let locals = self.local_partitions(node);
        let (chains, ports) = self.with_frame(|inst| {
            let mut chains: Vec<Option<BoxEmit<W>>> = (0..parallelism).map(|_| None).collect();
            for q in locals {
                chains[q.index()] = Some(inst.downstream::<W>(node, q));
            }
            chains
        });
        let burst = (self.a.config.ring_capacity / 4)
            .max(self.a.config.batch_max)
            .max(1);
        let name = self.a.graph.nodes[node].name.clone();
        let codec: Option<Arc<ChannelCodec<W>>> = self.a.graph.nodes[node]
            .channel_codec
            .as_ref()
            .and_then(|c| c.downcast_ref::<Arc<ChannelCodec<W>>>())
            .cloned();
        let mut restored = Vec::new();
        let align = match self.a.ckpt.clone() {
            None => None,
            Some(c) => {
                let (hold, unaligned) = {
                    let cc = c.core.borrow();
                    (
                        cc.mode == CheckpointMode::ExactlyOnce,
                        cc.unaligned_after_ns,
                    )
                };
                let unaligned = unaligned.filter(|_| codec.is_some());
                let participant = unaligned.map(|_| {
                    CoreCheckpoints::register(
                        &c.core,
                        format!("exchange `{name}` on {}", self.a.core_id),
                    )
                });
                if let (Some(r), Some(codec)) = (&c.restore, &codec) {
                    let rs = RouteState {
                        parallelism: self.a.graph.nodes[node].parallelism,
                        max_key_groups: self.a.graph.max_key_groups,
                        round_robin: 0,
                    };
                    let op = crate::checkpoint::core::channel_operator_id(&name);
                    for blob in r.blobs(op) {
                        match (codec.decode)(blob.payload()) {
                            Ok(records) => {
                                for (old, w) in records {
                                    let p = (codec.reroute)(&w, old, &rs);
                                    if self.a.placement[p as usize] == me {
                                        restored.push((p, w));
                                    }
                                }
                            }
                            Err(e) => self.fail(EngineError::Restore {
                                checkpoint: r.id,
                                reason: format!("channel state of `{name}`: {e}"),
                            }),
                        }
                    }
                    self.a
                        .metrics
                        .add("restored_channel_records", restored.len() as u64);
                }
                Some(Alignment {
                    hold,
                    unaligned_after_ns: unaligned,
                    core: c.core.clone(),
                    participant,
                    clock: self.a.clock,
                    name: Rc::from(name.as_str()),
                    core_index: me,
                })
            }
        };
        let receiver = Rc::new(RefCell::new(
            Receiver::new(inputs, chains, burst, align).with_channel_state(codec, restored),
        ));
        self.shared.insert(
            (node, RECEIVER),
            (Box::new(receiver.clone()), ports.clone()),
        );
        self.add_driver(
            Box::new(ReceiverDriver {
                receiver: receiver.clone(),
                ports,
            }),
            node,
            None,
        );
        receiver
    }

    /// Input `from` of union `node`, partition `p`.
    pub(crate) fn union_input<T: Data>(
        &mut self,
        node: usize,
        from: usize,
        p: PartitionId,
    ) -> BoxEmit<T> {
        let key = (node, p.0);
        let join: Rc<RefCell<UnionJoin<T>>> = match self.shared.get(&key) {
            Some((any, ports)) => {
                let ports = ports.clone();
                let join = any
                    .downcast_ref::<Rc<RefCell<UnionJoin<T>>>>()
                    .expect("union type")
                    .clone();
                self.note_ports(&ports);
                join
            }
            None => {
                let n = self.a.graph.nodes[node].upstreams.len();
                let (down, mut ports) = self.with_frame(|inst| inst.downstream::<T>(node, p));
                let hold = self
                    .a
                    .ckpt
                    .as_ref()
                    .is_some_and(|c| c.core.borrow().mode == CheckpointMode::ExactlyOnce);
                let join = Rc::new(RefCell::new(UnionJoin::new(n, down, hold)));
                // The drivers feeding the union stop when its held-back queue is full.
                let as_port: PortRef = join.clone();
                ports.push(as_port);
                self.note_ports(&ports);
                self.shared.insert(key, (Box::new(join.clone()), ports));
                join
            }
        };
        let index = self.a.graph.nodes[node]
            .upstreams
            .iter()
            .position(|u| *u == from)
            .expect("attached from one of its inputs");
        Box::new(UnionInput { index, join })
    }

    fn add_source_driver<T: Data>(
        &mut self,
        node: usize,
        p: PartitionId,
        mut part: Box<dyn AsyncSourcePartition<T>>,
    ) {
        let name = self.a.graph.nodes[node].name.clone();
        if let Some(r) = self.a.ckpt.as_ref().and_then(|c| c.restore.as_ref()) {
            let sought = match (r.position(&name, p.0), r.offset(&name, p.0)) {
                (Some(pos), _) => Some(part.seek_position(pos)),
                (None, Some(off)) => Some(part.seek(off)),
                (None, None) => None,
            };
            if let Some(Err(e)) = sought {
                self.fail(EngineError::Restore {
                    checkpoint: r.id,
                    reason: format!("source `{name}` partition {}: {e}", p.0),
                });
            }
        }
        let ckpt = self.participant(node, p, "source");
        let (chain, ports) = self.with_frame(|inst| inst.downstream::<T>(node, p));
        let batch = self.a.config.batch_max;
        let (stop, failure, metrics) = (
            self.a.stop.clone(),
            self.failure.clone(),
            self.a.metrics.clone(),
        );
        let io = self.core_io();
        let (wake, waker) = self.wake_flag();
        let clock = self.a.clock;
        let driver = Box::new(SourceDriver {
            part,
            io,
            wake,
            waker,
            clock,
            pending: false,
            chain,
            ports,
            name,
            partition: p,
            ckpt,
            reported: VecDeque::new(),
            finished: false,
            done: false,
            batch,
            stop,
            failure,
            metrics,
        });
        self.add_driver(driver, node, Some(p));
    }
}

/// The parts of a source that do not depend on its record type.
pub(crate) trait SourceErased: Send + Sync {
    fn instantiate(&self, inst: &mut Instantiator<'_>, node: usize, p: PartitionId);
}

/// A typed source in the graph.
pub(crate) struct SourceDef<T, S> {
    source: S,
    _t: PhantomData<fn() -> T>,
}

impl<T, S> SourceDef<T, S> {
    pub(crate) fn new(source: S) -> Self {
        Self {
            source,
            _t: PhantomData,
        }
    }
}

impl<T: Data, S: AsyncSource<T>> SourceErased for SourceDef<T, S> {
    fn instantiate(&self, inst: &mut Instantiator<'_>, node: usize, p: PartitionId) {
        let ctx = inst.partition_context(node, p);
        match self.source.open_partition(&ctx) {
            Ok(part) => inst.add_source_driver(node, p, part),
            Err(e) => inst.fail(e),
        }
    }
}

/// Polls one source partition into its chain. A partition that returned
/// `SourcePoll::Pending` is polled again only once its waker was called.
struct SourceDriver<T> {
    part: Box<dyn AsyncSourcePartition<T>>,
    io: Rc<CoreIo>,
    wake: Arc<WakeFlag>,
    waker: Waker,
    clock: MonotonicClock,
    /// The last poll returned `Pending`.
    pending: bool,
    chain: BoxEmit<T>,
    ports: Vec<PortRef>,
    name: String,
    partition: PartitionId,
    ckpt: Option<Participant>,
    /// What the partition reported at the barriers of checkpoints not completed yet
    /// (id, offset, position), oldest first, for `checkpoint_complete`.
    reported: VecDeque<(CheckpointId, u64, Option<Vec<u8>>)>,
    /// The input is done but the end is held back until the final checkpoint completes.
    finished: bool,
    done: bool,
    batch: usize,
    stop: Arc<AtomicBool>,
    failure: FailureSlot,
    metrics: MetricsHandle,
}

impl<T> SourceDriver<T> {
    fn finish(&mut self) -> Step {
        self.done = true;
        self.chain.end();
        Step::Done
    }

    /// The input is done (or the job is stopping). With checkpoints the end waits for the
    /// final checkpoint, so that everything emitted is covered by a completed one.
    fn input_done(&mut self) -> Step {
        match &self.ckpt {
            None => self.finish(),
            Some(c) => {
                if !self.finished {
                    self.finished = true;
                    c.core.borrow_mut().source_finished();
                }
                Step::Idle(None)
            }
        }
    }
}

impl<T> Driver for SourceDriver<T> {
    fn start(&mut self, start_ns: u64) {
        self.part.start(start_ns);
    }

    fn step(&mut self, now_ns: u64) -> Step {
        if self.done {
            return Step::Done;
        }
        if self.finished {
            return Step::Idle(None);
        }
        if self.stop.load(Ordering::Relaxed) {
            // A clean stop: end the input here and let the pipeline drain.
            return self.input_done();
        }
        if self.ports.iter().any(|p| p.borrow().is_blocked()) {
            return Step::Blocked;
        }
        // A pending partition is polled only once woken (the flag is cleared before the
        // poll, so a wake during it is kept for the next round). Others are polled every
        // round without touching the flag: a stale wake costs one spurious poll later.
        if self.pending {
            if !self.wake.take() {
                return Step::Idle(None);
            }
            self.pending = false;
        }
        let mut out = Out::new(&mut *self.chain);
        let mut cx = IoCx::new(&self.clock, Some(now_ns), &self.waker, &self.io);
        match self.part.poll_next(&mut cx, self.batch, &mut out) {
            Ok(SourcePoll::Emitted(n)) => {
                self.metrics.add("source_records", n as u64);
                Step::Progress
            }
            Ok(SourcePoll::Idle { next_due_ns }) => Step::Idle(next_due_ns),
            Ok(SourcePoll::Pending) => {
                self.pending = true;
                Step::Idle(None)
            }
            Ok(SourcePoll::Done) => {
                // The input is complete: event time reaches its end before the final
                // checkpoint's barrier, so what it fires (windows, timers) is covered.
                self.chain.control(Control::Watermark(Watermark::MAX));
                self.input_done()
            }
            Err(e) => {
                self.failure.fail(e);
                self.done = true;
                Step::Done
            }
        }
    }

    fn has_input(&self) -> bool {
        // A pending partition whose waker was called has work; others are polled every
        // round anyway (or by their due time).
        self.pending && !self.finished && !self.done && self.wake.is_set()
    }

    fn trigger(&mut self, barrier: Barrier, now_ns: u64) {
        let id = barrier.id;
        if self.done {
            return;
        }
        let Some(c) = &self.ckpt else { return };
        let offset = SourceOffset {
            operator: self.name.clone(),
            partition: self.partition.0,
            offset: self.part.offset(),
            position: self.part.position(),
        };
        self.reported
            .push_back((id, offset.offset, offset.position.clone()));
        self.chain.control(Control::Barrier(barrier));
        c.source(id, offset, now_ns);
    }

    fn complete(&mut self, id: CheckpointId, last: bool) {
        // Older ones never completed (aborted); the completed one is the newest the
        // partition reported at or before `id`.
        let mut done = None;
        while self.reported.front().is_some_and(|r| r.0 <= id) {
            done = self.reported.pop_front();
        }
        if let Some((cid, off, pos)) = done.filter(|r| r.0 == id) {
            if !self.done {
                self.part.checkpoint_complete(cid, off, pos.as_deref());
            }
        }
        if last && self.finished && !self.done {
            self.finish();
        }
    }
}

/// Polls one exchange receiver.
struct ReceiverDriver<W> {
    receiver: Rc<RefCell<Receiver<W>>>,
    ports: Vec<PortRef>,
}

impl<W: Clone> Driver for ReceiverDriver<W> {
    fn step(&mut self, _now_ns: u64) -> Step {
        let mut r = self.receiver.borrow_mut();
        if r.is_done() {
            return Step::Done;
        }
        if self.ports.iter().any(|p| p.borrow().is_blocked()) {
            return Step::Blocked;
        }
        if r.poll() {
            Step::Progress
        } else if r.is_done() {
            Step::Done
        } else {
            Step::Idle(r.deadline())
        }
    }

    fn has_input(&self) -> bool {
        // Input behind a blocked port is not work: the consumer of that port rings this
        // core when it frees a slot.
        self.receiver.borrow().has_input() && !self.ports.iter().any(|p| p.borrow().is_blocked())
    }
}

/// What every keyed operator partition holds for checkpoints: its declared state, the
/// key groups it owns, and how it reports its part of a checkpoint.
pub(crate) struct KeyedPart<K> {
    pub(crate) init: StateInit<K>,
    pub(crate) groups: Vec<KeyGroup>,
    pub(crate) ckpt: Option<Participant>,
    pub(crate) name: String,
    pub(crate) partition: PartitionId,
    pub(crate) clock: MonotonicClock,
    pub(crate) failure: FailureSlot,
}

impl<K: Clone + std::hash::Hash + Eq + 'static> KeyedPart<K> {
    /// Partition `p` of keyed operator `node` with the state `init` declared: restores
    /// the tables from the checkpoint the job starts from and registers the partition
    /// with its core's checkpoints.
    pub(crate) fn new(
        inst: &mut Instantiator<'_>,
        node: usize,
        p: PartitionId,
        init: StateInit<K>,
    ) -> Self {
        let groups = inst.setup_state(node, p, &init);
        let ckpt = inst.participant(node, p, "operator");
        Self {
            init,
            groups,
            ckpt,
            name: inst.node_name(node).to_string(),
            partition: p,
            clock: inst.clock(),
            failure: inst.failure(),
        }
    }
}

impl<K> KeyedPart<K> {
    /// Freezes every state table's key groups for checkpoint `id` (the synchronous part;
    /// the core archives them after the barrier) and hands the groups to the core's
    /// checkpoint.
    pub(crate) fn snapshot(&self, id: CheckpointId) {
        let Some(p) = &self.ckpt else { return };
        if !p.wants(id) {
            return;
        }
        let t0 = self.clock.now_ns();
        let max_chain = p.core.borrow().max_chain;
        let mut groups = Vec::new();
        let mut keys = 0u64;
        for (table_name, table) in self.init.tables() {
            let op = crate::checkpoint::core::state_operator_id(&self.name, table_name);
            let mut t = table.borrow_mut();
            keys += t.keys() as u64;
            for kg in &self.groups {
                match t.snapshot(*kg, id, max_chain) {
                    Ok(g) => groups.push((group_owner(op, self.partition, *kg), g)),
                    Err(e) => {
                        self.failure.fail(EngineError::Operator {
                            operator: self.name.clone(),
                            partition: self.partition.0,
                            reason: format!(
                                "archiving state `{table_name}` key group {} for checkpoint {}: {e}",
                                kg.0, id.0
                            ),
                        });
                        return;
                    }
                }
            }
        }
        let now = self.clock.now_ns();
        p.state(id, groups, keys, now.saturating_sub(t0), now);
    }
}

/// A keyed `process` function with its partition's state. With checkpoints, a barrier
/// archives every key group the partition owns (the synchronous part) before it is
/// forwarded.
pub(crate) struct ProcessOp<K, V, U, F> {
    pub(crate) f: F,
    pub(crate) keyed: KeyedPart<K>,
    pub(crate) down: BoxEmit<U>,
    pub(crate) _k: PhantomData<fn(K, V)>,
}

impl<K, V, U, F> Emit<Keyed<K, V>> for ProcessOp<K, V, U, F>
where
    F: FnMut(&KeyCtx<'_, K>, V, &mut Out<'_, U>),
{
    #[inline]
    fn data(&mut self, rec: Keyed<K, V>) {
        let Keyed {
            key,
            key_group,
            value,
        } = rec;
        let ctx = KeyCtx::new(&key, key_group);
        let mut out = Out::new(&mut *self.down);
        (self.f)(&ctx, value, &mut out);
    }
    fn control(&mut self, c: Control) {
        if let Control::Barrier(b) = c {
            self.keyed.snapshot(b.id);
        }
        self.down.control(c);
    }
    fn end(&mut self) {
        self.down.end();
    }
}

/// A chain link that tells the core's probe which operator runs, so a stall is reported
/// with its operator. Inserted in front of every operator and sink when the stall
/// detector runs; two relaxed stores per call.
struct Traced<T> {
    inner: BoxEmit<T>,
    probe: Arc<CoreProbe>,
    marker: Marker,
}

impl<T> Emit<T> for Traced<T> {
    #[inline]
    fn data(&mut self, rec: T) {
        let prev = self.probe.enter(self.marker);
        self.inner.data(rec);
        self.probe.leave(prev);
    }
    fn control(&mut self, c: Control) {
        let prev = self.probe.enter(self.marker);
        self.inner.control(c);
        self.probe.leave(prev);
    }
    fn end(&mut self) {
        let prev = self.probe.enter(self.marker);
        self.inner.end();
        self.probe.leave(prev);
    }
}
