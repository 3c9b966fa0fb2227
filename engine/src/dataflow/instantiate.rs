//! Per-core instantiation: turns the shared `JobGraph` into this core's drivers (source
//! partitions and exchange receivers, each owning its chain of operators) and ports
//! (exchange senders). Runs once per core, on that core, before the shard loop starts.
//! Also holds the drivers and the operators that need the shard's context (sinks,
//! keyed `process`).

use std::any::Any;
use std::cell::RefCell;
use std::collections::HashMap;
use std::marker::PhantomData;
use std::path::Path;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::exchange::{
    ExchangeDef, ExchangeInput, OutputPort, Port, PortWiring, Receiver, RecvInput, Routed,
};
use super::graph::{AttachFn, JobGraph};
use super::ops::{BoxEmit, Discard, Emit, FailureSlot, FanOut, Out, UnionInput, UnionJoin};
use super::{Data, Keyed, PartitionContext, SinkPartition, Source, SourcePartition, SourcePoll};
use crate::clock::MonotonicClock;
use crate::config::CoreConfig;
use crate::error::{EngineError, Result};
use crate::ids::{CoreId, PartitionId};
use crate::message::{Control, InputSet, Message};
use crate::metrics::MetricsHandle;
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
}

/// Builds one core's drivers and ports.
pub(crate) struct Instantiator<'a> {
    a: InstantiateArgs<'a>,
    shared: SharedObjects,
    frames: Vec<Vec<PortRef>>,
    drivers: Vec<Box<dyn Driver>>,
    ports: Vec<PortRef>,
    failure: FailureSlot,
}

/// This core's instantiated part of the job.
pub(crate) struct CoreParts {
    pub(crate) drivers: Vec<Box<dyn Driver>>,
    pub(crate) ports: Vec<PortRef>,
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
            ports: Vec::new(),
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
            ports: inst.ports,
            failure: inst.failure,
        })
    }

    pub(crate) fn max_key_groups(&self) -> u16 {
        self.a.graph.max_key_groups
    }

    pub(crate) fn fail(&self, e: EngineError) {
        self.failure.fail(e);
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
        }
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
            outs.push(attach(self, c, node, p));
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
                self.ports.push(dyn_port.clone());
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
        let burst = (self.a.config.ring_capacity / 4).max(1);
        let receiver = Rc::new(RefCell::new(Receiver::new(inputs, chains, burst)));
        self.shared.insert(
            (node, RECEIVER),
            (Box::new(receiver.clone()), ports.clone()),
        );
        self.drivers.push(Box::new(ReceiverDriver {
            receiver: receiver.clone(),
            ports,
        }));
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
                let (down, ports) = self.with_frame(|inst| inst.downstream::<T>(node, p));
                self.note_ports(&ports);
                let join = Rc::new(RefCell::new(UnionJoin {
                    inputs: InputSet::new(n),
                    down,
                }));
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
        part: Box<dyn SourcePartition<T>>,
    ) {
        let (chain, ports) = self.with_frame(|inst| inst.downstream::<T>(node, p));
        self.drivers.push(Box::new(SourceDriver {
            part,
            chain,
            ports,
            done: false,
            batch: self.a.config.batch_max,
            stop: self.a.stop.clone(),
            failure: self.failure.clone(),
            metrics: self.a.metrics.clone(),
        }));
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

impl<T: Data, S: Source<T>> SourceErased for SourceDef<T, S> {
    fn instantiate(&self, inst: &mut Instantiator<'_>, node: usize, p: PartitionId) {
        let ctx = inst.partition_context(node, p);
        match self.source.partition(&ctx) {
            Ok(part) => inst.add_source_driver(node, p, part),
            Err(e) => inst.fail(e),
        }
    }
}

/// Polls one source partition into its chain.
struct SourceDriver<T> {
    part: Box<dyn SourcePartition<T>>,
    chain: BoxEmit<T>,
    ports: Vec<PortRef>,
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
}

impl<T> Driver for SourceDriver<T> {
    fn start(&mut self, start_ns: u64) {
        self.part.start(start_ns);
    }

    fn step(&mut self, now_ns: u64) -> Step {
        if self.done {
            return Step::Done;
        }
        if self.stop.load(Ordering::Relaxed) {
            // A clean stop: end the input here and let the pipeline drain.
            return self.finish();
        }
        if self.ports.iter().any(|p| p.borrow().is_blocked()) {
            return Step::Blocked;
        }
        let mut out = Out::new(&mut *self.chain);
        match self.part.poll(now_ns, self.batch, &mut out) {
            Ok(SourcePoll::Emitted(n)) => {
                self.metrics.add("source_records", n as u64);
                Step::Progress
            }
            Ok(SourcePoll::Idle { next_due_ns }) => Step::Idle(next_due_ns),
            Ok(SourcePoll::Done) => self.finish(),
            Err(e) => {
                self.failure.fail(e);
                self.done = true;
                Step::Done
            }
        }
    }
}

/// Polls one exchange receiver.
struct ReceiverDriver<W> {
    receiver: Rc<RefCell<Receiver<W>>>,
    ports: Vec<PortRef>,
}

impl<W> Driver for ReceiverDriver<W> {
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
            Step::Idle(None)
        }
    }

    fn has_input(&self) -> bool {
        // Input behind a blocked port is not work: the consumer of that port rings this
        // core when it frees a slot.
        self.receiver.borrow().has_input() && !self.ports.iter().any(|p| p.borrow().is_blocked())
    }
}

/// A sink partition at the end of a chain.
pub(crate) struct SinkOp<T> {
    part: Box<dyn SinkPartition<T>>,
    failure: FailureSlot,
    failed: bool,
}

impl<T> SinkOp<T> {
    pub(crate) fn new(
        inst: &Instantiator<'_>,
        _node: usize,
        _p: PartitionId,
        part: Box<dyn SinkPartition<T>>,
    ) -> Self {
        Self {
            part,
            failure: inst.failure(),
            failed: false,
        }
    }

    fn check(&mut self, r: Result<()>) {
        if let Err(e) = r {
            self.failed = true;
            self.failure.fail(e);
        }
    }
}

impl<T> Emit<T> for SinkOp<T> {
    #[inline]
    fn data(&mut self, rec: T) {
        if !self.failed {
            let r = self.part.write(rec);
            self.check(r);
        }
    }
    fn control(&mut self, _c: Control) {}
    fn end(&mut self) {
        if !self.failed {
            let r = self.part.finish();
            self.check(r);
        }
    }
}

/// A keyed `process` function with its partition's state.
pub(crate) struct ProcessOp<K, V, U, F> {
    pub(crate) f: F,
    pub(crate) _init: StateInit<K>,
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
        self.down.control(c);
    }
    fn end(&mut self) {
        self.down.end();
    }
}
