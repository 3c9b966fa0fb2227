//! The pipeline API: a typed builder a Rust user writes pipelines with (`source`, `map`,
//! `filter`, `flat_map`, `key_by`, `rebalance`, `union`, `process`, `sink`), turned by
//! `Pipeline::build` into a `JobGraph` that every core instantiates for the partitions it
//! owns. Operators between two exchanges are chained (direct calls); records change core
//! only at `key_by` and `rebalance`. This module owns the user-facing types; the graph,
//! the exchanges and the per-core instantiation live in the submodules.
//!
//! ```no_run
//! use rill_engine::dataflow::{Pipeline, Out};
//! use rill_engine::connectors::{FileSource, FileSink};
//!
//! let p = Pipeline::new(128);
//! let lines = p.source("read", FileSource::new("in.txt")).parallelism(1);
//! let words = lines.flat_map("split", |l, out: &mut Out<'_, String>| {
//!     for w in String::from_utf8_lossy(&l.line).split_whitespace() {
//!         out.emit(w.to_string());
//!     }
//! });
//! words
//!     .key_by("by-word", |w: &String| w.clone())
//!     .process("count", |init| {
//!         let count = init.value::<u64>("count");
//!         move |ctx, word: String, out: &mut Out<'_, String>| {
//!             let n = count.update(ctx, || 0, |c| { *c += 1; *c });
//!             out.emit(format!("{word},{n}"));
//!         }
//!     })
//!     .sink("write", FileSink::lines("out"));
//! let graph = p.build(2).unwrap();
//! # let _ = graph;
//! ```

#[cfg(test)]
mod alignment_tests;
mod async_stream;
#[doc(hidden)]
pub mod bench;
mod connector;
pub(crate) mod exchange;
pub(crate) mod graph;
pub(crate) mod instantiate;
pub(crate) mod io;
pub mod joins;
pub(crate) mod ops;
mod sink_op;
pub mod timers;
pub mod watermarks;
pub mod windows;

use std::cell::RefCell;
use std::hash::Hash;
use std::marker::PhantomData;
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;

pub use self::connector::{
    AsyncApi, AsyncSink, AsyncSinkPartition, AsyncSource, AsyncSourcePartition, FromSyncSink,
    FromSyncSource, IntoSink, IntoSource, Sink, SinkPartition, Source, SourcePartition, SourcePoll,
    SyncApi,
};
pub use self::graph::JobGraph;
use self::graph::{Builder, NodeKind};
pub use self::io::IoCx;
use self::ops::BoxEmit;
pub use self::ops::{EmitFn, Out};
pub use self::timers::{KeyedProcess, TimeDomain, TimerCtx};
pub use self::watermarks::{SplitWatermarks, WatermarkStrategy, Watermarked};
use crate::checkpoint::codec::Record;
use crate::clock::MonotonicClock;
use crate::error::Result;
use crate::ids::{CheckpointId, CoreId, KeyGroup, PartitionId};
use crate::keys::key_group_of;
use crate::metrics::MetricsHandle;
use crate::state::{KeyCtx, StateInit};
pub use rill_storage::Uring;

/// What a record type must be: movable to another core and clonable for fan-out.
pub trait Data: Clone + Send + 'static {}
impl<T: Clone + Send + 'static> Data for T {}

/// A record on a keyed stream: its key, the key's group and the value.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Keyed<K, V> {
    /// The key the stream is partitioned by.
    pub key: K,
    /// The key's group (decides the owning partition and where its state lives).
    pub key_group: KeyGroup,
    /// The record.
    pub value: V,
}

/// What a source or sink partition is told about itself when it is created.
#[derive(Clone)]
pub struct PartitionContext<'a> {
    /// The operator's name.
    pub operator: &'a str,
    /// This partition.
    pub partition: PartitionId,
    /// How many partitions the operator has.
    pub parallelism: u32,
    /// The core this partition runs on.
    pub core: CoreId,
    /// The job directory (relative paths resolve against it).
    pub job_dir: &'a Path,
    /// The job's clock (shared origin across cores).
    pub clock: MonotonicClock,
    /// This core's metrics.
    pub metrics: MetricsHandle,
    /// Whether the job checkpoints: a sink then commits at checkpoints (pre-commit at
    /// the barrier, commit when it completes) instead of at the end of its input.
    pub transactional: bool,
    /// This process's place among the job's processes (`--process i/N`): a source of
    /// partitioned input (Kafka) reads only this process's share, a transactional sink
    /// names its transactions per process.
    pub process: crate::ids::Process,
}

impl PartitionContext<'_> {
    /// `path` resolved against the job directory.
    pub fn resolve(&self, path: &Path) -> std::path::PathBuf {
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.job_dir.join(path)
        }
    }
}

/// What a sink is told before a (re)started job creates its partitions.
#[derive(Clone, Debug)]
pub struct RecoverContext<'a> {
    /// The sink's operator name.
    pub operator: &'a str,
    /// The job directory.
    pub job_dir: &'a Path,
    /// Whether the job checkpoints (the sink is transactional).
    pub transactional: bool,
    /// The checkpoint the job restores from (`None`: a fresh start).
    pub restored: Option<CheckpointId>,
}

/// A pipeline under construction. Cheap handles (`Stream`) refer back to it.
pub struct Pipeline {
    b: Rc<RefCell<Builder>>,
}

impl Pipeline {
    /// A new pipeline whose keyed state is split into `max_key_groups` key groups.
    pub fn new(max_key_groups: u16) -> Self {
        assert!(max_key_groups >= 1, "at least one key group");
        Self {
            b: Rc::new(RefCell::new(Builder::new(max_key_groups))),
        }
    }

    /// Adds a source: a [`Source`] (synchronous partitions) or an [`AsyncSource`]
    /// (partitions that may wait for IO).
    pub fn source<T: Data, M>(&self, name: &str, source: impl IntoSource<T, M>) -> Stream<T> {
        let node = self.b.borrow_mut().add_source(name, source.into_source());
        Stream::at(&self.b, node)
    }

    /// Adds a source whose partitions emit watermarks by `strategy` from the event time
    /// (ms) `ts` gives each record.
    pub fn source_with_watermarks<T: Data, M>(
        &self,
        name: &str,
        source: impl IntoSource<T, M>,
        ts: impl Fn(&T) -> u64 + Send + Sync + 'static,
        strategy: WatermarkStrategy,
    ) -> Stream<T> {
        self.source(name, Watermarked::new(source.into_source(), ts, strategy))
    }

    /// Finishes the pipeline: operators without an explicit parallelism get
    /// `default_parallelism` (usually one partition per core), rebalances are inserted
    /// where a chained operator asks for a different parallelism than its input, and the
    /// graph is checked. Streams of this pipeline must not be used afterwards.
    pub fn build(self, default_parallelism: u32) -> Result<JobGraph> {
        let max_key_groups = self.b.borrow().max_key_groups();
        let b = std::mem::replace(&mut *self.b.borrow_mut(), Builder::new(max_key_groups));
        b.build(default_parallelism)
    }
}

/// A stream of `T` records: the output of one operator.
pub struct Stream<T> {
    b: Rc<RefCell<Builder>>,
    node: usize,
    _t: PhantomData<fn() -> T>,
}

impl<T> Clone for Stream<T> {
    fn clone(&self) -> Self {
        Self {
            b: self.b.clone(),
            node: self.node,
            _t: PhantomData,
        }
    }
}

impl<T: Data, E: Data> Stream<std::result::Result<T, E>> {
    /// Splits the output of a fallible step (a parse, a validation) in two: the values
    /// (`ok`, an operator of that name) and the errors (`err`), each a stream of its own,
    /// chained on the same partitions. The usual use routes the errors to a dead-letter
    /// sink:
    ///
    /// ```ignore
    /// let (events, malformed) = lines.map("parse", parse).split_errors("valid", "malformed");
    /// malformed.sink("dead-letter", DeadLetterSink::new("dead-letter.jsonl")).parallelism(1);
    /// ```
    pub fn split_errors(&self, ok: &str, err: &str) -> (Stream<T>, Stream<E>) {
        let errors = self.flat_map(err, |r: std::result::Result<T, E>, out: &mut Out<'_, E>| {
            if let Err(e) = r {
                out.emit(e);
            }
        });
        let values = self.flat_map(ok, |r: std::result::Result<T, E>, out: &mut Out<'_, T>| {
            if let Ok(v) = r {
                out.emit(v);
            }
        });
        (values, errors)
    }
}

/// A sink added to a pipeline; lets its parallelism be set.
pub struct SinkHandle {
    b: Rc<RefCell<Builder>>,
    node: usize,
}

impl SinkHandle {
    /// Runs the sink with `n` partitions (a rebalance is inserted when its input has a
    /// different parallelism).
    pub fn parallelism(self, n: u32) -> Self {
        self.b.borrow_mut().set_parallelism(self.node, n);
        self
    }
}

impl<T: Data> Stream<T> {
    fn at(b: &Rc<RefCell<Builder>>, node: usize) -> Self {
        Self {
            b: b.clone(),
            node,
            _t: PhantomData,
        }
    }

    /// Sets this operator's parallelism. On a source, `key_by` or `rebalance` it sets the
    /// number of partitions; on a chained operator with a different parallelism than its
    /// input, a rebalance is inserted before it (as Flink does).
    pub fn parallelism(self, n: u32) -> Self {
        self.b.borrow_mut().set_parallelism(self.node, n);
        self
    }

    /// Gives this operator a name (used in errors, metrics and config).
    pub fn name(self, name: &str) -> Self {
        self.b.borrow_mut().rename(self.node, name);
        self
    }

    /// Adds a chained operator whose per-partition instance `make` builds around the
    /// chain it feeds.
    fn chained<U: Data>(
        &self,
        name: &str,
        make: impl Fn(BoxEmit<U>) -> BoxEmit<T> + Send + Sync + 'static,
    ) -> Stream<U> {
        let node = self.b.borrow_mut().add_op::<T>(
            name,
            self.node,
            NodeKind::Op,
            Arc::new(move |inst, node, _from, p| make(inst.downstream::<U>(node, p))),
        );
        Stream::at(&self.b, node)
    }

    /// Applies `f` to every record.
    pub fn map<U: Data>(
        &self,
        name: &str,
        f: impl Fn(T) -> U + Send + Sync + 'static,
    ) -> Stream<U> {
        let f = Arc::new(f);
        self.chained(name, move |down| {
            let f = f.clone();
            Box::new(ops::MapOp {
                f: move |t| f(t),
                down,
            })
        })
    }

    /// Keeps the records for which `f` is true.
    pub fn filter(&self, name: &str, f: impl Fn(&T) -> bool + Send + Sync + 'static) -> Stream<T> {
        let f = Arc::new(f);
        self.chained(name, move |down| {
            let f = f.clone();
            Box::new(ops::FilterOp {
                f: move |t: &T| f(t),
                down,
            })
        })
    }

    /// Turns every record into any number of records.
    pub fn flat_map<U: Data>(
        &self,
        name: &str,
        f: impl Fn(T, &mut Out<'_, U>) + Send + Sync + 'static,
    ) -> Stream<U> {
        let f = Arc::new(f);
        self.chained(name, move |down| {
            let f = f.clone();
            Box::new(ops::FlatMapOp {
                f: move |t, out: &mut Out<'_, U>| f(t, out),
                down,
            })
        })
    }

    /// Repartitions by key: `key` → key group → owning partition → its core, over a ring
    /// when that core is another one. Records crossing it may be persisted as the channel
    /// state of unaligned checkpoints, so key and record must be archivable
    /// (`(u32, Keyed<K, T>): Record`: integers, strings, vectors, tuples, and types
    /// deriving `rkyv::Archive`, `rkyv::Serialize`, `rkyv::Deserialize`).
    pub fn key_by<K: Data + Hash + Eq>(
        &self,
        name: &str,
        key: impl Fn(&T) -> K + Send + Sync + 'static,
    ) -> KeyedStream<K, T>
    where
        (u32, Keyed<K, T>): Record,
    {
        let node = self.b.borrow_mut().add_exchange::<T, Keyed<K, T>>(
            name,
            self.node,
            Arc::new(move |rec: T, rs: &mut exchange::RouteState| {
                let k = key(&rec);
                let kg = key_group_of(&k, rs.max_key_groups);
                let p = kg.partition(rs.parallelism, rs.max_key_groups);
                (
                    p.0,
                    Keyed {
                        key: k,
                        key_group: kg,
                        value: rec,
                    },
                )
            }),
        );
        self.b.borrow_mut().set_channel_codec(
            node,
            exchange::ChannelCodec::<Keyed<K, T>>::new(|w, _old, rs| {
                w.key_group.partition(rs.parallelism, rs.max_key_groups).0
            }),
        );
        KeyedStream {
            inner: Stream::at(&self.b, node),
        }
    }

    /// Repartitions round-robin over the next operator's partitions.
    pub fn rebalance(&self, name: &str) -> Stream<T> {
        let node = self.b.borrow_mut().add_rebalance::<T>(name, self.node);
        Stream::at(&self.b, node)
    }

    /// Merges this stream with `other` (same record type and parallelism).
    pub fn union(&self, name: &str, other: &Stream<T>) -> Stream<T> {
        let node = self
            .b
            .borrow_mut()
            .add_union::<T>(name, &[self.node, other.node]);
        Stream::at(&self.b, node)
    }

    /// Writes every record to `sink`: a [`Sink`] (synchronous partitions) or an
    /// [`AsyncSink`] (partitions that may wait for IO).
    pub fn sink<M>(&self, name: &str, sink: impl IntoSink<T, M>) -> SinkHandle {
        let node = self
            .b
            .borrow_mut()
            .add_sink::<T>(name, self.node, sink.into_sink());
        SinkHandle {
            b: self.b.clone(),
            node,
        }
    }
}

/// A stream partitioned by key: records carry their key and key group, and `process`
/// functions get keyed state scoped to the current key.
pub struct KeyedStream<K, V> {
    inner: Stream<Keyed<K, V>>,
}

impl<K: Data + Hash + Eq, V: Data> KeyedStream<K, V> {
    /// Sets the number of partitions of the keyed side (at most `max_key_groups`).
    pub fn parallelism(self, n: u32) -> Self {
        Self {
            inner: self.inner.parallelism(n),
        }
    }

    /// The stream of `Keyed` records itself.
    pub fn as_stream(&self) -> Stream<Keyed<K, V>> {
        self.inner.clone()
    }

    /// Runs a keyed function with keyed state. `factory` is called once per partition
    /// (on its core) to declare state and return the per-record function. Given another
    /// parallelism than its `key_by`, it is re-keyed (not round-robined) into it.
    pub fn process<U, F, G>(&self, name: &str, factory: G) -> Stream<U>
    where
        U: Data,
        G: Fn(&mut StateInit<K>) -> F + Send + Sync + 'static,
        F: FnMut(&KeyCtx<'_, K>, V, &mut Out<'_, U>) + 'static,
    {
        let factory = Arc::new(factory);
        let b = &self.inner.b;
        let node = b.borrow_mut().add_op::<Keyed<K, V>>(
            name,
            self.inner.node,
            NodeKind::Op,
            Arc::new(move |inst, node, _from, p| {
                let mut init =
                    StateInit::with_incremental(inst.max_key_groups(), inst.incremental());
                let f = factory(&mut init);
                let keyed = instantiate::KeyedPart::new(inst, node, p, init);
                Box::new(instantiate::ProcessOp {
                    f,
                    keyed,
                    down: inst.downstream::<U>(node, p),
                    _k: PhantomData,
                })
            }),
        );
        b.borrow_mut().rekey_before::<K, V>(node);
        Stream::at(b, node)
    }
}
