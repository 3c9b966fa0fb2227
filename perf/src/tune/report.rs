//! Predicted against measured: one row per figure the plan touched (before, predicted,
//! measured in the verification run, the target and whether it was met), and the text
//! `rill-perf tune` prints. Pure: figures and plan in, rows and text out.

use std::fmt::Write as _;

use serde::Serialize;

use super::advisor::Outcome;
use super::measure::Figures;
use super::model::{self, Targets};
use super::plan::Plan;

/// One figure.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Row {
    /// What is measured.
    pub figure: String,
    /// The first run's value.
    pub before: String,
    /// What the models predict with the new settings.
    pub predicted: String,
    /// The verification run's value.
    pub measured: String,
    /// The target, if the figure has one.
    pub target: String,
    /// Whether the verification run met it (none: no target, or not measured).
    pub met: Option<bool>,
}

fn row(figure: &str, before: String, predicted: String, measured: String) -> Row {
    Row {
        figure: figure.into(),
        before,
        predicted,
        measured,
        target: "-".into(),
        met: None,
    }
}

fn opt(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
    v.map_or_else(|| "n/a".into(), f)
}

fn pct(v: f64) -> String {
    format!("{:.2}%", v * 100.0)
}

/// The rows for `before`, `plan` and the verification run `after`.
pub fn rows(before: &Figures, plan: &Plan, after: Option<&Figures>, t: &Targets) -> Vec<Row> {
    let mut out = Vec::new();
    let na = || "not run".to_string();
    // Throughput first: every setting must leave the job keeping up.
    let predicted = plan
        .capacity
        .as_ref()
        .map(|c| c.throughput_eps)
        .or(before.offered_eps);
    let mut thr = row(
        "throughput at the sinks, events/s",
        format!("{:.0}", before.sink_throughput_eps),
        opt(predicted, |v| format!("{v:.0}")).replace("n/a", "-"),
        after.map_or_else(na, |a| format!("{:.0}", a.sink_throughput_eps)),
    );
    match (before.offered_eps, predicted) {
        (Some(offered), _) => {
            thr.target = format!("kept up with {offered:.0}");
            thr.met = after.map(|a| a.kept_up);
        }
        (None, Some(_)) => {
            // A file source: the tuned job must not be slower than the measured one.
            let want = 0.95 * before.sink_throughput_eps;
            thr.target = format!(">= {want:.0} (95% of before)");
            thr.met = after.map(|a| a.sink_throughput_eps >= want);
        }
        (None, None) => {}
    }
    out.push(thr);
    if let Some(c) = &plan.capacity {
        let caps = |f: fn(&super::plan::CoreCapacity) -> Option<usize>| {
            c.cores
                .iter()
                .map(|x| f(x).map_or("auto".into(), |n| n.to_string()))
                .collect::<Vec<_>>()
                .join(" / ")
        };
        out.push(row(
            "async capacity per partition (by CPU)",
            caps(|x| x.before),
            caps(|x| Some(x.after)),
            after.map_or_else(na, |a| {
                a.cores
                    .iter()
                    .filter(|x| x.async_partitions > 0)
                    .map(|x| x.capacity.map_or("-".into(), |c| c.describe()))
                    .collect::<Vec<_>>()
                    .join(" / ")
            }),
        ));
        out.push(row(
            "N/t bound (Little's law), events/s",
            opt(c.bound_before_eps, |v| format!("{v:.0}")),
            format!("{:.0}", c.bound_after_eps),
            "-".into(),
        ));
        let io = |f: &Figures| f.async_io.as_ref().and_then(|a| a.io_time_ms);
        out.push(row(
            "IO time t, ms",
            opt(io(before), |v| format!("{v:.3}")),
            format!("{:.3}", c.io_time_ms),
            after.map_or_else(na, |a| opt(io(a), |v| format!("{v:.3}"))),
        ));
        let inflight = |f: &Figures| f.async_io.as_ref().and_then(|a| a.mean_in_flight);
        let mut r = row(
            "mean in flight per partition (λₚ·t)",
            opt(inflight(before), |v| format!("{v:.2}")),
            format!("{:.2}", c.mean_in_flight),
            after.map_or_else(na, |a| opt(inflight(a), |v| format!("{v:.2}"))),
        );
        let smallest = c.cores.iter().map(|x| x.after).min().unwrap_or(0);
        r.target = format!("< capacity {smallest}");
        r.met = after.and_then(inflight).map(|v| v < smallest as f64);
        out.push(r);
        let full = |f: &Figures| f.async_io.as_ref().and_then(|a| a.full_fraction);
        out.push(row(
            "time at capacity (async_full_us)",
            opt(full(before), pct),
            "-".into(),
            after.map_or_else(na, |a| opt(full(a), pct)),
        ));
    }
    if let Some(c) = &plan.checkpoint {
        let dur = |f: &Figures| f.checkpoint.as_ref().and_then(|c| c.duration_ms);
        let n = |f: &Figures| f.checkpoint.as_ref().map_or(0, |c| c.completed);
        out.push(row(
            "checkpoint duration C (mean), ms",
            format!("{:.1} ({} complete)", c.duration_ms, n(before)),
            format!("{:.1}", c.duration_ms),
            after.map_or_else(na, |a| {
                opt(dur(a), |v| format!("{v:.1} ({} complete)", n(a)))
            }),
        ));
        out.push(row(
            "checkpoint interval T, ms",
            c.interval_before_ms
                .map_or("unset".into(), |v| v.to_string()),
            c.decision.interval_ms.to_string(),
            after.map_or_else(na, |a| {
                a.checkpoint
                    .as_ref()
                    .and_then(|c| c.interval_ms)
                    .map_or("unset".into(), |v| v.to_string())
            }),
        ));
        let measured = |f: &Figures| {
            f.checkpoint.as_ref().and_then(|c| {
                model::measured_overhead(&c.periodic, c.interval_ms.unwrap_or(0) as f64)
            })
        };
        let mut r = row(
            "checkpoint overhead C/T",
            match (measured(before), c.overhead_before) {
                (Some(m), _) => pct(m),
                (None, Some(m)) => format!("{} (model)", pct(m)),
                (None, None) => "n/a (no periodic checkpoints)".into(),
            },
            pct(c.decision.overhead),
            after.map_or_else(na, |a| {
                opt(measured(a), pct).replace("n/a", "n/a (no periodic checkpoint completed)")
            }),
        );
        r.target = format!("<= {}", pct(t.max_overhead));
        r.met = after.and_then(measured).map(|m| m <= t.max_overhead);
        out.push(r);
        let mut r = row(
            "recovery after a failure (T + C + restart), s",
            opt(c.recovery_before_s, |v| format!("{v:.2} (model)")),
            format!("{:.2}", c.decision.recovery_s),
            "not measured (scripts/recovery-time.sh)".into(),
        );
        r.target = format!("<= {} s", t.recovery_s);
        out.push(r);
        let size = |f: &Figures| {
            f.checkpoint
                .as_ref()
                .and_then(|c| c.sizes.last())
                .map(|s| s.1)
        };
        out.push(row(
            "state (last full checkpoint), bytes",
            size(before).map_or("n/a".into(), |b| b.to_string()),
            opt(c.growth_bps, |g| format!("changes {g:+.0} B/s")),
            after.map_or_else(na, |a| size(a).map_or("n/a".into(), |b| b.to_string())),
        ));
    }
    if let Some(rp) = &plan.rings {
        let ring = |f: &Figures| {
            f.cores
                .iter()
                .map(|c| c.config.ring_capacity.to_string())
                .collect::<Vec<_>>()
                .join(" / ")
        };
        out.push(row(
            "ring capacity, slots (by CPU)",
            ring(before),
            rp.cores
                .iter()
                .map(|c| format!("{} (needs {})", c.6, c.5))
                .collect::<Vec<_>>()
                .join(" / "),
            after.map_or_else(na, ring),
        ));
        out.push(row(
            "p99.9 latency, µs",
            opt(before.p999_us, |v| format!("{v:.1}")),
            "-".into(),
            after.map_or_else(na, |a| opt(a.p999_us, |v| format!("{v:.1}"))),
        ));
        out.push(row(
            "backpressure steps",
            before.backpressure_steps.to_string(),
            "-".into(),
            after.map_or_else(na, |a| a.backpressure_steps.to_string()),
        ));
        if let Some(l) = t.p99_us {
            let mut r = row(
                "p99 latency, µs",
                opt(before.p99_us, |v| format!("{v:.1}")),
                "-".into(),
                after.map_or_else(na, |a| opt(a.p99_us, |v| format!("{v:.1}"))),
            );
            r.target = format!("<= {l:.0}");
            r.met = after.and_then(|a| a.p99_us).map(|v| v <= l);
            out.push(r);
        }
    }
    out
}

/// The rows as an aligned table.
pub fn table(rows: &[Row]) -> String {
    let head = [
        "figure",
        "before",
        "predicted",
        "measured",
        "target",
        "met?",
    ];
    let cells: Vec<[String; 6]> = rows
        .iter()
        .map(|r| {
            [
                r.figure.clone(),
                r.before.clone(),
                r.predicted.clone(),
                r.measured.clone(),
                r.target.clone(),
                match r.met {
                    Some(true) => "yes".into(),
                    Some(false) => "NO".into(),
                    None => "-".into(),
                },
            ]
        })
        .collect();
    let mut width = head.map(|h| h.chars().count());
    for c in &cells {
        for (w, s) in width.iter_mut().zip(c) {
            *w = (*w).max(s.chars().count());
        }
    }
    let mut s = String::new();
    let line = |s: &mut String, c: &[String]| {
        let parts: Vec<String> = c
            .iter()
            .zip(width)
            .map(|(x, w)| format!("{x}{}", " ".repeat(w - x.chars().count())))
            .collect();
        let _ = writeln!(s, "{}", parts.join(" | ").trim_end());
    };
    line(&mut s, &head.map(String::from));
    let _ = writeln!(s, "{}", width.map(|w| "-".repeat(w)).join("-|-"));
    for c in &cells {
        line(&mut s, c);
    }
    s
}

impl Outcome {
    /// What `rill-perf tune` prints.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let b = &self.before;
        let _ = writeln!(
            s,
            "rill-perf tune {} ({} layout, pipeline {})",
            self.dir.display(),
            match self.layout {
                super::plan::Layout::Template => "template core.toml",
                super::plan::Layout::Fixed => "cores/<cpu>.toml",
            },
            self.before.pipeline
        );
        let _ = writeln!(
            s,
            "measured: λ {:.0} events/s{}, sinks {:.0}/s, {} over {:.1} s on CPUs {:?}",
            b.arrival_eps,
            if b.offered_eps.is_some() {
                " offered"
            } else {
                " (file source: what the sinks received)"
            },
            b.sink_throughput_eps,
            if b.kept_up {
                "kept up".to_string()
            } else {
                format!("did not keep up ({})", b.keep_up_problems.join("; "))
            },
            b.elapsed_s,
            self.before_report.load.cpus
        );
        for c in &b.cores {
            let _ = writeln!(
                s,
                "  CPU {}: {:.1}% of the records, λ {:.0}/s, {:.0}/s per ring{}",
                c.cpu,
                c.share * 100.0,
                c.rate_eps,
                c.ring_rate_eps,
                c.capacity.map_or(String::new(), |k| format!(
                    ", async capacity {}",
                    k.describe()
                ))
            );
        }
        if self.plan.settings.is_empty() {
            let _ = writeln!(s, "settings: nothing to change");
        } else {
            let _ = writeln!(
                s,
                "settings{}:",
                if self.dry_run {
                    " (dry run: not written)"
                } else {
                    ""
                }
            );
            for (set, a) in self.plan.settings.iter().zip(&self.applied) {
                let key = match set.table {
                    Some(t) => format!("[{t}] {}", set.key),
                    None => set.key.to_string(),
                };
                let _ = writeln!(
                    s,
                    "  {} {key}: {} -> {}   {}",
                    a.file.display(),
                    set.before,
                    set.value,
                    set.why
                );
            }
        }
        if self.layout == super::plan::Layout::Template
            && self
                .plan
                .settings
                .iter()
                .any(|x| x.file.as_os_str() == "core.toml")
        {
            let _ = writeln!(
                s,
                "  (core.toml is the template the harness copies to every CPU a run uses, so it \
                 gets one value for all of them; a job directory with cores/<cpu>.toml gets \
                 each CPU its own)"
            );
        }
        for c in &self.plan.cautions {
            let _ = writeln!(s, "caution: {c}");
        }
        for k in &self.plan.skipped {
            let _ = writeln!(s, "skipped {}: {}", k.what, k.why);
        }
        if let Some(c) = &self.plan.checkpoint {
            if c.decision.conflict {
                let _ = writeln!(
                    s,
                    "!!! overhead and recovery targets conflict: C = {:.1} ms needs T >= {:.0} \
                     ms, recovery allows T <= {:.0} ms; kept the overhead (try incremental = \
                     true, or a longer --recovery-s)",
                    c.duration_ms, c.decision.min_ms, c.decision.max_ms
                );
            }
            if let Some(h) = c.horizon_s {
                let _ = writeln!(
                    s,
                    "state grows {:.0} B/s from {} bytes: at this rate full checkpoints pass \
                     the overhead target in about {h:.0} s (C taken to grow with the state)",
                    c.growth_bps.unwrap_or(0.0),
                    c.bytes
                );
            }
        }
        for w in &self.written {
            let _ = writeln!(s, "wrote {}", w.display());
        }
        for n in &self.notes {
            let _ = writeln!(s, "note: {n}");
        }
        if !self.rows.is_empty() {
            let _ = writeln!(s);
            s.push_str(&table(&self.rows));
        }
        if self.after.is_some() {
            if self.next_round.is_empty() {
                let _ = writeln!(s, "stable: the verification run leads to the same settings");
            } else {
                let _ = writeln!(
                    s,
                    "from the verification run's figures the same rules would now set (run tune \
                     again to apply):"
                );
                for x in &self.next_round {
                    let _ = writeln!(
                        s,
                        "  {} {}: {} -> {}   {}",
                        x.file.display(),
                        x.table
                            .map_or(x.key.to_string(), |t| format!("[{t}] {}", x.key)),
                        x.before,
                        x.value,
                        x.why
                    );
                }
            }
        }
        if let Some((a, _)) = &self.after {
            if !a.kept_up && a.offered_eps.is_some() {
                let _ = writeln!(
                    s,
                    "verification run did not keep up: {}",
                    a.keep_up_problems.join("; ")
                );
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tune::fixtures::{keyed_async, with_checkpoints};
    use crate::tune::plan::{plan, Layout};

    fn find<'a>(rows: &'a [Row], figure: &str) -> &'a Row {
        rows.iter()
            .find(|r| r.figure.starts_with(figure))
            .unwrap_or_else(|| panic!("no row {figure}: {rows:?}"))
    }

    #[test]
    fn rows_set_the_verification_run_against_the_prediction_and_the_target() {
        let t = Targets::default();
        let before = with_checkpoints(Some(200), &[15.0, 20.0, 25.0]);
        let p = plan(&before, Layout::Fixed, &t);
        // Not verified: predictions only, nothing met or missed.
        let r = rows(&before, &p, None, &t);
        assert!(r.iter().all(|r| r.met.is_none()), "{r:?}");
        assert_eq!(find(&r, "throughput").predicted, "10000");
        assert_eq!(find(&r, "throughput").before, "3990");
        assert_eq!(find(&r, "N/t bound").before, "4000");
        // Measured: mean C 20 ms over triggers 200 ms apart.
        assert_eq!(find(&r, "checkpoint overhead").before, "10.00%");
        assert_eq!(find(&r, "checkpoint overhead").predicted, "1.05%");
        assert_eq!(find(&r, "checkpoint interval").predicted, "1900");

        // A run that kept up, with checkpoints at 30 ms every 600 ms: 5%, met exactly.
        let mut after = with_checkpoints(Some(600), &[30.0, 30.0]);
        after.checkpoint.as_mut().unwrap().periodic = vec![(0.0, 30.0), (600.0, 30.0)];
        after.kept_up = true;
        after.sink_throughput_eps = 9_990.0;
        after.async_io.as_mut().unwrap().mean_in_flight = Some(11.0);
        let r = rows(&before, &p, Some(&after), &t);
        assert_eq!(find(&r, "throughput").met, Some(true));
        assert_eq!(find(&r, "checkpoint overhead").measured, "5.00%");
        assert_eq!(find(&r, "checkpoint overhead").met, Some(true));
        // Smallest new capacity is 12 (CPU 1): 11 in flight is under it.
        assert_eq!(find(&r, "mean in flight").met, Some(true));
        assert!(find(&r, "recovery").measured.contains("not measured"));

        // A run that fell behind and checkpointed too long misses both.
        after.kept_up = false;
        after.checkpoint.as_mut().unwrap().periodic = vec![(0.0, 60.0), (600.0, 60.0)];
        after.async_io.as_mut().unwrap().mean_in_flight = Some(12.0);
        let r = rows(&before, &p, Some(&after), &t);
        assert_eq!(find(&r, "throughput").met, Some(false));
        assert_eq!(find(&r, "checkpoint overhead").met, Some(false));
        assert_eq!(find(&r, "mean in flight").met, Some(false));
        let text = table(&r);
        assert!(text.contains("| NO"), "{text}");
        // A job without an async operator or checkpoints has no rows for them.
        let mut plain = keyed_async();
        plain.async_io = None;
        let p = plan(&plain, Layout::Fixed, &t);
        let r = rows(&plain, &p, None, &t);
        assert!(r
            .iter()
            .all(|r| !r.figure.contains("async") && !r.figure.contains("checkpoint")));
    }

    #[test]
    fn the_table_aligns_columns_and_marks_misses() {
        let rows = vec![
            Row {
                figure: "throughput".into(),
                before: "3990".into(),
                predicted: "10000".into(),
                measured: "9998".into(),
                target: "kept up".into(),
                met: Some(true),
            },
            Row {
                figure: "C/T".into(),
                before: "10.00%".into(),
                predicted: "3.33%".into(),
                measured: "6.00%".into(),
                target: "<= 5.00%".into(),
                met: Some(false),
            },
        ];
        let t = table(&rows);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(
            lines[0].starts_with("figure     | before | predicted"),
            "{t}"
        );
        assert!(lines[2].ends_with("| yes"), "{t}");
        assert!(lines[3].ends_with("| NO"), "{t}");
        let bar = lines[0].find("| before").unwrap();
        assert_eq!(lines[2].find("| 3990").unwrap(), bar);
    }
}
