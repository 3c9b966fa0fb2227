//! rill-engine: a thread-per-core dataflow engine.
//!
//! Every configured CPU runs one glommio `LocalExecutor`, pinned to it, that owns a
//! *shard* of the job: the operator partitions placed on that core, their keyed state and
//! their metrics. Nothing is shared between cores; operators on one core call each other
//! directly (chaining), and a record changes core only at a repartition (`key_by`,
//! `rebalance`), over a bounded lock-free SPSC ring that also carries barriers,
//! watermarks and end-of-stream in-band. A full ring is backpressure; a core with nothing
//! to do spins briefly and then parks on its doorbell.
//!
//! - [`dataflow`]: the pipeline API (`Pipeline`, `Stream`, `KeyedStream`), the
//!   synchronous `Source`/`Sink` traits, and `AsyncSource`/`AsyncSink` for sources and
//!   sinks that wait for IO on their core without blocking it (`IoCx`).
//! - [`connectors`]: generator, file source, file and dead-letter sinks, latency sink.
//! - [`state`]: value, list and map state per key, stored per key group.
//! - [`config`]: job directories (`job.toml`, `cores/<cpu>.toml`).
//! - [`runtime`]: start-up checks, executors, rings, the per-core loop.
//! - [`asyncio`]: the async IO operator (`async_map`, `async_flat_map`) on per-core
//!   timers, with timeouts, retries, circuit breaking and checkpointed in-flight inputs.
//! - [`pipelines`]: the built-in pipelines (`latency`, `etl`).
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod asyncio;
pub mod checkpoint;
pub mod clock;
pub mod config;
pub mod connectors;
pub mod dataflow;
pub mod doctor;
pub mod error;
pub mod ids;
pub mod keys;
pub mod message;
pub mod metrics;
pub mod monitor;
pub mod pipelines;
pub mod ring;
pub mod runtime;
pub mod splitmix;
pub mod state;

pub use error::{ConfigError, EngineError, Result};
