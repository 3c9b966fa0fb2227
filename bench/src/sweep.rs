//! Sweeps: one scenario run once per value of one parameter, a latency-vs-throughput
//! table, the highest rate that meets a p99.9 target, and — for checkpoint-interval and
//! async-capacity sweeps — the measurements next to the seed's C/T and N/t models.
//!
//! The parameter is any job.toml key (`generator.rate_eps`, `checkpoint.interval_ms`,
//! …, through the same overrides as `--set`), `rate` (= `generator.rate_eps`), `cores`
//! (the number of CPUs), or `core.KEY` (applied to every core file, e.g.
//! `core.ring_capacity`, `core.flush_deadline_us`). The value `off` removes a job.toml
//! key for that run (the scenario's default then applies); a checkpoint-interval sweep
//! uses its `off` run as the checkpoints-off baseline of the measured overhead.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use crate::models::{
    async_throughput_model, checkpoint_overhead_model, io_time_from_counters, measured_overhead,
    RunFigures,
};
use crate::plot::{self, Axis, Chart, Series};
use crate::report::RunReport;
use crate::scenario::{parse_cpu_choice, Settings};
use crate::stats::PERCENTILES;

/// The JSON schema name of a sweep report.
pub const SCHEMA: &str = "rill-bench.sweep.v1";

/// What kind of parameter a sweep varies, for the model columns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SweepKind {
    /// The offered rate.
    Rate,
    /// A checkpoint interval (C/T).
    CheckpointInterval,
    /// An async operator's capacity (N/t).
    AsyncCapacity,
    /// Anything else.
    Other,
}

impl SweepKind {
    /// Classifies a parameter name.
    pub fn of(param: &str) -> Self {
        let p = param.to_ascii_lowercase();
        if p == "rate" || p == "generator.rate_eps" {
            Self::Rate
        } else if p.contains("checkpoint") && p.contains("interval") {
            Self::CheckpointInterval
        } else if p.contains("async") && p.contains("capacity") {
            Self::AsyncCapacity
        } else {
            Self::Other
        }
    }
}

/// Applies `param = value` to `settings`.
pub fn apply(settings: &mut Settings, param: &str, value: &str) -> Result<()> {
    if value == "off" {
        if param == "cores" || param == "rate" || param.starts_with("core.") {
            bail!("--param {param}: the value `off` removes a job.toml key; {param} is not one");
        }
        settings.removes.push(param.to_string());
        return Ok(());
    }
    match param {
        "rate" => {
            settings.rate_eps = Some(value.parse().map_err(|_| {
                anyhow::anyhow!(
                    "--param rate: {value:?} is not a whole number of events per second"
                )
            })?)
        }
        "cores" => settings.cores = Some(parse_cpu_choice(value)?),
        _ => settings.add_set(&format!("{param}={value}"))?,
    }
    Ok(())
}

/// A checkpoint interval in ms from a sweep value and the key's unit suffix.
pub fn interval_ms(param: &str, value: &str) -> Option<f64> {
    let v: f64 = value.parse().ok()?;
    Some(if param.ends_with("_s") {
        v * 1e3
    } else if param.ends_with("_us") {
        v / 1e3
    } else {
        v
    })
}

/// One row of a sweep.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SweepRun {
    /// The parameter's value.
    pub value: String,
    /// The run (with `--repeat`, the run with the median p99.9).
    pub report: RunReport,
    /// Every repeat's `(p99.9 us, throughput events/s)`, in run order.
    pub repeats: Vec<(f64, f64)>,
}

impl SweepRun {
    /// Makes the row of `value` from its repeats: the run with the median p99.9 stands
    /// for the value (the lower median for an even count).
    pub fn from_repeats(value: &str, mut reports: Vec<RunReport>) -> Self {
        assert!(!reports.is_empty(), "a sweep value runs at least once");
        let repeats = reports
            .iter()
            .map(|r| (r.p999_us(), r.throughput_eps))
            .collect();
        let p999: Vec<f64> = reports.iter().map(RunReport::p999_us).collect();
        let report = reports.swap_remove(median_index(&p999));
        Self {
            value: value.to_string(),
            report,
            repeats,
        }
    }
}

/// The index of the (lower) median of `v`.
pub fn median_index(v: &[f64]) -> usize {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
    idx[(v.len() - 1) / 2]
}

/// The model columns of one row.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ModelRow {
    /// The value.
    pub value: String,
    /// C/T, or N/t in events/s.
    pub model: Option<f64>,
    /// Checkpoint interval T / async capacity N.
    pub x: Option<f64>,
    /// C (ms) or t (ms) the model used.
    pub input_ms: Option<f64>,
    /// Throughput lost against the baseline (C/T sweeps).
    pub throughput_overhead: Option<f64>,
    /// p99.9 / baseline p99.9 (C/T sweeps).
    pub p999_ratio: Option<f64>,
    /// Extra CPU seconds per core-second against the baseline (C/T sweeps).
    pub cpu_overhead: Option<f64>,
    /// Measured throughput (N/t sweeps).
    pub measured_eps: Option<f64>,
}

/// The whole sweep.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SweepReport {
    /// [`SCHEMA`].
    pub schema: String,
    /// The parameter.
    pub param: String,
    /// Its kind.
    pub kind: SweepKind,
    /// The p99.9 target, us.
    pub target_p999_us: f64,
    /// The value whose run met the target with the highest throughput.
    pub best: Option<String>,
    /// Model columns (C/T and N/t sweeps).
    pub models: Vec<ModelRow>,
    /// The runs.
    pub runs: Vec<SweepRun>,
}

fn figures(r: &RunReport) -> RunFigures {
    let exec: f64 = r.cpu.per_core_s.values().sum();
    RunFigures {
        throughput_eps: r.throughput_eps,
        p999_us: r.p999_us(),
        cpu_s: if exec > 0.0 { exec } else { r.cpu.process_s },
        cores: r.load.cpus.len(),
        // CPU is over the whole run, warm-up included: so is the time it is spread over.
        duration_s: r
            .load
            .duration_s
            .map_or(r.cpu.wall_s, |d| d + r.load.warmup_s.unwrap_or(0.0)),
    }
}

/// The run that met the target (kept up, p99.9 ≤ target) with the highest throughput.
pub fn best(runs: &[SweepRun], target_p999_us: f64) -> Option<&SweepRun> {
    runs.iter()
        .filter(|r| r.report.kept_up && r.report.p999_us() <= target_p999_us)
        .max_by(|a, b| a.report.throughput_eps.total_cmp(&b.report.throughput_eps))
}

/// The model columns for a C/T or N/t sweep (empty for others).
pub fn model_rows(
    param: &str,
    kind: SweepKind,
    runs: &[SweepRun],
    io_time_ms: Option<f64>,
) -> Vec<ModelRow> {
    match kind {
        SweepKind::CheckpointInterval => {
            let baseline = runs
                .iter()
                .find(|r| r.value == "off")
                .map(|r| figures(&r.report));
            runs.iter()
                .filter(|r| r.value != "off")
                .map(|r| {
                    let t = interval_ms(param, &r.value);
                    let c = r.report.checkpoints.duration_ms.map(|d| d.p50);
                    let m = baseline.map(|b| measured_overhead(&figures(&r.report), &b));
                    ModelRow {
                        value: r.value.clone(),
                        model: c.zip(t).and_then(|(c, t)| checkpoint_overhead_model(c, t)),
                        x: t,
                        input_ms: c,
                        throughput_overhead: m.map(|m| m.throughput),
                        p999_ratio: m.map(|m| m.p999_ratio),
                        cpu_overhead: m.map(|m| m.cpu_fraction),
                        measured_eps: None,
                    }
                })
                .collect()
        }
        SweepKind::AsyncCapacity => runs
            .iter()
            .map(|r| {
                let n: Option<f64> = r.value.parse().ok();
                let t = io_time_ms.or_else(|| io_time_from_counters(&r.report.counters));
                let parts = r
                    .report
                    .config
                    .job
                    .get("parallelism")
                    .and_then(|p| p.as_u64())
                    .map_or(r.report.load.cpus.len(), |p| p as usize);
                ModelRow {
                    value: r.value.clone(),
                    model: n
                        .zip(t)
                        .and_then(|(n, t)| async_throughput_model(n, t, parts)),
                    x: n,
                    input_ms: t,
                    measured_eps: Some(r.report.throughput_eps),
                    ..ModelRow::default()
                }
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn opt(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
    v.filter(|v| v.is_finite()).map_or_else(|| "n/a".into(), f)
}

impl SweepReport {
    /// The table printed after a sweep.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let _ = write!(
            s,
            "{:>14} {:>10} {:>11}",
            self.param.rsplit('.').next().unwrap_or(&self.param),
            "offered",
            "throughput"
        );
        for (_, label, _) in PERCENTILES {
            let _ = write!(s, " {label:>9}");
        }
        let repeated = self.runs.iter().any(|r| r.repeats.len() > 1);
        let _ = write!(s, " {:>9} {:>8} {:>7}", "max", "kept-up", "target");
        if repeated {
            let _ = write!(s, "  p99.9 over repeats");
        }
        let _ = writeln!(s);
        for r in &self.runs {
            let rep = &r.report;
            let _ = write!(
                s,
                "{:>14} {:>10} {:>11.0}",
                r.value,
                rep.load.offered_eps.map_or("-".into(), |o| o.to_string()),
                rep.throughput_eps
            );
            for (key, _, _) in PERCENTILES {
                let _ = write!(
                    s,
                    " {:>9.1}",
                    rep.latency_us.get(key).copied().unwrap_or(0.0)
                );
            }
            let meets = rep.kept_up && rep.p999_us() <= self.target_p999_us;
            let _ = write!(
                s,
                " {:>9.1} {:>8} {:>7}",
                rep.latency_us.get("max").copied().unwrap_or(0.0),
                if rep.kept_up { "yes" } else { "NO" },
                if meets { "meets" } else { "-" }
            );
            if repeated {
                let lo = r.repeats.iter().map(|x| x.0).fold(f64::INFINITY, f64::min);
                let hi = r.repeats.iter().map(|x| x.0).fold(0.0, f64::max);
                let _ = write!(s, "  {lo:.1} .. {hi:.1} ({} runs)", r.repeats.len());
            }
            let _ = writeln!(s);
        }
        let _ = writeln!(
            s,
            "(latency in us; target: p99.9 <= {} us and kept up)",
            self.target_p999_us
        );
        match (&self.best, self.kind) {
            (Some(v), SweepKind::Rate) => {
                let _ = writeln!(s, "highest rate that meets the target: {v} events/s");
            }
            (Some(v), _) => {
                let _ = writeln!(
                    s,
                    "best value that meets the target (highest throughput): {} = {v}",
                    self.param
                );
            }
            (None, _) => {
                let _ = writeln!(s, "no run met the target");
            }
        }
        match self.kind {
            SweepKind::CheckpointInterval => {
                let _ = writeln!(
                    s,
                    "\ncheckpoint overhead, model C/T next to measured (against the `off` run):"
                );
                let _ = writeln!(
                    s,
                    "{:>10} {:>8} {:>8} {:>9} {:>13} {:>11} {:>12}",
                    "T ms", "C ms", "C/T", "thr lost", "p99.9 ratio", "cpu/core-s", "value"
                );
                for m in &self.models {
                    let _ = writeln!(
                        s,
                        "{:>10} {:>8} {:>8} {:>9} {:>13} {:>11} {:>12}",
                        opt(m.x, |v| format!("{v:.0}")),
                        opt(m.input_ms, |v| format!("{v:.1}")),
                        opt(m.model, |v| format!("{:.2}%", v * 100.0)),
                        opt(m.throughput_overhead, |v| format!("{:.2}%", v * 100.0)),
                        opt(m.p999_ratio, |v| format!("{v:.2}x")),
                        opt(m.cpu_overhead, |v| format!("{:.2}%", v * 100.0)),
                        m.value
                    );
                }
                if self.models.iter().all(|m| m.input_ms.is_none()) {
                    let _ = writeln!(
                        s,
                        "C n/a: the engine's report has no checkpoint duration yet"
                    );
                }
                if !self.runs.iter().any(|r| r.value == "off") {
                    let _ = writeln!(
                        s,
                        "measured n/a: add the value `off` for a checkpoints-off baseline"
                    );
                }
            }
            SweepKind::AsyncCapacity => {
                let _ = writeln!(
                    s,
                    "\nasync throughput, model N/t (x partitions) next to measured:"
                );
                let _ = writeln!(
                    s,
                    "{:>8} {:>8} {:>12} {:>12} {:>8}",
                    "N", "t ms", "N/t eps", "measured", "ratio"
                );
                for m in &self.models {
                    let ratio = m.model.zip(m.measured_eps).map(|(a, b)| b / a);
                    let _ = writeln!(
                        s,
                        "{:>8} {:>8} {:>12} {:>12} {:>8}",
                        m.value,
                        opt(m.input_ms, |v| format!("{v:.1}")),
                        opt(m.model, |v| format!("{v:.0}")),
                        opt(m.measured_eps, |v| format!("{v:.0}")),
                        opt(ratio, |v| format!("{v:.2}"))
                    );
                }
                if self.models.iter().all(|m| m.input_ms.is_none()) {
                    let _ = writeln!(
                        s,
                        "t n/a: pass --io-time-ms (the engine reports no IO time yet)"
                    );
                }
            }
            _ => {}
        }
        s
    }

    /// Writes the sweep's plots into `dir`; returns the files.
    pub fn plots(&self, dir: &Path, title: &str) -> Result<Vec<std::path::PathBuf>> {
        plot::ensure_dir(dir)?;
        let mut files = Vec::new();
        let pts = |key: &str| -> Vec<(f64, f64)> {
            let mut v: Vec<(f64, f64)> = self
                .runs
                .iter()
                .map(|r| {
                    (
                        r.report.throughput_eps,
                        r.report.latency_us.get(key).copied().unwrap_or(0.0),
                    )
                })
                .collect();
            v.sort_by(|a, b| a.0.total_cmp(&b.0));
            v
        };
        let path = dir.join("sweep-latency.svg");
        plot::draw(
            &Chart {
                title: format!("{title}: latency vs throughput over {}", self.param),
                x_desc: "throughput (events/s)".into(),
                y_desc: "latency (us)".into(),
                x_axis: Axis::Linear,
                y_axis: Axis::Log,
                series: ["p50", "p99", "p999", "max"]
                    .iter()
                    .map(|k| Series {
                        name: if *k == "p999" {
                            "p99.9".into()
                        } else {
                            k.to_string()
                        },
                        points: pts(k),
                        model: false,
                    })
                    .collect(),
                hlines: vec![(
                    format!("target {} us", self.target_p999_us),
                    self.target_p999_us,
                )],
                vlines: None,
            },
            &path,
        )?;
        files.push(path);
        let model_chart = match self.kind {
            SweepKind::CheckpointInterval => Some(Chart {
                title: format!("{title}: checkpoint overhead vs interval"),
                x_desc: "checkpoint interval T (ms)".into(),
                y_desc: "overhead (fraction)".into(),
                x_axis: Axis::Log,
                y_axis: Axis::Linear,
                series: vec![
                    self.model_series("model C/T", true, |m| m.model),
                    self.model_series("measured: cpu per core-s", false, |m| m.cpu_overhead),
                    self.model_series("measured: throughput lost", false, |m| {
                        m.throughput_overhead
                    }),
                ],
                hlines: Vec::new(),
                vlines: None,
            }),
            SweepKind::AsyncCapacity => Some(Chart {
                title: format!("{title}: async throughput vs capacity"),
                x_desc: "capacity N".into(),
                y_desc: "events/s".into(),
                x_axis: Axis::Log,
                y_axis: Axis::Log,
                series: vec![
                    self.model_series("model N/t", true, |m| m.model),
                    self.model_series("measured", false, |m| m.measured_eps),
                ],
                hlines: Vec::new(),
                vlines: None,
            }),
            _ => None,
        };
        if let Some(chart) = model_chart {
            let path = dir.join("sweep-model.svg");
            plot::draw(&chart, &path)?;
            files.push(path);
        }
        Ok(files)
    }

    fn model_series(&self, name: &str, model: bool, f: fn(&ModelRow) -> Option<f64>) -> Series {
        let mut points: Vec<(f64, f64)> = self
            .models
            .iter()
            .filter_map(|m| Some((m.x?, f(m)?)))
            .collect();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        Series {
            name: name.into(),
            points,
            model,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{AsyncStats, Checkpoints, Config, Cpu, Load, MsSummary};

    fn fake(offered: u64, thr: f64, p999: f64, kept_up: bool, cpu_s: f64) -> RunReport {
        RunReport {
            schema: crate::report::SCHEMA.into(),
            scenario: "t".into(),
            pipeline: "latency".into(),
            unix_time_s: 0,
            load: Load {
                offered_eps: Some(offered),
                flat_out: false,
                duration_s: Some(4.0),
                warmup_s: Some(1.0),
                keys: Some(1),
                cpus: vec![0, 1],
            },
            throughput_eps: thr,
            window: None,
            sink_throughput_eps: thr,
            kept_up,
            keep_up_problems: Vec::new(),
            end_lag_ms: Some(0.0),
            latency_us: [("p999".to_string(), p999)].into_iter().collect(),
            latency_samples: Default::default(),
            expected_samples: None,
            cpu: Cpu {
                per_core_s: [("rill-cpu0".to_string(), cpu_s)].into_iter().collect(),
                process_s: cpu_s,
                wall_s: 5.0,
            },
            checkpoints: Checkpoints::default(),
            async_io: AsyncStats::default(),
            counters: Default::default(),
            stalls: Vec::new(),
            per_core: Vec::new(),
            timeline: Vec::new(),
            checkpoint_times_s: Vec::new(),
            config: Config {
                scenario_dir: ".".into(),
                job: serde_json::json!({}),
                cores: Default::default(),
                overrides: Vec::new(),
                core_overrides: Vec::new(),
                load_toml: Default::default(),
            },
            machine: crate::machine::Machine {
                cpu_model: "test".into(),
                cpus_online: 2,
                cpus_available: vec![0, 1],
                kernel: "test".into(),
                hostname: "test".into(),
                memory_mib: 1,
            },
            peer: None,
            noise: 0,
            noise_cpu_s: 0.0,
            floor: None,
        }
    }

    fn row(value: &str, r: RunReport) -> SweepRun {
        SweepRun::from_repeats(value, vec![r])
    }

    #[test]
    fn the_best_rate_is_the_highest_that_kept_up_within_the_target() {
        let runs = vec![
            row("1000", fake(1000, 1000.0, 100.0, true, 1.0)),
            row("2000", fake(2000, 2000.0, 900.0, true, 1.0)),
            row("3000", fake(3000, 2990.0, 1500.0, true, 1.0)),
            row("4000", fake(4000, 3000.0, 800.0, false, 1.0)),
        ];
        assert_eq!(best(&runs, 1000.0).map(|r| r.value.as_str()), Some("2000"));
        assert_eq!(best(&runs, 2000.0).map(|r| r.value.as_str()), Some("3000"));
        assert!(best(&runs, 10.0).is_none());
    }

    #[test]
    fn repeats_keep_the_median_run() {
        assert_eq!(median_index(&[5.0, 1.0, 3.0]), 2);
        assert_eq!(median_index(&[4.0, 1.0, 3.0, 2.0]), 3);
        let r = SweepRun::from_repeats(
            "x",
            vec![
                fake(1, 1.0, 300.0, true, 1.0),
                fake(1, 2.0, 100.0, true, 1.0),
                fake(1, 3.0, 200.0, true, 1.0),
            ],
        );
        assert_eq!(r.report.throughput_eps, 3.0);
        assert_eq!(r.repeats.len(), 3);
    }

    #[test]
    fn checkpoint_rows_set_measured_overhead_next_to_c_over_t() {
        let mut with = fake(1000, 1000.0, 400.0, true, 11.0);
        with.checkpoints.duration_ms = Some(MsSummary {
            p50: 50.0,
            max: 80.0,
        });
        let runs = vec![
            row("off", fake(1000, 1000.0, 200.0, true, 10.0)),
            row("1000", with),
        ];
        let m = model_rows(
            "checkpoint.interval_ms",
            SweepKind::CheckpointInterval,
            &runs,
            None,
        );
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].x, Some(1000.0));
        assert_eq!(m[0].model, Some(0.05));
        assert_eq!(m[0].p999_ratio, Some(2.0));
        assert_eq!(m[0].throughput_overhead, Some(0.0));
        // One extra CPU second over 2 cores x 5 s (4 s measured after a 1 s warm-up: CPU
        // is spread over the whole run).
        assert!((m[0].cpu_overhead.unwrap() - 0.1).abs() < 1e-12);
        // Without the engine's C, the model column stays empty but measured ones fill.
        let runs = vec![
            row("off", fake(1000, 1000.0, 200.0, true, 10.0)),
            row("500", fake(1000, 900.0, 200.0, true, 10.0)),
        ];
        let m = model_rows(
            "checkpoint.interval_ms",
            SweepKind::CheckpointInterval,
            &runs,
            None,
        );
        assert_eq!(m[0].model, None);
        assert!((m[0].throughput_overhead.unwrap() - 0.1).abs() < 1e-12);
        let t = SweepReport {
            schema: SCHEMA.into(),
            param: "checkpoint.interval_ms".into(),
            kind: SweepKind::CheckpointInterval,
            target_p999_us: 1000.0,
            best: None,
            models: m,
            runs,
        }
        .table();
        assert!(t.contains("C n/a"), "{t}");
    }

    #[test]
    fn async_rows_set_throughput_next_to_n_over_t() {
        let runs = vec![
            row("10", fake(1000, 190.0, 1.0, true, 1.0)),
            row("100", fake(5000, 1900.0, 1.0, true, 1.0)),
        ];
        let m = model_rows(
            "async.capacity",
            SweepKind::AsyncCapacity,
            &runs,
            Some(100.0),
        );
        // 2 partitions (2 cores) x N / 100 ms.
        assert_eq!(m[0].model, Some(200.0));
        assert_eq!(m[1].model, Some(2000.0));
        assert_eq!(m[1].measured_eps, Some(1900.0));
    }

    #[test]
    fn parameters_are_classified_and_applied() {
        assert_eq!(SweepKind::of("generator.rate_eps"), SweepKind::Rate);
        assert_eq!(
            SweepKind::of("checkpoint.interval_ms"),
            SweepKind::CheckpointInterval
        );
        assert_eq!(SweepKind::of("async.capacity"), SweepKind::AsyncCapacity);
        assert_eq!(SweepKind::of("core.ring_capacity"), SweepKind::Other);
        let mut s = Settings::default();
        apply(&mut s, "cores", "1").unwrap();
        apply(&mut s, "core.flush_deadline_us", "5").unwrap();
        apply(&mut s, "checkpoint.interval_ms", "off").unwrap();
        apply(&mut s, "rate", "1000").unwrap();
        assert_eq!(s.core_sets, vec!["flush_deadline_us=5"]);
        assert_eq!(s.removes, vec!["checkpoint.interval_ms"]);
        assert_eq!(s.rate_eps, Some(1000));
        assert!(apply(&mut s, "cores", "off").is_err());
        assert!(apply(&mut s, "rate", "fast").is_err());
        assert_eq!(interval_ms("checkpoint.interval_s", "2"), Some(2000.0));
        assert_eq!(interval_ms("checkpoint.interval_ms", "250"), Some(250.0));
    }
}
