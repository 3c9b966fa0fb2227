//! The job graph: nodes (sources, chained operators, exchanges, unions, sinks) with
//! their typed factories erased behind `Any`, built by `Builder` and resolved by
//! `Builder::build` (parallelism, inserted rebalances, checks) into a `JobGraph` that is
//! `Send + Sync` and shared by every core. Nothing here runs records.

use std::any::Any;
use std::sync::Arc;

use super::exchange::{ExchangeDef, ExchangeErased, RouteFn};
use super::instantiate::{Instantiator, SourceDef, SourceErased};
use super::ops::{BoxEmit, Discard};
use super::sink_op::SinkOp;
use super::{AsyncSink, AsyncSource, Data, Keyed, PartitionContext, RecoverContext};
use crate::error::{EngineError, Result};
use crate::ids::PartitionId;

/// Builds the input end of a node for one partition: `(instantiator, this node, the
/// upstream node it is attached to, partition)`.
pub(crate) type AttachFn<In> =
    Arc<dyn Fn(&mut Instantiator<'_>, usize, usize, PartitionId) -> BoxEmit<In> + Send + Sync>;

type RebalanceFn = Arc<dyn Fn(&mut Builder, usize) -> usize + Send + Sync>;

/// What a node does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NodeKind {
    Source,
    Op,
    Exchange,
    Union,
    Sink,
}

/// One operator of the graph.
pub(crate) struct Node {
    pub(crate) name: String,
    pub(crate) kind: NodeKind,
    pub(crate) upstreams: Vec<usize>,
    pub(crate) consumers: Vec<usize>,
    pub(crate) requested: Option<u32>,
    pub(crate) parallelism: u32,
    /// `AttachFn<In>` for every node but sources.
    pub(crate) attach: Option<Box<dyn Any + Send + Sync>>,
    pub(crate) source: Option<Arc<dyn SourceErased>>,
    pub(crate) exchange: Option<Arc<dyn ExchangeErased>>,
    /// A sink's `Sink::recover`.
    pub(crate) recover: Option<RecoverFn>,
    /// An exchange's `ChannelCodec<W>` when its records can be persisted (unaligned
    /// checkpoints).
    pub(crate) channel_codec: Option<Box<dyn Any + Send + Sync>>,
    rebalance_before: Option<RebalanceFn>,
}

type RecoverFn = Arc<dyn Fn(&RecoverContext<'_>) -> Result<()> + Send + Sync>;

/// A resolved, checked pipeline, shared read-only by every core.
pub struct JobGraph {
    pub(crate) nodes: Vec<Node>,
    pub(crate) max_key_groups: u16,
    pub(crate) max_parallelism: u32,
    /// This process's place among the job's processes (set from the spec when the job
    /// starts; handed to every partition in its `PartitionContext`).
    pub(crate) process: crate::ids::Process,
}

impl JobGraph {
    /// The largest parallelism of any operator (partition indices run below it).
    pub fn max_parallelism(&self) -> u32 {
        self.max_parallelism
    }

    /// The number of key groups.
    pub fn max_key_groups(&self) -> u16 {
        self.max_key_groups
    }

    /// The distinct core indices hosting a partition of `node` under `placement`
    /// (partition index → core index), sorted.
    pub(crate) fn cores_of(&self, node: usize, placement: &[usize]) -> Vec<usize> {
        let par = self.nodes[node].parallelism as usize;
        let mut cores = placement[..par].to_vec();
        cores.sort_unstable();
        cores.dedup();
        cores
    }

    /// Lets every sink settle what an earlier run of the job left behind (see
    /// `Sink::recover`), before any partition is created.
    pub fn recover_sinks(
        &self,
        job_dir: &std::path::Path,
        transactional: bool,
        restored: Option<crate::ids::CheckpointId>,
    ) -> Result<()> {
        for n in &self.nodes {
            if let Some(r) = &n.recover {
                r(&RecoverContext {
                    operator: &n.name,
                    job_dir,
                    transactional,
                    restored,
                })?;
            }
        }
        Ok(())
    }

    /// `(name, parallelism)` of every source operator.
    pub fn sources(&self) -> Vec<(String, u32)> {
        self.nodes
            .iter()
            .filter(|n| n.kind == NodeKind::Source)
            .map(|n| (n.name.clone(), n.parallelism))
            .collect()
    }

    /// `(name, parallelism)` of every operator, in the order they were added.
    pub fn operators(&self) -> Vec<(String, u32)> {
        self.nodes
            .iter()
            .map(|n| (n.name.clone(), n.parallelism))
            .collect()
    }

    /// A one-line-per-operator description of the graph.
    pub fn describe(&self) -> String {
        let mut s = String::new();
        for n in &self.nodes {
            let ups: Vec<&str> = n
                .upstreams
                .iter()
                .map(|u| self.nodes[*u].name.as_str())
                .collect();
            s.push_str(&format!(
                "  {:<20} {:<9} x{:<3} <- {}\n",
                n.name,
                format!("{:?}", n.kind).to_lowercase(),
                n.parallelism,
                if ups.is_empty() {
                    "-".to_string()
                } else {
                    ups.join(", ")
                }
            ));
        }
        s
    }
}

/// The graph under construction.
pub(crate) struct Builder {
    nodes: Vec<Node>,
    max_key_groups: u16,
}

impl Builder {
    pub(crate) fn new(max_key_groups: u16) -> Self {
        Self {
            nodes: Vec::new(),
            max_key_groups,
        }
    }

    pub(crate) fn max_key_groups(&self) -> u16 {
        self.max_key_groups
    }

    fn push(&mut self, name: &str, kind: NodeKind, upstreams: &[usize]) -> usize {
        let id = self.nodes.len();
        for &u in upstreams {
            self.nodes[u].consumers.push(id);
        }
        self.nodes.push(Node {
            name: name.to_string(),
            kind,
            upstreams: upstreams.to_vec(),
            consumers: Vec::new(),
            requested: None,
            parallelism: 0,
            attach: None,
            source: None,
            exchange: None,
            recover: None,
            channel_codec: None,
            rebalance_before: None,
        });
        id
    }

    pub(crate) fn rename(&mut self, node: usize, name: &str) {
        self.nodes[node].name = name.to_string();
    }

    pub(crate) fn set_parallelism(&mut self, node: usize, n: u32) {
        self.nodes[node].requested = Some(n);
    }

    pub(crate) fn add_source<T: Data>(&mut self, name: &str, source: impl AsyncSource<T>) -> usize {
        let id = self.push(name, NodeKind::Source, &[]);
        self.nodes[id].source = Some(Arc::new(SourceDef::new(source)));
        id
    }

    /// A chained operator (or sink) taking `In` from `upstream`.
    pub(crate) fn add_op<In: Data>(
        &mut self,
        name: &str,
        upstream: usize,
        kind: NodeKind,
        attach: AttachFn<In>,
    ) -> usize {
        let id = self.push(name, kind, &[upstream]);
        let node = &mut self.nodes[id];
        node.attach = Some(Box::new(attach));
        let rebalance_name = format!("{name}.rebalance");
        node.rebalance_before = Some(Arc::new(move |b: &mut Builder, up: usize| {
            b.add_rebalance::<In>(&rebalance_name, up)
        }));
        id
    }

    /// Makes a rebalance inserted before keyed operator `node` (when it asks for another
    /// parallelism than its `key_by`) route by key group, so each key keeps one partition
    /// and one state.
    pub(crate) fn rekey_before<K: Data, V: Data>(&mut self, node: usize) {
        let name = format!("{}.rekey", self.nodes[node].name);
        self.nodes[node].rebalance_before = Some(Arc::new(move |b: &mut Builder, up: usize| {
            b.add_exchange::<Keyed<K, V>, Keyed<K, V>>(
                &name,
                up,
                Arc::new(|rec: Keyed<K, V>, rs: &mut super::exchange::RouteState| {
                    let p = rec.key_group.partition(rs.parallelism, rs.max_key_groups);
                    (p.0, rec)
                }),
            )
        }));
    }

    pub(crate) fn add_exchange<In: Data, W: Data>(
        &mut self,
        name: &str,
        upstream: usize,
        route: RouteFn<In, W>,
    ) -> usize {
        let id = self.push(name, NodeKind::Exchange, &[upstream]);
        let def = Arc::new(ExchangeDef::<In, W>::new(route));
        let attach_def = def.clone();
        let attach: AttachFn<In> =
            Arc::new(move |inst, node, _from, p| inst.exchange_input(node, &attach_def, p));
        self.nodes[id].attach = Some(Box::new(attach));
        self.nodes[id].exchange = Some(def);
        id
    }

    pub(crate) fn set_channel_codec<W: Data>(
        &mut self,
        node: usize,
        codec: super::exchange::ChannelCodec<W>,
    ) {
        self.nodes[node].channel_codec = Some(Box::new(Arc::new(codec)));
    }

    pub(crate) fn add_rebalance<T: Data>(&mut self, name: &str, upstream: usize) -> usize {
        self.add_exchange::<T, T>(
            name,
            upstream,
            Arc::new(|rec: T, rs: &mut super::exchange::RouteState| {
                let p = rs.round_robin % rs.parallelism;
                rs.round_robin = rs.round_robin.wrapping_add(1);
                (p, rec)
            }),
        )
    }

    pub(crate) fn add_union<T: Data>(&mut self, name: &str, inputs: &[usize]) -> usize {
        let id = self.push(name, NodeKind::Union, inputs);
        let attach: AttachFn<T> =
            Arc::new(move |inst, node, from, p| inst.union_input::<T>(node, from, p));
        self.nodes[id].attach = Some(Box::new(attach));
        id
    }

    pub(crate) fn add_sink<T: Data>(
        &mut self,
        name: &str,
        upstream: usize,
        sink: impl AsyncSink<T>,
    ) -> usize {
        let sink = Arc::new(sink);
        let recover_sink = sink.clone();
        let id = self.add_op::<T>(
            name,
            upstream,
            NodeKind::Sink,
            Arc::new(move |inst, node, _from, p| {
                let ctx: PartitionContext<'_> = inst.partition_context(node, p);
                match sink.open_partition(&ctx) {
                    Ok(part) => Box::new(SinkOp::new(inst, node, p, part)),
                    Err(e) => {
                        inst.fail(e);
                        Box::new(Discard)
                    }
                }
            }),
        );
        self.nodes[id].recover = Some(Arc::new(move |ctx: &RecoverContext<'_>| {
            recover_sink.recover_output(ctx)
        }));
        id
    }

    fn graph_error(&self, node: usize, reason: impl Into<String>) -> EngineError {
        EngineError::Graph {
            operator: self.nodes[node].name.clone(),
            reason: reason.into(),
        }
    }

    /// Resolves parallelism, inserts rebalances, checks the graph.
    pub(crate) fn build(mut self, default_parallelism: u32) -> Result<JobGraph> {
        if !self.nodes.iter().any(|n| n.kind == NodeKind::Source) {
            return Err(EngineError::Graph {
                operator: "(pipeline)".into(),
                reason: "a pipeline needs at least one source".into(),
            });
        }
        let max = u32::from(self.max_key_groups);
        let original = self.nodes.len();
        for id in 0..original {
            let requested = self.nodes[id].requested;
            if let Some(r) = requested {
                if r == 0 || r > max {
                    return Err(self.graph_error(
                        id,
                        format!("parallelism {r} is outside 1 ..= max_key_groups ({max})"),
                    ));
                }
            }
            let p = match self.nodes[id].kind {
                NodeKind::Source | NodeKind::Exchange => requested.unwrap_or(default_parallelism),
                NodeKind::Op | NodeKind::Sink => {
                    let up = self.nodes[id].upstreams[0];
                    let pu = self.nodes[up].parallelism;
                    match requested {
                        Some(r) if r != pu => {
                            // Break the chain: rebalance into `r` partitions first.
                            let make = self.nodes[id]
                                .rebalance_before
                                .clone()
                                .expect("chained operators can be rebalanced");
                            let x = make(&mut self, up);
                            // `push` linked up -> x; now unlink up -> id and link x -> id.
                            self.nodes[up].consumers.retain(|c| *c != id);
                            self.nodes[x].consumers.push(id);
                            self.nodes[x].parallelism = r;
                            self.nodes[x].requested = Some(r);
                            self.nodes[id].upstreams = vec![x];
                            r
                        }
                        _ => pu,
                    }
                }
                NodeKind::Union => {
                    let ups = self.nodes[id].upstreams.clone();
                    let mut sorted = ups.clone();
                    sorted.sort_unstable();
                    sorted.dedup();
                    if sorted.len() != ups.len() {
                        return Err(self.graph_error(id, "a stream is unioned with itself"));
                    }
                    let p0 = self.nodes[ups[0]].parallelism;
                    if let Some(u) = ups.iter().find(|u| self.nodes[**u].parallelism != p0) {
                        return Err(self.graph_error(
                            id,
                            format!(
                                "inputs have different parallelism ({} has {}, {} has {}); \
                                 add .rebalance() with .parallelism({p0}) on `{}` first",
                                self.nodes[ups[0]].name,
                                p0,
                                self.nodes[*u].name,
                                self.nodes[*u].parallelism,
                                self.nodes[*u].name
                            ),
                        ));
                    }
                    if requested.is_some_and(|r| r != p0) {
                        return Err(self.graph_error(
                            id,
                            "a union runs with its inputs' parallelism; set it on the inputs",
                        ));
                    }
                    p0
                }
            };
            if p == 0 || p > max {
                return Err(self.graph_error(
                    id,
                    format!("parallelism {p} is outside 1 ..= max_key_groups ({max})"),
                ));
            }
            self.nodes[id].parallelism = p;
        }
        let mut names: Vec<&str> = self.nodes.iter().map(|n| n.name.as_str()).collect();
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(EngineError::Graph {
                operator: w[0].to_string(),
                reason: "two operators have this name; names must be unique".into(),
            });
        }
        let max_parallelism = self.nodes.iter().map(|n| n.parallelism).max().unwrap_or(1);
        Ok(JobGraph {
            nodes: self.nodes,
            max_key_groups: self.max_key_groups,
            max_parallelism,
            process: crate::ids::Process::SINGLE,
        })
    }
}
