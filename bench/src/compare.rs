//! `rill-bench compare A.json B.json`: the differences between two run reports, with
//! every change beyond a noise band flagged as a regression or an improvement, and the
//! configuration and machine differences that may explain them. Reports are read as
//! plain JSON, so reports from older or newer harness versions compare on the keys they
//! share.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::Value;

/// The default noise band: changes within ±10% are noise.
pub const DEFAULT_NOISE: f64 = 0.10;

/// Which way is better for a metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Better {
    /// Higher is better (throughput).
    Higher,
    /// Lower is better (latency, CPU, failures).
    Lower,
}

/// The metrics compared: JSON path, label, which way is better, and an absolute floor
/// below which a change is noise whatever its relative size (a p50 going from 0.3 to
/// 0.5 us is +67% and means nothing).
pub const METRICS: &[(&str, &str, Better, f64)] = &[
    (
        "throughput_eps",
        "throughput (events/s)",
        Better::Higher,
        0.0,
    ),
    (
        "latency_us.p50",
        "latency p50 (us)",
        Better::Lower,
        LATENCY_FLOOR_US,
    ),
    (
        "latency_us.p90",
        "latency p90 (us)",
        Better::Lower,
        LATENCY_FLOOR_US,
    ),
    (
        "latency_us.p99",
        "latency p99 (us)",
        Better::Lower,
        LATENCY_FLOOR_US,
    ),
    (
        "latency_us.p999",
        "latency p99.9 (us)",
        Better::Lower,
        LATENCY_FLOOR_US,
    ),
    (
        "latency_us.p9999",
        "latency p99.99 (us)",
        Better::Lower,
        LATENCY_FLOOR_US,
    ),
    (
        "latency_us.max",
        "latency max (us)",
        Better::Lower,
        LATENCY_FLOOR_US,
    ),
    ("cpu.process_s", "cpu, process (s)", Better::Lower, 0.05),
    (
        "checkpoints.failed",
        "checkpoints failed",
        Better::Lower,
        0.0,
    ),
    ("peer.p999_ratio", "rill/peer p99.9", Better::Lower, 0.0),
    (
        "peer.throughput_ratio",
        "rill/peer throughput",
        Better::Higher,
        0.0,
    ),
];

/// Latency changes smaller than this are noise, microseconds.
pub const LATENCY_FLOOR_US: f64 = 1.0;

/// The verdict on one metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Within the noise band.
    Noise,
    /// Worse beyond the band.
    Regression,
    /// Better beyond the band.
    Improvement,
}

/// Judges a change from `a` to `b`.
pub fn judge(a: f64, b: f64, better: Better, noise: f64) -> (f64, Verdict) {
    let rel = if a != 0.0 {
        (b - a) / a.abs()
    } else if b == 0.0 {
        0.0
    } else {
        f64::INFINITY * (b - a).signum()
    };
    let worse = match better {
        Better::Higher => -rel,
        Better::Lower => rel,
    };
    let v = if worse > noise {
        Verdict::Regression
    } else if worse < -noise {
        Verdict::Improvement
    } else {
        Verdict::Noise
    };
    (rel, v)
}

fn get<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(v, |v, k| v.get(k))
}

fn flatten(prefix: &str, v: &Value, out: &mut BTreeMap<String, String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&p, v, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), other.to_string());
        }
    }
}

/// The result of a comparison.
pub struct Comparison {
    /// The printed text.
    pub text: String,
    /// How many metrics regressed.
    pub regressions: usize,
}

/// Compares the reports `a` (before) and `b` (after).
pub fn compare(a: &Value, b: &Value, noise: f64) -> Comparison {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "noise band: ±{:.0}% (--noise {noise}), and latency changes under {LATENCY_FLOOR_US} us; \
         changes beyond it are flagged",
        noise * 100.0
    );
    let _ = writeln!(
        s,
        "{:<24} {:>14} {:>14} {:>9}  verdict",
        "metric", "A", "B", "change"
    );
    let mut regressions = 0;
    for &(path, label, better, floor) in METRICS {
        let (Some(x), Some(y)) = (
            get(a, path).and_then(Value::as_f64),
            get(b, path).and_then(Value::as_f64),
        ) else {
            continue;
        };
        let (rel, mut v) = judge(x, y, better, noise);
        if (y - x).abs() < floor {
            v = Verdict::Noise;
        }
        if v == Verdict::Regression {
            regressions += 1;
        }
        let _ = writeln!(
            s,
            "{label:<24} {x:>14.2} {y:>14.2} {:>8.1}%  {}",
            rel * 100.0,
            match v {
                Verdict::Noise => "~ noise",
                Verdict::Regression => "REGRESSION",
                Verdict::Improvement => "improvement",
            }
        );
    }
    for (section, title) in [
        ("config", "configuration"),
        ("load", "load"),
        ("machine", "machine"),
    ] {
        let (mut fa, mut fb) = (BTreeMap::new(), BTreeMap::new());
        if let Some(v) = a.get(section) {
            flatten("", v, &mut fa);
        }
        if let Some(v) = b.get(section) {
            flatten("", v, &mut fb);
        }
        let keys: std::collections::BTreeSet<&String> = fa.keys().chain(fb.keys()).collect();
        let diffs: Vec<String> = keys
            .into_iter()
            .filter(|k| fa.get(*k) != fb.get(*k) && *k != "scenario_dir")
            .map(|k| {
                let na = "(absent)".to_string();
                format!(
                    "  {k}: {} -> {}",
                    fa.get(k).unwrap_or(&na),
                    fb.get(k).unwrap_or(&na)
                )
            })
            .collect();
        if !diffs.is_empty() {
            let _ = writeln!(s, "{title} differs:");
            for d in diffs {
                let _ = writeln!(s, "{d}");
            }
        }
    }
    let _ = writeln!(
        s,
        "{}",
        if regressions == 0 {
            "no regressions beyond the noise band".to_string()
        } else {
            format!("{regressions} regression(s) beyond the noise band")
        }
    );
    Comparison {
        text: s,
        regressions,
    }
}

/// Reads a report file.
pub fn read(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    let v: Value = serde_json::from_str(&text)
        .with_context(|| format!("{}: not a JSON report", path.display()))?;
    match v.get("schema").and_then(Value::as_str) {
        Some(s) if s.starts_with("rill-bench.run.") => Ok(v),
        other => anyhow::bail!(
            "{}: schema {other:?}: compare reads run reports (`rill-bench run --json`)",
            path.display()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn judges_by_direction_and_band() {
        assert_eq!(judge(100.0, 105.0, Better::Lower, 0.1).1, Verdict::Noise);
        assert_eq!(
            judge(100.0, 120.0, Better::Lower, 0.1).1,
            Verdict::Regression
        );
        assert_eq!(
            judge(100.0, 120.0, Better::Higher, 0.1).1,
            Verdict::Improvement
        );
        assert_eq!(
            judge(100.0, 80.0, Better::Higher, 0.1).1,
            Verdict::Regression
        );
        assert_eq!(judge(0.0, 0.0, Better::Lower, 0.1).1, Verdict::Noise);
        assert_eq!(judge(0.0, 1.0, Better::Lower, 0.1).1, Verdict::Regression);
    }

    #[test]
    fn flags_regressions_and_config_differences() {
        let a = serde_json::json!({"throughput_eps": 100000.0,
            "latency_us": {"p50": 10.0, "p999": 100.0},
            "config": {"job": {"generator": {"rate_eps": 100000}}}});
        let b = serde_json::json!({"throughput_eps": 99000.0,
            "latency_us": {"p50": 10.5, "p999": 150.0},
            "config": {"job": {"generator": {"rate_eps": 200000}}}});
        let c = compare(&a, &b, 0.1);
        assert_eq!(c.regressions, 1, "{}", c.text);
        assert!(c.text.contains("REGRESSION"));
        assert!(
            c.text.contains("job.generator.rate_eps: 100000 -> 200000"),
            "{}",
            c.text
        );
        assert!(c.text.contains("±10%"));
        assert_eq!(compare(&a, &a, 0.1).regressions, 0);
        // Sub-microsecond changes are noise however large relatively.
        let a = serde_json::json!({"latency_us": {"p50": 0.3}});
        let b = serde_json::json!({"latency_us": {"p50": 0.9}});
        assert_eq!(compare(&a, &b, 0.1).regressions, 0);
    }
}
