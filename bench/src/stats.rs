//! Latency statistics from HdrHistograms: the percentiles the harness reports, with the
//! number of samples behind each, and exact merging of per-core histograms. Values in the
//! histograms are nanoseconds; everything reported is microseconds.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// The percentiles every report carries: JSON name, label, quantile.
pub const PERCENTILES: [(&str, &str, f64); 5] = [
    ("p50", "p50", 0.5),
    ("p90", "p90", 0.9),
    ("p99", "p99", 0.99),
    ("p999", "p99.9", 0.999),
    ("p9999", "p99.99", 0.9999),
];

/// Highest latency tracked (60 s, as the engine's histograms).
pub const MAX_LATENCY_NS: u64 = 60_000_000_000;

/// A latency histogram with the engine's bounds (1 ns ..= 60 s, 3 significant digits).
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3).expect("valid histogram bounds")
}

/// Merges histograms (e.g. one per core) into one. HdrHistogram addition is exact: the
/// merge has the same count in every bucket as one histogram of all the samples.
pub fn merge<'a>(parts: impl IntoIterator<Item = &'a Histogram<u64>>) -> Histogram<u64> {
    let mut all = new_histogram();
    for h in parts {
        all.add(h).expect("histograms share bounds");
    }
    all
}

/// One percentile of a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Percentile {
    /// JSON name (`p999`).
    pub name: String,
    /// The quantile (0.999).
    pub quantile: f64,
    /// Its latency, microseconds.
    pub us: f64,
    /// How many samples are at or above it: what the value rests on (a p99.99 from 40
    /// samples is weaker than one from 4,000).
    pub samples_at_or_above: u64,
}

/// The latency of a run, summarised.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    /// Samples measured (warm-up excluded).
    pub samples: u64,
    /// p50 … p99.99.
    pub percentiles: Vec<Percentile>,
    /// Highest sample, microseconds.
    pub max_us: f64,
    /// Mean, microseconds.
    pub mean_us: f64,
}

impl LatencySummary {
    /// Summarises `h` (nanoseconds).
    pub fn of(h: &Histogram<u64>) -> Self {
        let percentiles = PERCENTILES
            .iter()
            .map(|&(name, _, q)| {
                let v = h.value_at_quantile(q);
                Percentile {
                    name: name.to_string(),
                    quantile: q,
                    us: if h.is_empty() { 0.0 } else { v as f64 / 1e3 },
                    samples_at_or_above: at_or_above(h, v),
                }
            })
            .collect();
        Self {
            samples: h.len(),
            percentiles,
            max_us: if h.is_empty() {
                0.0
            } else {
                h.max() as f64 / 1e3
            },
            mean_us: if h.is_empty() { 0.0 } else { h.mean() / 1e3 },
        }
    }

    /// The percentile named `name` (`p999`), microseconds.
    pub fn us(&self, name: &str) -> Option<f64> {
        if name == "max" {
            return Some(self.max_us);
        }
        self.percentiles
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.us)
    }

    /// p99.9, microseconds.
    pub fn p999(&self) -> f64 {
        self.us("p999").unwrap_or(0.0)
    }
}

/// Samples whose value is at or above `v`'s bucket.
fn at_or_above(h: &Histogram<u64>, v: u64) -> u64 {
    if h.is_empty() {
        return 0;
    }
    h.iter_recorded()
        .filter(|r| r.value_iterated_to() >= h.lowest_equivalent(v))
        .map(|r| r.count_at_value())
        .sum()
}

/// Points of the percentile spectrum (HdrHistogram's percentile distribution):
/// `(quantile, latency_us)`, for plotting on a log scale of `1/(1-q)`.
pub fn spectrum(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    if h.is_empty() {
        return Vec::new();
    }
    let mut pts: Vec<(f64, f64)> = h
        .iter_quantiles(4)
        .map(|v| (v.quantile_iterated_to(), v.value_iterated_to() as f64 / 1e3))
        .filter(|(q, _)| *q < 1.0)
        .collect();
    pts.dedup_by(|a, b| a.0 == b.0);
    pts
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small seeded generator so that the test replays (seed printed on failure).
    fn samples(seed: u64, n: usize) -> Vec<u64> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                // Latencies from 1 us to ~100 ms, heavy-tailed.
                1_000 + (s % 1_000) * (1 << (s % 17))
            })
            .collect()
    }

    #[test]
    fn merging_per_core_histograms_is_exact() {
        for seed in [1u64, 7, 0x5eed] {
            let all = samples(seed, 50_000);
            let mut whole = new_histogram();
            let mut cores = vec![new_histogram(), new_histogram(), new_histogram()];
            for (i, &v) in all.iter().enumerate() {
                whole.record(v).unwrap();
                cores[(v as usize ^ i) % 3].record(v).unwrap();
            }
            let merged = merge(&cores);
            assert_eq!(merged, whole, "seed {seed}");
            assert_eq!(
                LatencySummary::of(&merged),
                LatencySummary::of(&whole),
                "seed {seed}"
            );
        }
    }

    #[test]
    fn the_engines_report_merge_is_exact_too() {
        use rill_engine::ids::CoreId;
        use rill_engine::metrics::{JobReport, ShardReport};
        let all = samples(42, 20_000);
        let mut whole = new_histogram();
        let mut shards: Vec<ShardReport> = (0..2)
            .map(|c| ShardReport {
                core: CoreId(c),
                latency: new_histogram(),
                io_time: new_histogram(),
                counters: Default::default(),
                last_arrival_ns: 0,
                first_arrival_ns: 0,
                checkpoints: Vec::new(),
            })
            .collect();
        for (i, &v) in all.iter().enumerate() {
            whole.record(v).unwrap();
            shards[i % 2].latency.record(v).unwrap();
        }
        let r = JobReport::merge(shards, 0, std::time::Duration::ZERO, false);
        assert_eq!(r.latency, whole);
    }

    #[test]
    fn summary_counts_the_samples_behind_each_percentile() {
        let mut h = new_histogram();
        for v in 1..=10_000u64 {
            h.record(v * 1_000).unwrap();
        }
        let s = LatencySummary::of(&h);
        assert_eq!(s.samples, 10_000);
        let p99 = s.percentiles.iter().find(|p| p.name == "p99").unwrap();
        assert!((p99.us - 9_900.0).abs() < 10.0, "{}", p99.us);
        // ~100 samples at or above p99 (bucket width makes it a few more).
        assert!(
            (100..=112).contains(&p99.samples_at_or_above),
            "{}",
            p99.samples_at_or_above
        );
        assert!((s.max_us - 10_000.0).abs() < 10.0);
        assert_eq!(LatencySummary::of(&new_histogram()).samples, 0);
    }

    #[test]
    fn spectrum_is_monotone() {
        let mut h = new_histogram();
        for v in samples(3, 10_000) {
            h.record(v).unwrap();
        }
        let s = spectrum(&h);
        assert!(s.len() > 10);
        assert!(s.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1));
    }
}
