//! `[checkpoint]` and `[restart]` of `job.toml`: when checkpoints are taken, how barriers
//! are aligned, where the log lives, how many are kept, and what happens when the running
//! job fails. Keys and meanings follow Flink's (`execution.checkpointing.*`,
//! `restart-strategy.*`). Defaults live in the `Default` impls only.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::job::{invalid, within, MAX_TIME_MS};
use crate::error::ConfigError;

/// Exactly-once aligns barriers; at-least-once lets records overtake them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CheckpointMode {
    /// An input that delivered barrier n is held until every input has (no duplicates
    /// after a restore).
    ExactlyOnce,
    /// Nothing is held; records after a barrier may be in the snapshot and be replayed
    /// (duplicates possible after a restore, nothing lost).
    AtLeastOnce,
}

/// `[checkpoint]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CheckpointConfig {
    /// Time between the starts of two periodic checkpoints, ms. Unset: no periodic
    /// checkpoints (savepoints and the final checkpoint of a bounded job still happen).
    pub interval_ms: Option<u64>,
    /// `"exactly-once"` or `"at-least-once"`.
    pub mode: CheckpointMode,
    /// A checkpoint not complete this long after its trigger is aborted, ms.
    pub timeout_ms: u64,
    /// Least time from the end of one checkpoint to the trigger of the next, ms (when
    /// above 0, at most one checkpoint is in flight).
    pub min_pause_ms: u64,
    /// Most checkpoints in flight at once.
    pub max_concurrent: usize,
    /// Consecutive failed checkpoints tolerated; one more fails (and restarts) the job.
    pub tolerable_failures: u32,
    /// Complete checkpoints kept on disk (savepoints are never deleted).
    pub retained: usize,
    /// Where the logs, manifests and history live; relative to the job directory. Or
    /// `s3://bucket/prefix`: checkpoints go to S3-compatible object storage (endpoint,
    /// region and credentials from the standard AWS environment variables), with the log
    /// written first to `local_dir`.
    pub dir: PathBuf,
    /// With an `s3://` `dir`: the local directory of the write-ahead log, manifests and
    /// history (relative to the job directory). Default `.rill/checkpoint-log`.
    pub local_dir: Option<PathBuf>,
    /// Start aligned, and switch to unaligned (forward the barrier at once, persist the
    /// records still arriving on inputs without it as channel state) when alignment
    /// takes longer than `aligned_timeout_ms`. Exactly-once only.
    pub unaligned: bool,
    /// With `unaligned`: how long alignment may take before it switches, ms (0: unaligned
    /// from the first barrier).
    pub aligned_timeout_ms: u64,
    /// Write only the keys changed since the previous checkpoint (deltas chained to a
    /// full snapshot per key group). Default true: a checkpoint's work on the core is
    /// then in proportion to what changed; false archives every key every time.
    pub incremental: bool,
    /// With `incremental`: the longest delta chain per key group before a full snapshot
    /// of that key group is written again (the groups' first chains are staggered, so
    /// about 1/`max_chain` of the groups compact at each checkpoint).
    pub max_chain: usize,
    /// At a barrier a keyed operator only freezes its key groups; the core archives them
    /// afterwards, between rounds of its loop, at most this long per round (µs; one key
    /// group is never split, so a round can take one group's archiving longer).
    pub archive_slice_us: u64,
    /// Size each core's log segments are preallocated to and rolled at, MiB (a record
    /// larger than this gets a segment of its own). Every core holds one open segment.
    pub segment_preallocate_mib: u64,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        Self {
            interval_ms: None,
            mode: CheckpointMode::ExactlyOnce,
            timeout_ms: 600_000,
            min_pause_ms: 0,
            max_concurrent: 1,
            tolerable_failures: 0,
            retained: 3,
            dir: PathBuf::from("checkpoints"),
            local_dir: None,
            unaligned: false,
            aligned_timeout_ms: 0,
            incremental: true,
            max_chain: 16,
            archive_slice_us: 100,
            segment_preallocate_mib: 4,
        }
    }
}

/// `strategy` of `[restart]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartKind {
    /// Fail the job at the first failure.
    None,
    /// Restart up to `attempts` times, `delay_ms` apart.
    FixedDelay,
    /// Restart after a backoff that grows by `multiplier` from `initial_backoff_ms` to
    /// `max_backoff_ms`, reset after `reset_after_ms` without failure.
    ExponentialDelay,
}

/// `[restart]`: the restart strategy. Without the table, a job with checkpoints restarts
/// with `exponential-delay` and its defaults (as Flink does); a job without fails.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RestartConfig {
    /// `"none"`, `"fixed-delay"` or `"exponential-delay"`.
    pub strategy: RestartKind,
    /// fixed-delay: restarts before giving up. exponential-delay: unset means unlimited.
    pub attempts: Option<u32>,
    /// fixed-delay: time between a failure and the restart, ms.
    pub delay_ms: u64,
    /// exponential-delay: the first backoff, ms.
    pub initial_backoff_ms: u64,
    /// exponential-delay: the largest backoff, ms.
    pub max_backoff_ms: u64,
    /// exponential-delay: backoff growth per failure (at least 1).
    pub multiplier: f64,
    /// exponential-delay: a run this long without failure resets the backoff, ms.
    pub reset_after_ms: u64,
    /// exponential-delay: random spread of each backoff, as a fraction (0 ..= 1).
    pub jitter: f64,
}

impl Default for RestartConfig {
    fn default() -> Self {
        Self {
            strategy: RestartKind::ExponentialDelay,
            attempts: None,
            delay_ms: 1_000,
            initial_backoff_ms: 1_000,
            max_backoff_ms: 60_000,
            multiplier: 1.5,
            reset_after_ms: 3_600_000,
            jitter: 0.1,
        }
    }
}

impl CheckpointConfig {
    /// The log writer's configuration: segments of `segment_preallocate_mib`.
    pub fn log_config(&self) -> rill_storage::LogConfig {
        rill_storage::LogConfig {
            segment_bytes: self.segment_preallocate_mib << 20,
            // Each write is submitted from the core, and a buffered write's copy into
            // the page cache happens in that submission: small writes keep each copy
            // short (a 4 MiB one held the core for milliseconds).
            max_write_bytes: 256 << 10,
        }
    }

    /// The `s3://bucket/prefix` checkpoints go to, when `dir` is one.
    pub fn remote_url(&self) -> Option<&str> {
        self.dir.to_str().filter(|d| d.starts_with("s3://"))
    }

    /// The local directory of the log, the manifests and the history, as configured
    /// (relative to the job directory): `dir`, or with an `s3://` `dir` `local_dir` (by
    /// default `.rill/checkpoint-log`).
    pub fn local_path(&self) -> PathBuf {
        match (self.remote_url(), &self.local_dir) {
            (None, _) => self.dir.clone(),
            (Some(_), Some(l)) => l.clone(),
            (Some(_), None) => PathBuf::from(".rill").join("checkpoint-log"),
        }
    }

    /// The periodic interval, if any.
    pub fn interval(&self) -> Option<Duration> {
        self.interval_ms.map(Duration::from_millis)
    }

    /// Checks values serde cannot.
    pub fn validate(&self, file: &Path) -> Result<(), ConfigError> {
        if let Some(i) = self.interval_ms {
            within(
                file,
                "checkpoint.interval_ms",
                i,
                1,
                MAX_TIME_MS,
                "milliseconds, or leave it unset for no periodic checkpoints",
            )?;
        }
        within(
            file,
            "checkpoint.timeout_ms",
            self.timeout_ms,
            1,
            MAX_TIME_MS,
            "milliseconds (default 600000)",
        )?;
        within(
            file,
            "checkpoint.min_pause_ms",
            self.min_pause_ms,
            0,
            MAX_TIME_MS,
            "milliseconds (default 0)",
        )?;
        within(
            file,
            "checkpoint.aligned_timeout_ms",
            self.aligned_timeout_ms,
            0,
            MAX_TIME_MS,
            "milliseconds (default 0)",
        )?;
        if self.max_concurrent == 0 || self.max_concurrent > 64 {
            return Err(invalid(
                file,
                "checkpoint.max_concurrent",
                self.max_concurrent.to_string(),
                "1 ..= 64 (default 1)",
            ));
        }
        if self.retained == 0 {
            return Err(invalid(
                file,
                "checkpoint.retained",
                "0".into(),
                "1 or more complete checkpoints (default 3)",
            ));
        }
        if self.dir.as_os_str().is_empty() {
            return Err(invalid(
                file,
                "checkpoint.dir",
                "empty".into(),
                "a directory path",
            ));
        }
        if let Some(url) = self.remote_url() {
            if let Some(Err(e)) = rill_storage::remote::parse_s3_url(url) {
                return Err(invalid(
                    file,
                    "checkpoint.dir",
                    url.to_string(),
                    &format!("a local directory, or s3://bucket/prefix ({e})"),
                ));
            }
            if self
                .local_dir
                .as_ref()
                .is_some_and(|l| l.as_os_str().is_empty())
            {
                return Err(invalid(
                    file,
                    "checkpoint.local_dir",
                    "empty".into(),
                    "a directory path (default .rill/checkpoint-log)",
                ));
            }
        } else if let Some(l) = &self.local_dir {
            return Err(invalid(
                file,
                "checkpoint.local_dir",
                l.display().to_string(),
                "unset: local_dir is the write-ahead directory of an s3:// dir; with a local \
                 dir the log is written there",
            ));
        } else if self.dir.to_str().is_some_and(|d| d.contains("://")) {
            return Err(invalid(
                file,
                "checkpoint.dir",
                self.dir.display().to_string(),
                "a local directory, or s3://bucket/prefix (no other object store is supported)",
            ));
        }
        if self.unaligned && self.mode == CheckpointMode::AtLeastOnce {
            return Err(invalid(
                file,
                "checkpoint.unaligned",
                "true with mode = \"at-least-once\"".into(),
                "unaligned = true needs mode = \"exactly-once\" (at-least-once never aligns)",
            ));
        }
        if !(1..=1024).contains(&self.segment_preallocate_mib) {
            return Err(invalid(
                file,
                "checkpoint.segment_preallocate_mib",
                self.segment_preallocate_mib.to_string(),
                "1 ..= 1024 MiB (default 4)",
            ));
        }
        if !(1..=1_000_000).contains(&self.archive_slice_us) {
            return Err(invalid(
                file,
                "checkpoint.archive_slice_us",
                self.archive_slice_us.to_string(),
                "1 ..= 1000000 µs of archiving per round of a core's loop (default 100)",
            ));
        }
        if self.max_chain == 0 {
            return Err(invalid(
                file,
                "checkpoint.max_chain",
                "0".into(),
                "1 or more deltas per key group (default 16)",
            ));
        }
        Ok(())
    }
}

impl RestartConfig {
    /// Checks values serde cannot.
    pub fn validate(&self, file: &Path) -> Result<(), ConfigError> {
        for (key, value, default) in [
            ("restart.delay_ms", self.delay_ms, 1_000),
            ("restart.initial_backoff_ms", self.initial_backoff_ms, 1_000),
            ("restart.max_backoff_ms", self.max_backoff_ms, 60_000),
            ("restart.reset_after_ms", self.reset_after_ms, 3_600_000),
        ] {
            within(
                file,
                key,
                value,
                0,
                MAX_TIME_MS,
                &format!("milliseconds (default {default})"),
            )?;
        }
        if self.strategy == RestartKind::ExponentialDelay {
            if !(self.multiplier >= 1.0 && self.multiplier.is_finite()) {
                return Err(invalid(
                    file,
                    "restart.multiplier",
                    self.multiplier.to_string(),
                    "a number of at least 1.0 (default 1.5)",
                ));
            }
            if !(0.0..=1.0).contains(&self.jitter) {
                return Err(invalid(
                    file,
                    "restart.jitter",
                    self.jitter.to_string(),
                    "0.0 ..= 1.0 (default 0.1)",
                ));
            }
            if self.initial_backoff_ms > self.max_backoff_ms {
                return Err(invalid(
                    file,
                    "restart.initial_backoff_ms",
                    format!(
                        "{} is above max_backoff_ms ({})",
                        self.initial_backoff_ms, self.max_backoff_ms
                    ),
                    "at most restart.max_backoff_ms",
                ));
            }
            if self.attempts == Some(0) {
                return Err(invalid(
                    file,
                    "restart.attempts",
                    "0".into(),
                    "1 or more, or unset for unlimited (use strategy = \"none\" for no restarts)",
                ));
            }
        }
        Ok(())
    }
}
