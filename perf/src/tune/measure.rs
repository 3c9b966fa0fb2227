//! What one harness run measured, in the terms the models need: the arrival rate λ (in
//! all and per core), the async operator's IO time t, time in flight and at capacity,
//! the checkpoints' duration C and size, and latency. Read from the harness's
//! `RunOutcome` (the engine's `JobReport` and the resolved `JobSpec`) and its
//! `RunReport`; nothing is run or decided here.

use rill_bench::models::io_time_from_counters;
use rill_bench::report::RunReport;
use rill_bench::runner::RunOutcome;
use rill_engine::checkpoint::history::State;
use rill_engine::checkpoint::protocol::TriggerKind;
use rill_engine::config::asyncio::CapacitySetting;
use rill_engine::config::{CoreConfig, JobSpec, PipelineKind};
use serde::Serialize;

use super::model::restart_delay_ms;

/// The capacity an async partition ran with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum CapacityInEffect {
    /// From the core file's `async_capacity`.
    Core(usize),
    /// From job.toml's `[async] capacity`.
    Job(usize),
    /// `[async] capacity = "auto"` within `capacity_min ..= capacity_max`.
    Auto {
        /// `capacity_max`.
        max: usize,
    },
}

impl CapacityInEffect {
    /// The fixed bound, if there is one.
    pub fn fixed(self) -> Option<usize> {
        match self {
            Self::Core(n) | Self::Job(n) => Some(n),
            Self::Auto { .. } => None,
        }
    }

    /// How the capacity reads in a table.
    pub fn describe(self) -> String {
        match self {
            Self::Core(n) => format!("{n} (async_capacity)"),
            Self::Job(n) => format!("{n} ([async] capacity)"),
            Self::Auto { max } => format!("auto (max {max})"),
        }
    }
}

/// One core's part.
#[derive(Clone, Debug, Serialize)]
pub struct CoreFigures {
    /// The CPU.
    pub cpu: usize,
    /// Its core file as the engine resolved it.
    #[serde(skip)]
    pub config: CoreConfig,
    /// Records that reached the sinks on it.
    pub sink_records: u64,
    /// Its share of all sink records (its share of the keys).
    pub share: f64,
    /// Arrivals at this core's keyed (and async) partitions, events per second.
    pub rate_eps: f64,
    /// Arrivals on each ring this core receives on, events per second.
    pub ring_rate_eps: f64,
    /// Partitions of the async operator placed on it (0 without one).
    pub async_partitions: u32,
    /// Their capacity (without an async operator: none).
    pub capacity: Option<CapacityInEffect>,
}

/// The async operator's figures.
#[derive(Clone, Debug, Serialize)]
pub struct AsyncFigures {
    /// Partitions in all.
    pub partitions: u32,
    /// Mean IO time t (issue to completion), ms, from the engine's counters.
    pub io_time_ms: Option<f64>,
    /// Requests completed.
    pub completed: u64,
    /// Mean requests in flight per partition (Little's law on the measured times:
    /// Σ IO time / (run time × partitions)).
    pub mean_in_flight: Option<f64>,
    /// Fraction of the run the partitions spent full (counter `async_full_us`).
    pub full_fraction: Option<f64>,
}

/// Checkpoint figures.
#[derive(Clone, Debug, Serialize)]
pub struct CheckpointFigures {
    /// The configured interval, ms (none: only the final checkpoint).
    pub interval_ms: Option<u64>,
    /// Checkpoints completed during the run.
    pub completed: usize,
    /// Mean duration C (trigger to manifest), ms, of the complete periodic checkpoints
    /// (of every complete one when none is periodic). The mean, not the median: C/T is
    /// the fraction of time spent checkpointing, and a few slow fsyncs are part of it.
    pub duration_ms: Option<f64>,
    /// `(trigger time ms since the first trigger, duration ms)` of the complete periodic
    /// ones, in order.
    pub periodic: Vec<(f64, f64)>,
    /// `(trigger time ms since the first trigger, full size bytes)` of every complete one.
    pub sizes: Vec<(f64, u64)>,
    /// Incremental checkpoints (C then follows the changes, not the whole state).
    pub incremental: bool,
    /// The restart delay after a failure, ms.
    pub restart_delay_ms: f64,
}

/// Everything the advisor reads from one run.
#[derive(Clone, Debug, Serialize)]
pub struct Figures {
    /// The pipeline.
    #[serde(skip)]
    pub pipeline: String,
    /// The offered rate (generator pipelines), events per second.
    pub offered_eps: Option<f64>,
    /// The arrival rate λ the job must sustain: the offered rate, or for a file source
    /// what reached the sinks per second.
    pub arrival_eps: f64,
    /// The harness's throughput over the measured window.
    pub throughput_eps: f64,
    /// Every sink record over the run (start to last arrival), per second.
    pub sink_throughput_eps: f64,
    /// Whether the run kept up with the offered rate.
    pub kept_up: bool,
    /// Why not.
    pub keep_up_problems: Vec<String>,
    /// Wall time of the job, s.
    pub elapsed_s: f64,
    /// p99 latency, µs (none without latency samples).
    pub p99_us: Option<f64>,
    /// p99.9 latency, µs.
    pub p999_us: Option<f64>,
    /// Shard steps on which a driver was blocked by a full ring or async operator.
    pub backpressure_steps: u64,
    /// Per core.
    pub cores: Vec<CoreFigures>,
    /// The async operator, if the pipeline has one.
    pub async_io: Option<AsyncFigures>,
    /// Checkpoints, if the job has a `[checkpoint]` table.
    pub checkpoint: Option<CheckpointFigures>,
}

/// The mean of `v` (none when empty).
pub fn mean(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

/// Whether the job's pipeline has an async operator.
pub fn has_async(spec: &JobSpec) -> bool {
    // The example etl job enriches through an async lookup with `[params.enrich]`.
    spec.job.builtin() == Some(PipelineKind::KeyedAsync)
        || (spec.job.pipeline.as_deref() == Some("etl")
            && spec
                .job
                .params
                .as_ref()
                .is_some_and(|p| p.contains_key("enrich")))
}

/// Each count's share of the total (equal shares when the total is 0).
pub fn shares(counts: &[u64]) -> Vec<f64> {
    let total: u64 = counts.iter().sum();
    counts
        .iter()
        .map(|&c| {
            if total == 0 {
                1.0 / counts.len().max(1) as f64
            } else {
                c as f64 / total as f64
            }
        })
        .collect()
}

/// `total_us` over `partitions` partitions for `elapsed_s`, as a per-partition mean
/// (the mean number in flight when `total_us` is the sum of request times; the fraction
/// of time full when it is time spent full).
pub fn per_partition_mean(total_us: u64, elapsed_s: f64, partitions: u32) -> Option<f64> {
    (elapsed_s > 0.0 && partitions > 0)
        .then(|| total_us as f64 / (elapsed_s * 1e6 * f64::from(partitions)))
}

/// The capacity the async partitions on a core with `core` ran with.
pub fn capacity_in_effect(spec: &JobSpec, core: &CoreConfig) -> CapacityInEffect {
    let a = spec.job.async_io.clone().unwrap_or_default();
    match (core.async_capacity, a.capacity) {
        (Some(n), _) => CapacityInEffect::Core(n),
        (None, CapacitySetting::Fixed(n)) => CapacityInEffect::Job(n),
        (None, CapacitySetting::Auto(_)) => CapacityInEffect::Auto {
            max: a.capacity_max,
        },
    }
}

impl Figures {
    /// Reads the figures of one run.
    pub fn of(o: &RunOutcome, r: &RunReport) -> Self {
        let spec = &o.spec;
        let job = &o.report;
        let elapsed_s = job.elapsed.as_secs_f64();
        let is_gen = spec.job.has_generator();
        let offered_eps = r.load.offered_eps.map(|v| v as f64);
        let arrival_eps = offered_eps.unwrap_or(r.sink_throughput_eps);
        let with_async = has_async(spec);
        let parallelism = spec.default_parallelism();
        let placement = spec.placement(spec.max_parallelism()).unwrap_or_else(|_| {
            (0..parallelism as usize)
                .map(|p| p % spec.cores.len())
                .collect()
        });
        let sinks: Vec<u64> = spec
            .cores
            .iter()
            .map(|c| {
                job.shards
                    .iter()
                    .find(|s| s.core == c.cpu)
                    .and_then(|s| s.counters.get("sink_records").copied())
                    .unwrap_or(0)
            })
            .collect();
        let n = spec.cores.len();
        // Every core runs a generator partition (unless generator.partitions says
        // otherwise): a core's input arrives evenly from all n cores, one ring each from
        // the others. Otherwise assume all of it could come over one ring.
        let even_sources = is_gen
            && spec
                .job
                .generator
                .as_ref()
                .and_then(|g| g.partitions)
                .is_none_or(|p| p as usize == n);
        let cores = spec
            .cores
            .iter()
            .zip(shares(&sinks))
            .enumerate()
            .map(|(ci, (c, share))| {
                let rate = arrival_eps * share;
                CoreFigures {
                    cpu: c.cpu.0,
                    config: c.config.clone(),
                    sink_records: sinks[ci],
                    share,
                    rate_eps: rate,
                    ring_rate_eps: if even_sources { rate / n as f64 } else { rate },
                    async_partitions: if with_async {
                        placement
                            .iter()
                            .take(parallelism as usize)
                            .filter(|&&owner| owner == ci)
                            .count() as u32
                    } else {
                        0
                    },
                    capacity: with_async.then(|| capacity_in_effect(spec, &c.config)),
                }
            })
            .collect();
        let async_io = with_async.then(|| AsyncFigures {
            partitions: parallelism,
            io_time_ms: io_time_from_counters(&job.counters),
            completed: job.counter("async_completed"),
            mean_in_flight: job
                .counters
                .get("async_io_time_us_total")
                .and_then(|&t| per_partition_mean(t, elapsed_s, parallelism)),
            full_fraction: job
                .counters
                .get("async_full_us")
                .and_then(|&t| per_partition_mean(t, elapsed_s, parallelism)),
        });
        let checkpoint = spec.job.checkpoint.as_ref().map(|c| {
            let mut done: Vec<_> = job
                .checkpoints
                .iter()
                .filter(|e| e.state == State::Complete)
                .collect();
            done.sort_by_key(|e| e.triggered_unix_ms);
            let t0 = done.first().map_or(0, |e| e.triggered_unix_ms);
            let at = |e: &rill_engine::checkpoint::history::Entry| {
                e.triggered_unix_ms.saturating_sub(t0) as f64
            };
            let periodic: Vec<(f64, f64)> = done
                .iter()
                .filter(|e| e.kind == TriggerKind::Periodic)
                .map(|e| (at(e), e.duration_ms))
                .collect();
            let durations: Vec<f64> = if periodic.is_empty() {
                done.iter().map(|e| e.duration_ms).collect()
            } else {
                periodic.iter().map(|p| p.1).collect()
            };
            CheckpointFigures {
                interval_ms: c.interval_ms,
                completed: done.len(),
                duration_ms: mean(&durations),
                periodic,
                sizes: done.iter().map(|e| (at(e), e.bytes_full)).collect(),
                incremental: c.incremental,
                restart_delay_ms: restart_delay_ms(spec.job.restart.as_ref()),
            }
        });
        let samples = r.latency_samples.get("total").copied().unwrap_or(0);
        let lat = |k: &str| {
            (samples > 0)
                .then(|| r.latency_us.get(k).copied())
                .flatten()
        };
        Self {
            pipeline: spec.job.pipeline_name().to_string(),
            offered_eps,
            arrival_eps,
            throughput_eps: r.throughput_eps,
            sink_throughput_eps: r.sink_throughput_eps,
            kept_up: r.kept_up,
            keep_up_problems: r.keep_up_problems.clone(),
            elapsed_s,
            p99_us: lat("p99"),
            p999_us: lat("p999"),
            backpressure_steps: job.counter("backpressure_steps"),
            cores,
            async_io,
            checkpoint,
        }
    }

    /// The figures of the core on `cpu`.
    pub fn core(&self, cpu: usize) -> Option<&CoreFigures> {
        self.cores.iter().find(|c| c.cpu == cpu)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mean_counts_the_slow_ones() {
        assert_eq!(mean(&[]), None);
        assert_eq!(mean(&[2.0, 2.0, 20.0]), Some(8.0));
    }

    #[test]
    fn shares_split_the_records_and_fall_back_to_equal() {
        assert_eq!(shares(&[3, 1]), vec![0.75, 0.25]);
        assert_eq!(shares(&[0, 0]), vec![0.5, 0.5]);
        assert_eq!(shares(&[]), Vec::<f64>::new());
    }

    #[test]
    fn per_partition_means_are_littles_law_on_the_counters() {
        // 2 partitions for 2 s with 40 s of request time: 10 in flight on average each.
        assert_eq!(per_partition_mean(40_000_000, 2.0, 2), Some(10.0));
        // Full for 1 s of partition time out of 4: a quarter.
        assert_eq!(per_partition_mean(1_000_000, 2.0, 2), Some(0.25));
        assert_eq!(per_partition_mean(1, 0.0, 2), None);
        assert_eq!(per_partition_mean(1, 1.0, 0), None);
    }

    #[test]
    fn the_core_files_capacity_beats_the_jobs() {
        let mut job: rill_engine::config::JobConfig = toml::from_str(
            "pipeline = \"keyed-async\"\n[async]\ncapacity = 7\ncapacity_max = 90\n",
        )
        .unwrap();
        let spec = JobSpec::with_cores(
            std::path::Path::new("."),
            job.clone(),
            &[0],
            CoreConfig::default(),
        );
        assert!(has_async(&spec));
        let core = CoreConfig {
            async_capacity: Some(3),
            ..CoreConfig::default()
        };
        assert_eq!(capacity_in_effect(&spec, &core), CapacityInEffect::Core(3));
        assert_eq!(
            capacity_in_effect(&spec, &CoreConfig::default()),
            CapacityInEffect::Job(7)
        );
        job.async_io.as_mut().unwrap().capacity =
            CapacitySetting::Auto(rill_engine::config::asyncio::AutoWord::Auto);
        let spec = JobSpec::with_cores(std::path::Path::new("."), job, &[0], CoreConfig::default());
        assert_eq!(
            capacity_in_effect(&spec, &CoreConfig::default()),
            CapacityInEffect::Auto { max: 90 }
        );
        assert_eq!(CapacityInEffect::Auto { max: 90 }.fixed(), None);
    }
}
