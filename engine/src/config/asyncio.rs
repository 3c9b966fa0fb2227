//! `[async]` and `[lookup]` in `job.toml`: the async operator of the `keyed-async`
//! pipeline (and of the `etl` enrichment step) and the lookup it calls. Defaults live in
//! the `Default` impls; `validate` names the key.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::core::MAX_ASYNC_CAPACITY;
use super::job::{invalid, within, MAX_TIME_MS};
use crate::asyncio::lookup::Latency;
use crate::asyncio::{AsyncMode, AsyncOptions, BreakerConfig, Capacity, OnTimeout, RetryStrategy};
use crate::error::ConfigError;

/// `mode = "ordered" | "unordered"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModeSetting {
    /// Results in input order.
    Ordered,
    /// Results as they complete, never across a watermark.
    Unordered,
}

/// The word `"auto"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AutoWord {
    /// Adaptive capacity.
    Auto,
}

/// `capacity = 100` or `capacity = "auto"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum CapacitySetting {
    /// A fixed in-flight bound.
    Fixed(usize),
    /// Sized by Little's law within `capacity_min ..= capacity_max`.
    Auto(AutoWord),
}

/// What `capacity` may be, for parse errors.
const CAPACITY_EXPECTED: &str = "a positive integer or \"auto\"";

struct CapacityVisitor;

impl serde::de::Visitor<'_> for CapacityVisitor {
    type Value = CapacitySetting;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(CAPACITY_EXPECTED)
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
        usize::try_from(v)
            .map(CapacitySetting::Fixed)
            .map_err(|_| E::invalid_value(serde::de::Unexpected::Unsigned(v), &self))
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
        u64::try_from(v)
            .map_err(|_| E::invalid_value(serde::de::Unexpected::Signed(v), &self))
            .and_then(|v| self.visit_u64(v))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
        match v {
            "auto" => Ok(CapacitySetting::Auto(AutoWord::Auto)),
            _ => Err(E::invalid_value(serde::de::Unexpected::Str(v), &self)),
        }
    }
}

impl<'de> Deserialize<'de> for CapacitySetting {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(CapacityVisitor)
    }
}

/// `on_timeout = "fail" | "drop"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TimeoutSetting {
    /// Fail the job naming operator, request and timeout.
    Fail,
    /// Drop the request (counted in `async_dropped`).
    Drop,
}

/// `[async]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AsyncConfig {
    /// Ordered or unordered results.
    pub mode: ModeSetting,
    /// Requests in flight per partition, or "auto".
    pub capacity: CapacitySetting,
    /// Bounds of `capacity = "auto"`.
    pub capacity_min: usize,
    /// Bounds of `capacity = "auto"`.
    pub capacity_max: usize,
    /// Per-request timeout over all attempts, ms.
    pub timeout_ms: u64,
    /// What a timed-out request does.
    pub on_timeout: TimeoutSetting,
    /// How failed attempts are retried: "none", "fixed" or "exponential".
    pub retry: RetrySetting,
    /// fixed: the delay; exponential: the first delay, ms.
    pub retry_delay_ms: u64,
    /// exponential: the largest delay, ms.
    pub retry_max_delay_ms: u64,
    /// exponential: growth per retry.
    pub retry_multiplier: f64,
    /// Attempts in all, the first included.
    pub retry_max_attempts: u32,
    /// Also retry empty results (e.g. a missing key).
    pub retry_on_empty: bool,
    /// Consecutive failures that open the circuit breaker (0: no breaker).
    pub breaker_failures: u32,
    /// How long the breaker stays open before a probe, ms.
    pub breaker_cooldown_ms: u64,
}

/// `retry = "none" | "fixed" | "exponential"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RetrySetting {
    /// No retries.
    None,
    /// A fixed delay.
    Fixed,
    /// Exponential backoff.
    Exponential,
}

impl Default for AsyncConfig {
    fn default() -> Self {
        Self {
            mode: ModeSetting::Ordered,
            capacity: CapacitySetting::Fixed(100),
            capacity_min: 1,
            capacity_max: 10_000,
            timeout_ms: 10_000,
            on_timeout: TimeoutSetting::Fail,
            retry: RetrySetting::None,
            retry_delay_ms: 100,
            retry_max_delay_ms: 1_000,
            retry_multiplier: 2.0,
            retry_max_attempts: 3,
            retry_on_empty: false,
            breaker_failures: 0,
            breaker_cooldown_ms: 1_000,
        }
    }
}

/// `kind = "simulated" | "redis"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LookupKind {
    /// A timer-driven simulated service.
    Simulated,
    /// A Redis server (`GET key:<key>` over the core's io_uring).
    Redis,
}

/// `distribution = "fixed" | "uniform" | "lognormal"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DistributionSetting {
    /// Always `delay_us`.
    Fixed,
    /// Uniform in `delay_us ..= delay_max_us`.
    Uniform,
    /// Log-normal with median `delay_us` and σ `sigma`.
    Lognormal,
}

/// `[lookup]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LookupConfig {
    /// Which service.
    pub kind: LookupKind,
    /// The simulated delay (fixed), lower bound (uniform) or median (log-normal), µs.
    pub delay_us: u64,
    /// The delay distribution.
    pub distribution: DistributionSetting,
    /// Upper bound of the uniform distribution, µs.
    pub delay_max_us: u64,
    /// σ of the log-normal distribution.
    pub sigma: f64,
    /// Seed of the simulated delays (per partition: seed + partition).
    pub seed: u64,
    /// The Redis server (`kind = "redis"`).
    pub addr: String,
    /// Who waits for the simulated IO: the core itself (timers) or, for comparison, a
    /// fixed pool of OS threads doing blocking calls (`"thread-pool"`).
    pub executor: ExecutorSetting,
    /// Threads per partition of `executor = "thread-pool"`.
    pub pool_threads: usize,
}

/// `executor = "core" | "thread-pool"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExecutorSetting {
    /// Futures on the core's own timers and io_uring.
    Core,
    /// A fixed pool of OS threads doing blocking calls (Flink's way, for comparison).
    ThreadPool,
}

impl Default for LookupConfig {
    fn default() -> Self {
        Self {
            kind: LookupKind::Simulated,
            delay_us: 1_000,
            distribution: DistributionSetting::Fixed,
            delay_max_us: 2_000,
            sigma: 0.5,
            seed: 1,
            addr: "127.0.0.1:6379".into(),
            executor: ExecutorSetting::Core,
            pool_threads: 100,
        }
    }
}

/// The longest simulated delay, µs (a minute).
const MAX_DELAY_US: u64 = 60_000_000;

impl AsyncConfig {
    /// Checks values serde cannot.
    pub fn validate(&self, file: &Path) -> Result<(), ConfigError> {
        let most = MAX_ASYNC_CAPACITY as u64;
        if let CapacitySetting::Fixed(n) = self.capacity {
            within(
                file,
                "async.capacity",
                n as u64,
                1,
                most,
                "requests in flight per partition, or \"auto\"",
            )?;
        }
        within(
            file,
            "async.capacity_max",
            self.capacity_max as u64,
            1,
            most,
            "requests in flight per partition (default 10000)",
        )?;
        for (key, value, lo, default) in [
            ("async.timeout_ms", self.timeout_ms, 1, 10_000),
            ("async.retry_delay_ms", self.retry_delay_ms, 0, 100),
            (
                "async.retry_max_delay_ms",
                self.retry_max_delay_ms,
                0,
                1_000,
            ),
            (
                "async.breaker_cooldown_ms",
                self.breaker_cooldown_ms,
                0,
                1_000,
            ),
        ] {
            within(
                file,
                key,
                value,
                lo,
                MAX_TIME_MS,
                &format!("milliseconds (default {default})"),
            )?;
        }
        if self.capacity_min == 0 || self.capacity_min > self.capacity_max {
            return Err(invalid(
                file,
                "async.capacity_min",
                format!("{} (capacity_max {})", self.capacity_min, self.capacity_max),
                "1 ..= async.capacity_max",
            ));
        }
        if self.retry != RetrySetting::None && self.retry_max_attempts == 0 {
            return Err(invalid(
                file,
                "async.retry_max_attempts",
                "0".into(),
                "1 or more",
            ));
        }
        if !(self.retry_multiplier.is_finite() && self.retry_multiplier >= 1.0) {
            return Err(invalid(
                file,
                "async.retry_multiplier",
                self.retry_multiplier.to_string(),
                "1.0 or more",
            ));
        }
        Ok(())
    }

    /// The operator options this table describes.
    pub fn options<T, U>(&self) -> AsyncOptions<T, U> {
        let ms = Duration::from_millis;
        let mut o = AsyncOptions::new()
            .retry(match self.retry {
                RetrySetting::None => RetryStrategy::None,
                RetrySetting::Fixed => RetryStrategy::Fixed {
                    delay: ms(self.retry_delay_ms),
                    max_attempts: self.retry_max_attempts,
                },
                RetrySetting::Exponential => RetryStrategy::Exponential {
                    initial: ms(self.retry_delay_ms),
                    max: ms(self.retry_max_delay_ms),
                    multiplier: self.retry_multiplier,
                    max_attempts: self.retry_max_attempts,
                },
            })
            .mode(match self.mode {
                ModeSetting::Ordered => AsyncMode::Ordered,
                ModeSetting::Unordered => AsyncMode::Unordered,
            })
            .capacity(match self.capacity {
                CapacitySetting::Fixed(n) => Capacity::Fixed(n),
                CapacitySetting::Auto(_) => Capacity::Auto {
                    min: self.capacity_min,
                    max: self.capacity_max,
                },
            })
            .timeout(Duration::from_millis(self.timeout_ms))
            .on_timeout(match self.on_timeout {
                TimeoutSetting::Fail => OnTimeout::Fail,
                TimeoutSetting::Drop => OnTimeout::Drop,
            });
        if self.retry_on_empty {
            o = o.retry_on_result(|r: &[U]| r.is_empty());
        }
        if self.breaker_failures > 0 {
            o = o.breaker(BreakerConfig {
                failures: self.breaker_failures,
                cooldown: ms(self.breaker_cooldown_ms),
            });
        }
        o
    }
}

impl LookupConfig {
    /// Checks values serde cannot.
    pub fn validate(&self, file: &Path) -> Result<(), ConfigError> {
        for (key, value, default) in [
            ("lookup.delay_us", self.delay_us, 1_000),
            ("lookup.delay_max_us", self.delay_max_us, 2_000),
        ] {
            within(
                file,
                key,
                value,
                0,
                MAX_DELAY_US,
                &format!("microseconds (a minute; default {default})"),
            )?;
        }
        within(
            file,
            "lookup.pool_threads",
            self.pool_threads as u64,
            1,
            10_000,
            "threads per partition (default 100)",
        )?;
        if self.kind == LookupKind::Redis && self.addr.parse::<std::net::SocketAddr>().is_err() {
            return Err(invalid(
                file,
                "lookup.addr",
                format!("{:?}", self.addr),
                "host:port with a numeric address, e.g. \"127.0.0.1:6379\"",
            ));
        }
        if self.distribution == DistributionSetting::Uniform && self.delay_max_us < self.delay_us {
            return Err(invalid(
                file,
                "lookup.delay_max_us",
                format!(
                    "{} is below delay_us ({})",
                    self.delay_max_us, self.delay_us
                ),
                "at least lookup.delay_us",
            ));
        }
        if !(0.0..=10.0).contains(&self.sigma) {
            return Err(invalid(
                file,
                "lookup.sigma",
                self.sigma.to_string(),
                "0.0 ..= 10.0 (default 0.5)",
            ));
        }
        Ok(())
    }

    /// The simulated delay distribution.
    pub fn latency(&self) -> Latency {
        let us = Duration::from_micros;
        match self.distribution {
            DistributionSetting::Fixed => Latency::Fixed(us(self.delay_us)),
            DistributionSetting::Uniform => Latency::Uniform {
                lo: us(self.delay_us),
                hi: us(self.delay_max_us),
            },
            DistributionSetting::Lognormal => Latency::LogNormal {
                median: us(self.delay_us),
                sigma: self.sigma,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_issue_table_parses_and_capacity_takes_a_number_or_auto() {
        let a: AsyncConfig =
            toml::from_str("mode = \"ordered\"\ncapacity = 100\ntimeout_ms = 10000\n").unwrap();
        assert_eq!(a.capacity, CapacitySetting::Fixed(100));
        let a: AsyncConfig = toml::from_str("capacity = \"auto\"\n").unwrap();
        assert_eq!(a.capacity, CapacitySetting::Auto(AutoWord::Auto));
        assert!(toml::from_str::<AsyncConfig>("capacity = \"lots\"\n").is_err());
        assert!(toml::from_str::<AsyncConfig>("bogus = 1\n").is_err());
        let f = Path::new("job.toml");
        let bad: AsyncConfig = toml::from_str("capacity = 0\n").unwrap();
        let e = bad.validate(f).unwrap_err().to_string();
        assert!(e.contains("async.capacity"), "{e}");
        let l: LookupConfig = toml::from_str("kind = \"simulated\"\ndelay_us = 1000\n").unwrap();
        assert_eq!(l.latency(), Latency::Fixed(Duration::from_millis(1)));
        let bad: LookupConfig = toml::from_str("kind = \"redis\"\naddr = \"nowhere\"\n").unwrap();
        assert!(bad
            .validate(f)
            .unwrap_err()
            .to_string()
            .contains("lookup.addr"));
    }

    #[test]
    fn retry_and_breaker_keys_become_options() {
        let a: AsyncConfig = toml::from_str(
            "retry = \"exponential\"\nretry_delay_ms = 10\nretry_max_delay_ms = 80\n\
             retry_max_attempts = 4\nbreaker_failures = 5\nbreaker_cooldown_ms = 200\n",
        )
        .unwrap();
        a.validate(Path::new("job.toml")).unwrap();
        let o = a.options::<u64, u64>();
        assert_eq!(
            o.retry,
            RetryStrategy::Exponential {
                initial: Duration::from_millis(10),
                max: Duration::from_millis(80),
                multiplier: 2.0,
                max_attempts: 4
            }
        );
        assert_eq!(
            o.breaker,
            Some(BreakerConfig {
                failures: 5,
                cooldown: Duration::from_millis(200)
            })
        );
    }
}
