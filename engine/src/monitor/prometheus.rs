//! The metrics endpoint's text: Prometheus exposition format 0.0.4, rendered by the
//! monitor thread from what the cores published (never on a core).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use crate::metrics::{CoreSnapshot, Quantiles};

/// Per core, what the monitor knows beyond the core's own snapshot.
#[derive(Clone, Debug, Default)]
pub struct CoreExtra {
    /// The CPU the core is pinned to.
    pub cpu: usize,
    /// Stalls seen so far on this core.
    pub stalls: u64,
    /// The longest of them, seconds.
    pub stall_longest_s: f64,
}

impl CoreExtra {
    /// Core `core` pinned to `cpu`, with its share of the stalls seen so far.
    pub fn of(cpu: usize, core: usize, stalls: &[crate::monitor::stall::Stall]) -> Self {
        let mine = stalls.iter().filter(|s| s.core == core);
        Self {
            cpu,
            stalls: mine.clone().count() as u64,
            stall_longest_s: mine.map(|s| s.duration_ms / 1e3).fold(0.0, f64::max),
        }
    }
}

/// Everything one scrape shows.
#[derive(Clone, Debug, Default)]
pub struct Scrape {
    /// Per core: its last snapshot and the monitor's figures.
    pub cores: Vec<(CoreSnapshot, CoreExtra)>,
    /// Resident memory of the process, bytes.
    pub resident_bytes: Option<u64>,
    /// Seconds since the job started.
    pub uptime_s: f64,
    /// The job clock now, ns (for the age of each snapshot).
    pub now_ns: u64,
}

/// Content type of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn metric_name(counter: &str) -> String {
    counter
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

struct Family<'a> {
    out: &'a mut String,
}

impl Family<'_> {
    fn head(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn line(&mut self, name: &str, labels: &[(&str, String)], value: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {}", number(value));
    }
}

fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

type Labels = Vec<(&'static str, String)>;

fn core_labels(i: usize, e: &CoreExtra) -> Vec<(&'static str, String)> {
    vec![("core", i.to_string()), ("cpu", e.cpu.to_string())]
}

fn summary(
    f: &mut Family<'_>,
    name: &str,
    help: &str,
    per_core: &[(Vec<(&str, String)>, &Quantiles)],
) {
    f.head(name, "summary", help);
    for (labels, q) in per_core {
        for (quantile, v) in q.values.iter().filter(|(q, _)| *q < 1.0) {
            let mut l = labels.clone();
            l.push(("quantile", quantile.to_string()));
            f.line(name, &l, *v);
        }
        f.line(&format!("{name}_sum"), labels, q.sum_s);
        f.line(&format!("{name}_count"), labels, q.count as f64);
    }
}

/// The cores with samples in the histogram `which` picks, with their labels.
fn per_core_quantiles(
    s: &Scrape,
    which: impl Fn(&CoreSnapshot) -> &Quantiles,
) -> Vec<(Labels, &Quantiles)> {
    s.cores
        .iter()
        .enumerate()
        .filter(|(_, (snap, _))| which(snap).count > 0)
        .map(|(i, (snap, e))| (core_labels(i, e), which(snap)))
        .collect()
}

/// Renders one scrape.
pub fn render(s: &Scrape) -> String {
    let mut out = String::with_capacity(4096);
    let mut f = Family { out: &mut out };
    f.head("rill_up", "gauge", "1 while the job runs.");
    f.line("rill_up", &[], 1.0);
    f.head(
        "rill_uptime_seconds",
        "gauge",
        "Seconds since the job's sources started.",
    );
    f.line("rill_uptime_seconds", &[], s.uptime_s);
    if let Some(rss) = s.resident_bytes {
        f.head(
            "rill_process_resident_bytes",
            "gauge",
            "Resident memory of the process.",
        );
        f.line("rill_process_resident_bytes", &[], rss as f64);
    }
    f.head(
        "rill_snapshot_age_seconds",
        "gauge",
        "How old the figures a core last published are (they are published every publish_ms).",
    );
    for (i, (snap, e)) in s.cores.iter().enumerate() {
        let age = if snap.at_ns == 0 {
            f64::NAN
        } else {
            s.now_ns.saturating_sub(snap.at_ns) as f64 / 1e9
        };
        f.line("rill_snapshot_age_seconds", &core_labels(i, e), age);
    }

    // Counters, one family per engine counter. Those ending in `_max` are high-water
    // marks: gauges.
    let names: BTreeSet<&str> = s
        .cores
        .iter()
        .flat_map(|(snap, _)| snap.counters.keys().map(String::as_str))
        .collect();
    for n in names {
        let (name, kind) = if n.ends_with("_max") {
            (format!("rill_{}", metric_name(n)), "gauge")
        } else {
            (
                format!("rill_{}_total", metric_name(n).trim_end_matches("_total")),
                "counter",
            )
        };
        f.head(&name, kind, &format!("Engine counter `{n}`, per core."));
        for (i, (snap, e)) in s.cores.iter().enumerate() {
            if let Some(v) = snap.counters.get(n) {
                f.line(&name, &core_labels(i, e), *v as f64);
            }
        }
    }

    let lat = per_core_quantiles(s, |snap| &snap.latency);
    if !lat.is_empty() {
        summary(
            &mut f,
            "rill_latency_seconds",
            "End-to-end latency at this core's sinks (due time to sink), since the start.",
            &lat,
        );
        f.head(
            "rill_latency_max_seconds",
            "gauge",
            "The highest end-to-end latency so far.",
        );
        for (l, q) in &lat {
            f.line(
                "rill_latency_max_seconds",
                l,
                q.values.last().map_or(0.0, |v| v.1),
            );
        }
    }
    let io = per_core_quantiles(s, |snap| &snap.io_time);
    if !io.is_empty() {
        summary(
            &mut f,
            "rill_async_io_seconds",
            "Async request time, issue to completion (retries included), since the start.",
            &io,
        );
    }

    // Operator gauges (async partitions), one family per gauge name.
    let mut gauges: BTreeMap<&str, Vec<(Labels, f64)>> = BTreeMap::new();
    for (i, (snap, e)) in s.cores.iter().enumerate() {
        for g in &snap.gauges {
            let mut l = core_labels(i, e);
            l.push(("operator", g.operator.clone()));
            l.push(("partition", g.partition.to_string()));
            gauges.entry(g.name).or_default().push((l, g.value));
        }
    }
    for (name, rows) in gauges {
        let name = format!("rill_{}", metric_name(name));
        f.head(&name, "gauge", &gauge_help(&name));
        for (l, v) in rows {
            f.line(&name, &l, v);
        }
    }

    if let Some(c) = s
        .cores
        .iter()
        .find_map(|(snap, _)| snap.checkpoints.as_ref())
    {
        let rows: [(&str, &str, &str, f64); 8] = [
            (
                "rill_checkpoints_completed_total",
                "counter",
                "Checkpoints completed in this run.",
                c.completed as f64,
            ),
            (
                "rill_checkpoints_failed_total",
                "counter",
                "Checkpoints failed or expired in this run.",
                c.failed as f64,
            ),
            (
                "rill_checkpoint_last_id",
                "gauge",
                "Id of the newest completed checkpoint.",
                c.last_id as f64,
            ),
            (
                "rill_checkpoint_last_duration_seconds",
                "gauge",
                "Trigger to complete, newest completed checkpoint.",
                c.last_duration_s,
            ),
            (
                "rill_checkpoint_last_alignment_seconds",
                "gauge",
                "Longest barrier alignment of the newest completed checkpoint.",
                c.last_alignment_s,
            ),
            (
                "rill_checkpoint_last_sync_seconds",
                "gauge",
                "Synchronous part (state archived on the core), newest completed checkpoint.",
                c.last_sync_s,
            ),
            (
                "rill_checkpoint_last_async_seconds",
                "gauge",
                "Asynchronous part (log append and sync), newest completed checkpoint.",
                c.last_async_s,
            ),
            (
                "rill_checkpoint_last_size_bytes",
                "gauge",
                "Full size of the newest completed checkpoint.",
                c.last_bytes as f64,
            ),
        ];
        for (name, kind, help, v) in rows {
            f.head(name, kind, help);
            f.line(name, &[], v);
        }
    }

    f.head(
        "rill_stalls_total",
        "counter",
        "Loop rounds longer than the stall threshold (a blocking call in an operator?).",
    );
    for (i, (_, e)) in s.cores.iter().enumerate() {
        f.line("rill_stalls_total", &core_labels(i, e), e.stalls as f64);
    }
    f.head(
        "rill_stall_longest_seconds",
        "gauge",
        "The longest stall so far.",
    );
    for (i, (_, e)) in s.cores.iter().enumerate() {
        f.line(
            "rill_stall_longest_seconds",
            &core_labels(i, e),
            e.stall_longest_s,
        );
    }
    out
}

fn gauge_help(name: &str) -> String {
    match name {
        "rill_async_in_flight" => "Async requests issued and not yet emitted.".into(),
        "rill_async_capacity" => "The async partition's in-flight bound (capacity N).".into(),
        "rill_async_waiting" => "Inputs waiting for an async slot.".into(),
        "rill_async_breaker_open" => "Circuit breaker: 1 open, 0.5 half open, 0 closed.".into(),
        other => format!("Operator gauge `{other}`."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{CheckpointGauges, GaugeValue};

    #[test]
    fn label_values_are_escaped_and_numbers_are_plain() {
        assert_eq!(escape(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(number(3.0), "3");
        assert_eq!(number(0.25), "0.25");
        assert_eq!(number(f64::NAN), "NaN");
        assert_eq!(metric_name("async_in-flight"), "async_in_flight");
    }

    #[test]
    fn a_cores_stall_figures_come_from_its_own_stalls() {
        use crate::monitor::stall::{Stall, StallCause, ThreadState};
        let stall = |core, duration_ms| Stall {
            core,
            cpu: core,
            operator: None,
            partition: None,
            duration_ms,
            at_ms: 0.0,
            thread: ThreadState::Running,
            cause: StallCause::Unknown,
            run_delay_ms: None,
            involuntary: None,
            voluntary: None,
        };
        let stalls = [stall(1, 30.0), stall(0, 50.0), stall(1, 70.0)];
        let e = CoreExtra::of(5, 1, &stalls);
        assert_eq!((e.cpu, e.stalls), (5, 2));
        assert!((e.stall_longest_s - 0.07).abs() < 1e-12);
        assert_eq!(CoreExtra::of(6, 2, &stalls).stalls, 0);
    }

    #[test]
    fn every_family_is_declared_once_before_its_samples() {
        let mut snap = CoreSnapshot {
            at_ns: 5,
            ..Default::default()
        };
        snap.counters.insert("sink_records".into(), 10);
        snap.counters.insert("async_in_flight_max".into(), 3);
        snap.gauges.push(GaugeValue {
            name: "async_in_flight",
            operator: "lookup \"x\"".into(),
            partition: 1,
            value: 2.0,
        });
        snap.checkpoints = Some(CheckpointGauges {
            completed: 2,
            ..Default::default()
        });
        let scrape = Scrape {
            cores: vec![
                (snap.clone(), CoreExtra::default()),
                (
                    snap,
                    CoreExtra {
                        cpu: 1,
                        stalls: 1,
                        stall_longest_s: 0.05,
                    },
                ),
            ],
            resident_bytes: Some(1 << 20),
            uptime_s: 1.5,
            now_ns: 10,
        };
        let text = render(&scrape);
        let mut declared = BTreeSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let name = rest.split(' ').next().unwrap();
                assert!(declared.insert(name.to_string()), "{name} declared twice");
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                let family = ["_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s))
                    .filter(|f| declared.contains(*f))
                    .unwrap_or(name);
                assert!(declared.contains(family), "{name} sampled before its TYPE");
            }
        }
        assert!(text.contains("rill_sink_records_total{core=\"1\",cpu=\"1\"} 10"));
        assert!(text.contains("# TYPE rill_async_in_flight_max gauge"));
        assert!(text.contains("operator=\"lookup \\\"x\\\"\""));
        assert!(text.contains("rill_checkpoints_completed_total 2"));
        assert!(text.contains("rill_stall_longest_seconds{core=\"1\",cpu=\"1\"} 0.05"));
    }
}
