//! Reads the source's counters of a running job from its metrics endpoint, for runs whose
//! throughput is measured over a window of time rather than from latency samples
//! (flat-out runs, Nexmark queries with a discard or file sink). Each core publishes its
//! counters every `metrics.publish_ms`; the endpoint says how old each core's figures
//! are, so a reading is placed at the time the core took it, not the time of the scrape.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// One core's source count at one moment.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CoreReading {
    /// Records its sources emitted (counter `source_records`) up to `at`.
    pub source_records: u64,
    /// When the core took these figures.
    pub at: Instant,
}

/// Every core's reading, by CPU label (`cpu0`, as the executor threads are named).
pub type Reading = BTreeMap<String, CoreReading>;

/// Scrapes `GET /metrics` at `addr` and reads `rill_source_records_total` and
/// `rill_snapshot_age_seconds` per core. A core that has not published yet reads 0
/// records at the time of the scrape.
pub fn read(addr: SocketAddr) -> Result<Reading> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .with_context(|| format!("connect to the metrics endpoint {addr}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")?;
    let mut text = String::new();
    stream
        .read_to_string(&mut text)
        .with_context(|| format!("read the metrics endpoint {addr}"))?;
    let now = Instant::now();
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        bail!("the metrics endpoint {addr} sent no HTTP body");
    };
    if !head.starts_with("HTTP/1.1 200") {
        bail!(
            "the metrics endpoint {addr} answered {:?}",
            head.lines().next().unwrap_or("")
        );
    }
    Ok(parse(body, now))
}

/// Reads the per-core source counts of a Prometheus text body scraped at `now`.
pub fn parse(body: &str, now: Instant) -> Reading {
    let mut records: BTreeMap<String, u64> = BTreeMap::new();
    let mut ages: BTreeMap<String, f64> = BTreeMap::new();
    for line in body.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Some((name, labels)) = series.split_once('{') else {
            continue;
        };
        let Some(cpu) = labels
            .trim_end_matches('}')
            .split(',')
            .find_map(|l| l.strip_prefix("cpu=\""))
            .map(|c| format!("cpu{}", c.trim_end_matches('"')))
        else {
            continue;
        };
        match name {
            "rill_source_records_total" => {
                records.insert(cpu, value.parse::<f64>().unwrap_or(0.0) as u64);
            }
            "rill_snapshot_age_seconds" => {
                ages.insert(cpu, value.parse::<f64>().unwrap_or(f64::NAN));
            }
            _ => {}
        }
    }
    ages.into_iter()
        .map(|(cpu, age)| {
            let age = if age.is_finite() && age >= 0.0 {
                age
            } else {
                0.0
            };
            let at = now.checked_sub(Duration::from_secs_f64(age)).unwrap_or(now);
            let source_records = records.get(&cpu).copied().unwrap_or(0);
            (cpu, CoreReading { source_records, at })
        })
        .collect()
}

/// The source's throughput between two readings.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WindowCount {
    /// Events per core over the window (`cpu0` → events).
    pub per_core_events: BTreeMap<String, u64>,
    /// Events per second per core: its events over its own interval between readings.
    pub per_core_eps: BTreeMap<String, f64>,
    /// The mean interval between the two readings over the cores, seconds.
    pub seconds: f64,
}

impl WindowCount {
    /// The counts between `a` (start of the window) and `b` (its end), per core; a core
    /// missing from `a` starts at 0 records at `origin` (the job's start).
    pub fn between(a: &Reading, b: &Reading, origin: Instant) -> Self {
        let mut w = Self::default();
        let mut secs = Vec::new();
        for (cpu, end) in b {
            let start = a.get(cpu).copied().unwrap_or(CoreReading {
                source_records: 0,
                at: origin,
            });
            let events = end.source_records.saturating_sub(start.source_records);
            let dt = end.at.saturating_duration_since(start.at).as_secs_f64();
            w.per_core_events.insert(cpu.clone(), events);
            w.per_core_eps
                .insert(cpu.clone(), if dt > 0.0 { events as f64 / dt } else { 0.0 });
            secs.push(dt);
        }
        w.seconds = if secs.is_empty() {
            0.0
        } else {
            secs.iter().sum::<f64>() / secs.len() as f64
        };
        w
    }

    /// Events over the window, all cores.
    pub fn events(&self) -> u64 {
        self.per_core_events.values().sum()
    }

    /// Events per second, all cores (the sum of the per-core rates).
    pub fn eps(&self) -> f64 {
        self.per_core_eps.values().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &str = "# HELP rill_up 1 while the job runs.\n\
        rill_up 1\n\
        rill_snapshot_age_seconds{core=\"0\",cpu=\"0\"} 0.5\n\
        rill_snapshot_age_seconds{core=\"1\",cpu=\"3\"} NaN\n\
        rill_source_records_total{core=\"0\",cpu=\"0\"} 1000\n\
        rill_sink_records_total{core=\"0\",cpu=\"0\"} 7\n";

    #[test]
    fn reads_each_core_at_the_time_it_published() {
        let now = Instant::now() + Duration::from_secs(10);
        let r = parse(BODY, now);
        assert_eq!(r.len(), 2);
        assert_eq!(r["cpu0"].source_records, 1000);
        assert_eq!(r["cpu0"].at, now - Duration::from_millis(500));
        // Not published yet: nothing emitted, read at the scrape.
        assert_eq!(r["cpu3"].source_records, 0);
        assert_eq!(r["cpu3"].at, now);
    }

    #[test]
    fn a_window_is_events_over_each_cores_own_interval() {
        let t = Instant::now();
        let at = |ms| t + Duration::from_millis(ms);
        let a: Reading = [
            (
                "cpu0".into(),
                CoreReading {
                    source_records: 100,
                    at: at(0),
                },
            ),
            (
                "cpu1".into(),
                CoreReading {
                    source_records: 0,
                    at: at(500),
                },
            ),
        ]
        .into_iter()
        .collect();
        let b: Reading = [
            (
                "cpu0".into(),
                CoreReading {
                    source_records: 2100,
                    at: at(2000),
                },
            ),
            (
                "cpu1".into(),
                CoreReading {
                    source_records: 1500,
                    at: at(2000),
                },
            ),
        ]
        .into_iter()
        .collect();
        let w = WindowCount::between(&a, &b, t);
        assert_eq!(w.events(), 3500);
        assert_eq!(w.per_core_eps["cpu0"], 1000.0);
        assert_eq!(w.per_core_eps["cpu1"], 1000.0);
        assert_eq!(w.eps(), 2000.0);
        assert_eq!(w.seconds, 1.75);
    }
}
