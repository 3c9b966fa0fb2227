//! rill-bench: the open-loop latency benchmark harness of rill.
//!
//! A *scenario* is a job directory (`job.toml`, an optional `core.toml` template or a
//! `cores/` directory) plus load parameters (`load.toml`); see [`scenario`]. The harness
//! materialises the scenario into a temporary job directory for the machine it runs on,
//! runs it in-process through `rill_engine::runtime::Job` while the main thread prints
//! progress ([`runner`]), and turns the engine's `JobReport` into a report with latency
//! percentiles, throughput, CPU time, checkpoint and async statistics, the resolved
//! configuration and the machine ([`report`]). On top of single runs it does sweeps over
//! one parameter ([`sweep`], with the seed's C/T and N/t models in [`models`]), plots
//! ([`plot`]), a side-by-side run of the same job on timely-dataflow ([`peer`]) or Apache
//! Flink ([`flink`]), a noisy neighbour and the machine's floor ([`noise`]) and
//! comparisons of saved reports ([`compare`]). The Kafka scenario ([`kafka`],
//! [`kafka_cmd`]) drives a Kafka -> rill -> Kafka job open-loop through a real broker.
//!
//! The harness never changes how the engine runs; the one thing it adds is a copy of the
//! default latency pipeline with a sink that also keeps per-second histograms
//! ([`timeline`]), because the engine's report has no time series. Runs measured over a
//! window of time (`--rate max`, Nexmark without a latency sink) read the source's
//! counters from the job's metrics endpoint at the window's edges ([`scrape`]).

pub mod compare;
pub mod flink;
pub mod kafka;
pub mod kafka_cmd;
pub mod machine;
pub mod models;
pub mod noise;
pub mod peer;
pub mod plot;
pub mod report;
pub mod runner;
pub mod scenario;
pub mod scrape;
pub mod stats;
pub mod sweep;
pub mod timeline;
