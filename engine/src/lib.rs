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
//! - [`pipelines`]: the built-in pipelines the benchmark harness drives (`latency`,
//!   `keyed-async`, Nexmark q0–q8).
//! - [`app`]: the command line of a job's binary (`run`, `validate`, `checkpoints`,
//!   `savepoint`, `doctor`), for the built-ins and for a user's own pipelines.
//!
//! A job of your own is a crate on [`app`]: `fn main() -> ExitCode {
//! rill_engine::app::main("my-job", |ctx| { … Ok(pipeline) }) }`, reading its parameters
//! with [`app::Ctx::params`], its records marked [`record`]; the sources and sinks are
//! the [`dataflow::Source`] and [`dataflow::Sink`] traits. The page below, also
//! `docs/your-own-job.md` in the repository, builds one from `cargo new` on.
//!
#![doc = include_str!("../../docs/your-own-job.md")]
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod app;
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

/// Makes a struct or enum a record type: adds rkyv's `Archive`, `Serialize` and
/// `Deserialize` derives through [`rkyv`] (`#[rill_engine::record]` above the item).
pub use rill_macros::record;
/// rkyv, at the version the engine archives records with: a record type derives its
/// traits through this path (or through [`record`]), so a job needs no rkyv dependency of
/// its own.
pub use rkyv;
/// serde, for `[params]` types (`#[derive(rill_engine::serde::Deserialize)]` with
/// `#[serde(crate = "rill_engine::serde")]`, or a serde dependency of the job's own).
pub use serde;
