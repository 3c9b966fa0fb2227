//! `job.toml`: what a job runs (the pipeline's name, the engine's tables, the job's own
//! `[params]`). One serde tree with `deny_unknown_fields`; `Default` is the single
//! source of defaults; `validate` names the key and what would be valid. Reading files
//! lives in `config/mod.rs`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::asyncio::{AsyncConfig, LookupConfig};
use super::checkpoint::{CheckpointConfig, RestartConfig};
use crate::error::ConfigError;
use crate::keys::DEFAULT_MAX_KEY_GROUPS;

/// The pipelines built into the engine (the jobs the benchmark harness drives). A job
/// directory names one of them, or a pipeline its binary registered (see `app`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PipelineKind {
    /// Generator → key_by → per-key count → latency sink: the default latency job.
    Latency,
    /// Generator → key_by → per-key count → async lookup → latency sink.
    KeyedAsync,
    /// Nexmark q0: pass-through of the bids.
    NexmarkQ0,
    /// Nexmark q1: bid prices converted to euros.
    NexmarkQ1,
    /// Nexmark q2: bids on auctions whose id is a multiple of 123.
    NexmarkQ2,
    /// Nexmark q3: local item suggestion.
    NexmarkQ3,
    /// Nexmark q4: average winning price per category.
    NexmarkQ4,
    /// Nexmark q6: average winning price of a seller's last 10 auctions.
    NexmarkQ6,
    /// Nexmark q5: hot items (most bids per sliding window).
    NexmarkQ5,
    /// Nexmark q7: highest bid per tumbling window.
    NexmarkQ7,
    /// Nexmark q8: persons who opened an auction in the window they registered in.
    NexmarkQ8,
}

impl PipelineKind {
    /// Whether this is one of the Nexmark queries.
    pub fn is_nexmark(self) -> bool {
        !matches!(self, PipelineKind::Latency | PipelineKind::KeyedAsync)
    }
}

impl PipelineKind {
    /// Every built-in pipeline.
    pub const ALL: [PipelineKind; 11] = [
        PipelineKind::Latency,
        PipelineKind::KeyedAsync,
        PipelineKind::NexmarkQ0,
        PipelineKind::NexmarkQ1,
        PipelineKind::NexmarkQ2,
        PipelineKind::NexmarkQ3,
        PipelineKind::NexmarkQ4,
        PipelineKind::NexmarkQ5,
        PipelineKind::NexmarkQ6,
        PipelineKind::NexmarkQ7,
        PipelineKind::NexmarkQ8,
    ];

    /// The built-in pipeline called `name` in `job.toml`, if there is one.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }

    /// One line on what it does, for listings.
    pub fn about(self) -> &'static str {
        match self {
            PipelineKind::Latency => "generator → key_by → per-key count → latency sink",
            PipelineKind::KeyedAsync => {
                "generator → key_by → per-key count → async lookup → latency sink"
            }
            PipelineKind::NexmarkQ0 => "Nexmark q0: pass-through of the bids",
            PipelineKind::NexmarkQ1 => "Nexmark q1: bid prices in euros",
            PipelineKind::NexmarkQ2 => "Nexmark q2: bids on selected auctions",
            PipelineKind::NexmarkQ3 => "Nexmark q3: local item suggestion",
            PipelineKind::NexmarkQ4 => "Nexmark q4: average winning price per category",
            PipelineKind::NexmarkQ5 => "Nexmark q5: hot items",
            PipelineKind::NexmarkQ6 => "Nexmark q6: average selling price per seller",
            PipelineKind::NexmarkQ7 => "Nexmark q7: highest bid per window",
            PipelineKind::NexmarkQ8 => "Nexmark q8: new users who opened auctions",
        }
    }

    /// Its name in `job.toml`.
    pub fn name(self) -> &'static str {
        match self {
            PipelineKind::Latency => "latency",
            PipelineKind::KeyedAsync => "keyed-async",
            PipelineKind::NexmarkQ0 => "nexmark-q0",
            PipelineKind::NexmarkQ1 => "nexmark-q1",
            PipelineKind::NexmarkQ2 => "nexmark-q2",
            PipelineKind::NexmarkQ3 => "nexmark-q3",
            PipelineKind::NexmarkQ4 => "nexmark-q4",
            PipelineKind::NexmarkQ5 => "nexmark-q5",
            PipelineKind::NexmarkQ6 => "nexmark-q6",
            PipelineKind::NexmarkQ7 => "nexmark-q7",
            PipelineKind::NexmarkQ8 => "nexmark-q8",
        }
    }

    /// Whether the pipeline is driven by the `[generator]` (rate, duration, warm-up).
    pub fn has_generator(self) -> bool {
        matches!(self, PipelineKind::Latency | PipelineKind::KeyedAsync) || self.is_nexmark()
    }
}

/// The whole of `job.toml`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JobConfig {
    /// The pipeline to run: a built-in (`PipelineKind`) or one the binary registered.
    /// A job directory must name one; only the built-in default job (`rill run` without
    /// a directory) goes without.
    pub pipeline: Option<String>,
    /// Partitions of each operator; unset means one per configured core.
    pub parallelism: Option<u32>,
    /// Number of key groups keyed state is split into (the most partitions a keyed
    /// operator may have; fixed for the life of a job's checkpoints).
    pub max_key_groups: u16,
    /// The CPUs this job runs on; each needs a `cores/<cpu>.toml`. Unset means every
    /// file in `cores/`.
    pub cores: Option<Vec<usize>>,
    /// `keyed-async` only: the keys of the generated events.
    pub source: Option<SourceConfig>,
    /// The open-loop generator (`latency`, and the load of the `nexmark-*` queries).
    pub generator: Option<GeneratorConfig>,
    /// The Nexmark event generator and query parameters (`nexmark-*`).
    pub nexmark: Option<NexmarkConfig>,
    /// Checkpointing; absent means no checkpoints, no restore and a sink that commits
    /// at the end of the input.
    pub checkpoint: Option<CheckpointConfig>,
    /// What to do when the running job fails (see `RestartConfig`).
    pub restart: Option<RestartConfig>,
    /// The async operator (`keyed-async`, and any pipeline that reads it through
    /// `app::Ctx::async_options`).
    #[serde(rename = "async")]
    pub async_io: Option<AsyncConfig>,
    /// The service the async operator calls (`keyed-async`, and any pipeline that reads
    /// it through `app::Ctx::lookup`).
    pub lookup: Option<LookupConfig>,
    /// The job's own parameters, read typed by its pipeline (`app::Ctx::params`).
    pub params: Option<toml::Table>,
    /// The Prometheus text endpoint; absent means on, at the default loopback address.
    pub metrics: Option<MetricsConfig>,
    /// The stall detector; absent means on, with the default threshold.
    pub diagnostics: Option<DiagnosticsConfig>,
    /// This process's place when the job runs as several processes: `"i/N"`, process `i`
    /// of `N` (`rill run --process i/N` wins over it). Unset: one process (`"0/1"`).
    /// With `N > 1`, checkpoints must go to S3 (`[checkpoint] dir = "s3://..."`).
    pub process: Option<crate::ids::Process>,
}

/// `[metrics]`: the Prometheus text endpoint, served by the job's monitor thread from
/// figures each core publishes between two rounds of its loop.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Address of the endpoint (`GET /metrics`), `"off"` for none. Port 0 picks a free
    /// port (printed at start). When the table is absent and the default port is taken,
    /// the job runs without the endpoint and says so; an address set here must bind.
    pub listen: String,
    /// How often each core publishes its figures, ms: the freshness of a scrape.
    pub publish_ms: u64,
}

/// The endpoint's default address.
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9464";

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            listen: DEFAULT_METRICS_LISTEN.into(),
            publish_ms: 1_000,
        }
    }
}

impl MetricsConfig {
    /// The address to bind, `None` when off.
    pub fn addr(&self) -> Option<std::net::SocketAddr> {
        (self.listen != "off")
            .then(|| self.listen.parse().ok())
            .flatten()
    }
}

/// `[diagnostics]`: the stall detector.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiagnosticsConfig {
    /// A core that spends longer than this in one round of its loop — one operator call
    /// that does not return, such as a blocking call — is reported with the operator it
    /// was in, ms; 0 turns the detector off. The monitor samples every quarter of it.
    pub stall_threshold_ms: u64,
}

impl Default for DiagnosticsConfig {
    fn default() -> Self {
        Self {
            stall_threshold_ms: 20,
        }
    }
}

impl Default for JobConfig {
    fn default() -> Self {
        Self {
            pipeline: None,
            parallelism: None,
            max_key_groups: DEFAULT_MAX_KEY_GROUPS,
            cores: None,
            source: None,
            generator: None,
            nexmark: None,
            checkpoint: None,
            restart: None,
            async_io: None,
            lookup: None,
            params: None,
            metrics: None,
            diagnostics: None,
            process: None,
        }
    }
}

/// `[source]` (`keyed-async`): the generated events.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SourceConfig {
    /// Distinct keys of the generated events (unset: `generator.keys`).
    pub keys: Option<u64>,
}

/// `[generator]`: an open-loop event generator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GeneratorConfig {
    /// Target rate over all partitions, events per second. Each event is stamped with
    /// the time it was due, so a stalled engine shows up as latency, not a lower rate.
    pub rate_eps: u64,
    /// How long to generate, milliseconds (including the warm-up).
    pub duration_ms: u64,
    /// Events due in the first `warmup_ms` are processed but not measured.
    pub warmup_ms: u64,
    /// Number of distinct keys.
    pub keys: u64,
    /// Generator partitions; unset means one per configured core.
    pub partitions: Option<u32>,
    /// A deliberately slow sink: it busy-waits this long per record, ns (0: none). For
    /// backpressure experiments (e.g. unaligned against aligned checkpoints).
    pub sink_cost_ns: u64,
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        Self {
            rate_eps: 100_000,
            duration_ms: 5_000,
            warmup_ms: 1_000,
            keys: 10_000,
            partitions: None,
            sink_cost_ns: 0,
        }
    }
}

/// Where a Nexmark query's results go.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NexmarkSink {
    /// Counted and dropped (throughput runs).
    Discard,
    /// One CSV line per result under `nexmark.out`.
    File,
    /// Latency of each result: emission time − its event time (for windows: the
    /// window's end) mapped to the job clock.
    Latency,
}

/// `[nexmark]`: the Nexmark generator and query parameters. The load (rate, number of
/// events, partitions) comes from `[generator]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NexmarkConfig {
    /// Seed of the event generator.
    pub seed: u64,
    /// Events per second of *event time* (the inter-event delay); unset: the
    /// generator's `rate_eps`: each event's time is when it is due on the job clock (ms),
    /// or, flat out (`rate_eps` = 10⁹), event `n` is at `n` µs.
    pub event_rate_eps: Option<u64>,
    /// Window size of q5 (sliding), q7 and q8 (tumbling), ms.
    pub window_ms: u64,
    /// Slide of q5's window, ms.
    pub slide_ms: u64,
    /// Watermark bound (out-of-orderness), ms.
    pub watermark_bound_ms: u64,
    /// Watermark interval, ms.
    pub watermark_interval_ms: u64,
    /// A generator partition without events for this long declares itself idle, ms
    /// (unset: never).
    pub idle_timeout_ms: Option<u64>,
    /// Where the results go.
    pub sink: NexmarkSink,
    /// The output directory of the file sink.
    pub out: PathBuf,
}

impl Default for NexmarkConfig {
    fn default() -> Self {
        Self {
            seed: 0,
            event_rate_eps: None,
            window_ms: 10_000,
            slide_ms: 2_000,
            watermark_bound_ms: 0,
            watermark_interval_ms: 10,
            idle_timeout_ms: None,
            sink: NexmarkSink::Discard,
            out: PathBuf::from("out"),
        }
    }
}

/// Largest generator rate (keeps every derived count well inside `u64`).
const MAX_RATE_EPS: u64 = 1_000_000_000;
/// Longest generator run, ms (about 11.5 days).
const MAX_DURATION_MS: u64 = 1_000_000_000;

/// Longest time a `[checkpoint]`, `[restart]`, `[async]` or `[nexmark]` key may set, ms
/// (a day): longer is no setting that can work as meant, and every derived figure in
/// nanoseconds stays well inside `u64`.
pub(crate) const MAX_TIME_MS: u64 = 86_400_000;

/// `value` of `key` must lie in `lo ..= hi`; `unit` follows the range in the error
/// (e.g. "milliseconds (default 600000)").
pub(crate) fn within(
    file: &Path,
    key: &str,
    value: u64,
    lo: u64,
    hi: u64,
    unit: &str,
) -> Result<(), ConfigError> {
    if (lo..=hi).contains(&value) {
        Ok(())
    } else {
        Err(invalid(
            file,
            key,
            value.to_string(),
            &format!("{lo} ..= {hi} {unit}"),
        ))
    }
}

/// A `ConfigError::Invalid` for `key` of `file` (shared by the config modules).
pub(crate) fn invalid(file: &Path, key: &str, problem: String, valid: &str) -> ConfigError {
    ConfigError::Invalid {
        file: file.to_path_buf(),
        key: key.to_string(),
        problem,
        valid: valid.to_string(),
    }
}

impl JobConfig {
    /// Checks values serde cannot; `file` names `job.toml` in errors.
    pub fn validate(&self, file: &Path) -> Result<(), ConfigError> {
        super::scope::check_tables(file, self)?;
        if let (Some(p), Some(c)) = (self.process, &self.checkpoint) {
            if !p.is_single() && c.remote_url().is_none() {
                return Err(invalid(
                    file,
                    "checkpoint.dir",
                    format!("{:?} for process {p}", c.dir.display().to_string()),
                    "an s3://bucket/prefix location shared by every process: a job of \
                     several processes completes a checkpoint only once every process's \
                     part is in the store",
                ));
            }
        }
        if let Some(m) = &self.metrics {
            if m.listen != "off" && m.addr().is_none() {
                return Err(invalid(
                    file,
                    "metrics.listen",
                    format!("{:?}", m.listen),
                    "an IP address and port such as \"127.0.0.1:9464\" (port 0: any free port), or \"off\"",
                ));
            }
            if m.publish_ms == 0 || m.publish_ms > 60_000 {
                return Err(invalid(
                    file,
                    "metrics.publish_ms",
                    m.publish_ms.to_string(),
                    "1 ..= 60000 milliseconds (default 1000)",
                ));
            }
        }
        if let Some(d) = &self.diagnostics {
            if d.stall_threshold_ms > 60_000 {
                return Err(invalid(
                    file,
                    "diagnostics.stall_threshold_ms",
                    d.stall_threshold_ms.to_string(),
                    "0 (off) or 1 ..= 60000 milliseconds (default 20)",
                ));
            }
        }
        if self.max_key_groups == 0 {
            return Err(invalid(
                file,
                "max_key_groups",
                "0".into(),
                "1 ..= 32768 (default 128)",
            ));
        }
        if self.max_key_groups > 32_768 {
            return Err(invalid(
                file,
                "max_key_groups",
                self.max_key_groups.to_string(),
                "1 ..= 32768 (default 128)",
            ));
        }
        if let Some(p) = self.parallelism {
            if p == 0 || p > u32::from(self.max_key_groups) {
                return Err(invalid(
                    file,
                    "parallelism",
                    p.to_string(),
                    &format!("1 ..= max_key_groups ({})", self.max_key_groups),
                ));
            }
        }
        if let Some(cores) = &self.cores {
            if cores.is_empty() {
                return Err(invalid(
                    file,
                    "cores",
                    "[]".into(),
                    "a list of CPU ids with a cores/<cpu>.toml each, e.g. [0, 1]",
                ));
            }
            let mut sorted = cores.clone();
            sorted.sort_unstable();
            if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
                return Err(invalid(
                    file,
                    "cores",
                    format!("CPU {} is listed twice", w[0]),
                    "each CPU at most once",
                ));
            }
        }
        if let Some(c) = &self.checkpoint {
            c.validate(file)?;
        }
        if let Some(r) = &self.restart {
            r.validate(file)?;
        }
        if let Some(a) = &self.async_io {
            a.validate(file)?;
        }
        if let Some(l) = &self.lookup {
            l.validate(file)?;
        }
        if let Some(name) = &self.pipeline {
            if name.is_empty() {
                return Err(invalid(
                    file,
                    "pipeline",
                    "an empty name".into(),
                    "the name of a pipeline (`rill validate` lists them)",
                ));
            }
        }
        if self.source.as_ref().and_then(|s| s.keys) == Some(0) {
            return Err(invalid(file, "source.keys", "0".into(), "1 or more"));
        }
        if let Some(n) = &self.nexmark {
            n.validate(file)?;
        }
        if self.builtin().is_some_and(PipelineKind::has_generator) || self.generator.is_some() {
            self.validate_generator(file)?;
        }
        Ok(())
    }

    /// The built-in pipeline `job.toml` names; `None` for a pipeline of the job's own
    /// binary. A job without `pipeline` is the built-in default job (latency).
    pub fn builtin(&self) -> Option<PipelineKind> {
        match &self.pipeline {
            None => Some(PipelineKind::Latency),
            Some(name) => PipelineKind::from_name(name),
        }
    }

    /// Whether the pipeline is a built-in driven by the `[generator]`.
    pub fn has_generator(&self) -> bool {
        self.builtin().is_some_and(PipelineKind::has_generator)
    }

    /// The pipeline's name (`"latency"` for the built-in default job).
    pub fn pipeline_name(&self) -> &str {
        self.pipeline.as_deref().unwrap_or("latency")
    }

    fn validate_generator(&self, file: &Path) -> Result<(), ConfigError> {
        let g = self.generator.clone().unwrap_or_default();
        if g.rate_eps == 0 || g.rate_eps > MAX_RATE_EPS {
            return Err(invalid(
                file,
                "generator.rate_eps",
                g.rate_eps.to_string(),
                "1 ..= 1000000000 events per second",
            ));
        }
        if g.duration_ms == 0 || g.duration_ms > MAX_DURATION_MS {
            return Err(invalid(
                file,
                "generator.duration_ms",
                g.duration_ms.to_string(),
                "1 ..= 1000000000 milliseconds",
            ));
        }
        if g.warmup_ms >= g.duration_ms {
            return Err(invalid(
                file,
                "generator.warmup_ms",
                format!(
                    "{} is not below duration_ms ({})",
                    g.warmup_ms, g.duration_ms
                ),
                "less than generator.duration_ms",
            ));
        }
        if g.keys == 0 {
            return Err(invalid(file, "generator.keys", "0".into(), "1 or more"));
        }
        if g.partitions == Some(0) {
            return Err(invalid(
                file,
                "generator.partitions",
                "0".into(),
                "1 or more",
            ));
        }
        within(
            file,
            "generator.sink_cost_ns",
            g.sink_cost_ns,
            0,
            1_000_000_000,
            "nanoseconds per record (default 0)",
        )
    }
}

impl NexmarkConfig {
    /// Checks values serde cannot.
    fn validate(&self, file: &Path) -> Result<(), ConfigError> {
        let ms = "milliseconds";
        within(
            file,
            "nexmark.window_ms",
            self.window_ms,
            1,
            MAX_TIME_MS,
            ms,
        )?;
        within(file, "nexmark.slide_ms", self.slide_ms, 1, MAX_TIME_MS, ms)?;
        within(
            file,
            "nexmark.watermark_bound_ms",
            self.watermark_bound_ms,
            0,
            MAX_TIME_MS,
            ms,
        )?;
        within(
            file,
            "nexmark.watermark_interval_ms",
            self.watermark_interval_ms,
            1,
            MAX_TIME_MS,
            ms,
        )?;
        if let Some(t) = self.idle_timeout_ms {
            within(
                file,
                "nexmark.idle_timeout_ms",
                t,
                1,
                MAX_TIME_MS,
                "milliseconds, or unset for never",
            )?;
        }
        if let Some(r) = self.event_rate_eps {
            within(
                file,
                "nexmark.event_rate_eps",
                r,
                1,
                MAX_RATE_EPS,
                "events per second of event time, or unset for the generator's rate",
            )?;
        }
        Ok(())
    }
}
