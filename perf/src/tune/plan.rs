//! From one run's figures to the settings to write: which key of which file gets which
//! value, why, and what each figure should become. Pure: [`plan`] takes the measured
//! [`Figures`], the directory's [`Layout`] and the [`Targets`] and returns a [`Plan`];
//! the rules themselves are in [`super::model`].
//!
//! Where the settings go:
//!
//! - a job directory with `cores/<cpu>.toml` (fixed CPUs): each core's own figures into
//!   its own file;
//! - a template scenario (`core.toml`, copied by the harness to every CPU a run picks):
//!   one value for all cores — the largest capacity and ring, the shortest deadline —
//!   since the template cannot tell the CPUs apart;
//! - the checkpoint interval, a job-wide setting, into `job.toml` `[checkpoint]` (unless
//!   the current one already meets both targets, the overhead one with the headroom); with
//!   `[async] capacity = "auto"` only `capacity_max`, when the model needs more.

use std::path::PathBuf;

use serde::Serialize;

use super::measure::{CapacityInEffect, Figures};
use super::model::{self, IntervalDecision, Targets};

/// How a directory lays out its core files.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Layout {
    /// `core.toml`, a template for every CPU (or no core file at all: defaults).
    Template,
    /// `cores/<cpu>.toml`, one per CPU.
    Fixed,
}

impl Layout {
    /// The file that holds `cpu`'s settings.
    pub fn core_file(self, cpu: usize) -> PathBuf {
        match self {
            Layout::Template => PathBuf::from("core.toml"),
            Layout::Fixed => PathBuf::from(format!("cores/{cpu}.toml")),
        }
    }
}

/// One value to write.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Setting {
    /// The file, relative to the job directory.
    pub file: PathBuf,
    /// The table (`checkpoint`), or none for a top-level key.
    pub table: Option<&'static str>,
    /// The key.
    pub key: &'static str,
    /// What was in effect before, as it reads.
    pub before: String,
    /// The value.
    pub value: i64,
    /// Where it comes from (also the comment above a new key).
    pub why: String,
}

/// A figure the advisor did not set, and why.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Skipped {
    /// The setting (`async capacity`, `checkpoint interval`, …).
    pub what: &'static str,
    /// Why not.
    pub why: String,
}

/// The capacity decision for one core.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CoreCapacity {
    /// The CPU.
    pub cpu: usize,
    /// Async partitions on it.
    pub partitions: u32,
    /// Their arrival rate in all, events per second.
    pub rate_eps: f64,
    /// The capacity before (none: auto).
    pub before: Option<usize>,
    /// What the model asks for on this core.
    pub needed: usize,
    /// What the core runs with after the change (the template's value for a template).
    pub after: usize,
}

/// What the capacity change predicts.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CapacityPlan {
    /// Per core.
    pub cores: Vec<CoreCapacity>,
    /// The IO time t the decision used, ms.
    pub io_time_ms: f64,
    /// The N/t bound with the capacities before (none: auto), events per second.
    pub bound_before_eps: Option<f64>,
    /// The N/t bound with the new capacities.
    pub bound_after_eps: f64,
    /// Predicted throughput: min(λ, bound after); for a file source held back by the
    /// async operator, the bound after.
    pub throughput_eps: f64,
    /// Predicted mean in flight per partition, λₚ·t.
    pub mean_in_flight: f64,
}

/// What the interval change predicts.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CheckpointPlan {
    /// The checkpoint duration C the decision used, ms.
    pub duration_ms: f64,
    /// The interval before, ms (none: no periodic checkpoints).
    pub interval_before_ms: Option<u64>,
    /// C/T before (model).
    pub overhead_before: Option<f64>,
    /// Recovery time before (model), s.
    pub recovery_before_s: Option<f64>,
    /// The decision.
    pub decision: IntervalDecision,
    /// State growth over the run, bytes per second.
    pub growth_bps: Option<f64>,
    /// Full size of the last checkpoint, bytes.
    pub bytes: u64,
    /// With full checkpoints growing at that rate: seconds until C/T passes the target.
    pub horizon_s: Option<f64>,
}

/// Ring and deadline decisions.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RingPlan {
    /// How far behind a receiving core fell (p99.9 above the IO floor), µs.
    pub behind_us: f64,
    /// Per core: (cpu, ring rate, deadline before, deadline after, ring before, ring
    /// needed, ring after).
    pub cores: Vec<(usize, f64, u64, u64, usize, usize, usize)>,
}

/// Everything one run leads to.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Plan {
    /// The values to write, in the order they are written.
    pub settings: Vec<Setting>,
    /// What was not set, and why.
    pub skipped: Vec<Skipped>,
    /// Settings made from figures that will move once the others take effect.
    pub cautions: Vec<String>,
    /// The capacity decision.
    pub capacity: Option<CapacityPlan>,
    /// The interval decision.
    pub checkpoint: Option<CheckpointPlan>,
    /// The ring and deadline decisions.
    pub rings: Option<RingPlan>,
}

impl Plan {
    fn skip(&mut self, what: &'static str, why: impl Into<String>) {
        self.skipped.push(Skipped {
            what,
            why: why.into(),
        });
    }
}

/// Decides every setting from `f`.
pub fn plan(f: &Figures, layout: Layout, t: &Targets) -> Plan {
    let mut p = Plan::default();
    capacity(f, layout, t, &mut p);
    checkpoint(f, t, &mut p);
    rings(f, layout, t, &mut p);
    p
}

fn capacity(f: &Figures, layout: Layout, t: &Targets, p: &mut Plan) {
    const WHAT: &str = "async capacity";
    let Some(a) = &f.async_io else {
        p.skip(
            WHAT,
            format!("the {} pipeline has no async operator", f.pipeline),
        );
        return;
    };
    let Some(io_ms) = a.io_time_ms else {
        p.skip(
            WHAT,
            "the engine reported no IO time (counters async_io_time_us_total and \
             async_completed absent or 0: no request completed)",
        );
        return;
    };
    let mut cores = Vec::new();
    for c in f.cores.iter().filter(|c| c.async_partitions > 0) {
        let Some(needed) =
            model::capacity_per_partition(c.rate_eps, c.async_partitions, io_ms, t.headroom)
        else {
            continue;
        };
        cores.push(CoreCapacity {
            cpu: c.cpu,
            partitions: c.async_partitions,
            rate_eps: c.rate_eps,
            before: c.capacity.and_then(CapacityInEffect::fixed),
            needed,
            after: needed,
        });
    }
    if cores.is_empty() {
        p.skip(WHAT, "no async partition received any record");
        return;
    }
    let auto_max = f.cores.iter().find_map(|c| match c.capacity {
        Some(CapacityInEffect::Auto { max }) => Some(max),
        _ => None,
    });
    let largest = cores.iter().map(|c| c.needed).max().unwrap_or(1);
    if layout == Layout::Template || auto_max.is_some() {
        for c in &mut cores {
            // Auto can grow to capacity_max (raised to the need, if that is written).
            c.after = auto_max.map_or(largest, |max| max.max(largest));
        }
    }
    let why = |c: &CoreCapacity| {
        format!(
            "N = ⌈λ {:.0}/s × t {io_ms:.2} ms × {}⌉ for {} async partition{} on CPU {}",
            c.rate_eps,
            t.headroom,
            c.partitions,
            if c.partitions == 1 { "" } else { "s" },
            c.cpu
        )
    };
    match auto_max {
        Some(max) if largest > max => p.settings.push(Setting {
            file: PathBuf::from("job.toml"),
            table: Some("async"),
            key: "capacity_max",
            before: max.to_string(),
            value: largest as i64,
            why: format!(
                "capacity = \"auto\" needs up to {largest}: {}",
                why(cores.iter().max_by_key(|c| c.needed).expect("not empty"))
            ),
        }),
        Some(max) => p.skip(
            WHAT,
            format!(
                "[async] capacity = \"auto\" sizes itself by the same law; the model's \
                 {largest} is within its capacity_max {max}, so nothing is written"
            ),
        ),
        None if layout == Layout::Template => {
            let c = cores.iter().max_by_key(|c| c.needed).expect("not empty");
            let before = f
                .cores
                .iter()
                .find(|x| x.cpu == c.cpu)
                .and_then(|x| x.capacity)
                .map_or("-".into(), CapacityInEffect::describe);
            if !c
                .before
                .is_some_and(|b| keep_capacity(b, largest, t.headroom))
            {
                p.settings.push(Setting {
                    file: layout.core_file(c.cpu),
                    table: None,
                    key: "async_capacity",
                    before,
                    value: largest as i64,
                    why: format!(
                        "{} (the largest over the CPUs: core.toml is every CPU's \
                         template); overrides [async] capacity",
                        why(c)
                    ),
                });
            }
        }
        None => {
            for c in &cores {
                let before = f
                    .cores
                    .iter()
                    .find(|x| x.cpu == c.cpu)
                    .and_then(|x| x.capacity)
                    .map_or("-".into(), CapacityInEffect::describe);
                if !c
                    .before
                    .is_some_and(|b| keep_capacity(b, c.needed, t.headroom))
                {
                    p.settings.push(Setting {
                        file: layout.core_file(c.cpu),
                        table: None,
                        key: "async_capacity",
                        before,
                        value: c.needed as i64,
                        why: format!("{}; overrides [async] capacity", why(c)),
                    });
                }
            }
        }
    }
    // A capacity kept by the dead band stays what it was.
    if auto_max.is_none() {
        for c in &mut cores {
            if let Some(b) = c.before.filter(|&b| keep_capacity(b, c.after, t.headroom)) {
                c.after = b;
            }
        }
    }
    let with = |n: fn(&CoreCapacity) -> Option<usize>| -> Option<f64> {
        let per: Option<Vec<(u32, usize)>> = cores
            .iter()
            .map(|c| n(c).map(|n| (c.partitions, n)))
            .collect();
        model::capacity_bound_eps(&per?, io_ms)
    };
    let bound_after = with(|c| Some(c.after)).unwrap_or(0.0);
    // A file source runs flat out: with the async operator full most of the time it was
    // the limit, the measured rate is its old bound, and the new bound is the forecast.
    let flat_out_limit = f.offered_eps.is_none() && a.full_fraction.unwrap_or(0.0) > 0.5;
    if flat_out_limit {
        p.cautions.push(format!(
            "the file source runs flat out and the async operator was full {:.0}% of the \
             time: λ is what the old capacity let through, so each round grows the capacity \
             by the headroom until something else limits the job",
            a.full_fraction.unwrap_or(0.0) * 100.0
        ));
    }
    p.capacity = Some(CapacityPlan {
        io_time_ms: io_ms,
        bound_before_eps: with(|c| c.before),
        bound_after_eps: bound_after,
        throughput_eps: if flat_out_limit {
            bound_after
        } else {
            f.arrival_eps.min(bound_after)
        },
        mean_in_flight: f.arrival_eps / f64::from(a.partitions.max(1)) * io_ms / 1e3,
        cores,
    });
}

/// A current capacity is kept when it is within the dead band of what the model wants
/// and still covers the mean need λ·t (= wanted / headroom).
fn keep_capacity(current: usize, wanted: usize, headroom: f64) -> bool {
    model::close_enough(current as f64, wanted as f64) && current as f64 >= wanted as f64 / headroom
}

fn checkpoint(f: &Figures, t: &Targets, p: &mut Plan) {
    const WHAT: &str = "checkpoint interval";
    let Some(c) = &f.checkpoint else {
        p.skip(
            WHAT,
            "the job has no [checkpoint] table (add one, or try --set checkpoint.interval_ms=1000)",
        );
        return;
    };
    let Some(duration) = c.duration_ms else {
        p.skip(
            WHAT,
            "no checkpoint completed during the run (run longer than the interval)",
        );
        return;
    };
    let Some(decision) = model::checkpoint_interval(duration, c.restart_delay_ms, t) else {
        p.skip(WHAT, format!("no interval for C = {duration:.1} ms"));
        return;
    };
    if f.offered_eps.is_some() && !f.kept_up {
        p.cautions.push(format!(
            "C = {duration:.1} ms was measured while the job fell behind (barriers queue \
             behind the backlog); once it keeps up C changes: run tune again"
        ));
    }
    let growth = model::state_growth_bps(&c.sizes);
    let bytes = c.sizes.last().map_or(0, |s| s.1);
    let before = c.interval_ms;
    // An interval that already meets both targets, the overhead one with the headroom,
    // is kept: C moves a lot between runs of a few checkpoints, and a working interval
    // should not churn with it.
    let keep = before.filter(|&b| {
        let b = b as f64;
        !decision.conflict && b >= decision.min_ms * t.headroom && b <= decision.max_ms
    });
    let decision = match keep {
        Some(b) => IntervalDecision {
            interval_ms: b,
            overhead: rill_bench::models::checkpoint_overhead_model(duration, b as f64)
                .unwrap_or(decision.overhead),
            recovery_s: model::recovery_s(b as f64, duration, c.restart_delay_ms),
            ..decision
        },
        None => decision,
    };
    if keep.is_none() && before != Some(decision.interval_ms) {
        let why = if decision.conflict {
            format!(
                "T = C {duration:.1} ms / overhead {}: the recovery target {} s allows at most \
                 {:.0} ms, both cannot be met",
                t.max_overhead, t.recovery_s, decision.max_ms
            )
        } else {
            format!(
                "T = √({:.0} × {:.0}) ms, between the overhead bound C {duration:.1} ms / {} \
                 and the recovery bound {} s − C − restart {:.0} ms (at least {} × C/o)",
                decision.min_ms,
                decision.max_ms,
                t.max_overhead,
                t.recovery_s,
                c.restart_delay_ms,
                t.headroom
            )
        };
        p.settings.push(Setting {
            file: PathBuf::from("job.toml"),
            table: Some("checkpoint"),
            key: "interval_ms",
            before: before.map_or("unset (final checkpoint only)".into(), |v| v.to_string()),
            value: decision.interval_ms as i64,
            why,
        });
    }
    p.checkpoint = Some(CheckpointPlan {
        duration_ms: duration,
        interval_before_ms: before,
        overhead_before: before
            .and_then(|b| rill_bench::models::checkpoint_overhead_model(duration, b as f64)),
        recovery_before_s: before
            .map(|b| model::recovery_s(b as f64, duration, c.restart_delay_ms)),
        decision,
        growth_bps: growth,
        bytes,
        horizon_s: (!c.incremental)
            .then(|| {
                growth.and_then(|g| {
                    model::seconds_until_overhead(
                        duration,
                        bytes,
                        g,
                        decision.interval_ms as f64,
                        t.max_overhead,
                    )
                })
            })
            .flatten(),
    });
}

/// An async operator full less than this fraction of the time is not what blocked the
/// job's sources.
const ASYNC_FULL_NOISE: f64 = 0.05;

fn rings(f: &Figures, layout: Layout, t: &Targets, p: &mut Plan) {
    if f.cores.len() < 2 {
        p.skip("ring capacity and flush deadline", "one core: no rings");
        return;
    }
    if f.offered_eps.is_some() && !f.kept_up {
        p.skip(
            "ring capacity and flush deadline",
            "the run did not keep up, so its latency is the backlog, not how far a core falls \
             behind; run tune again once it keeps up",
        );
        return;
    }
    let Some(p999) = f.p999_us else {
        p.skip(
            "ring capacity and flush deadline",
            "no latency samples (a file source runs flat out, so its rings are full by design)",
        );
        return;
    };
    let floor_us = p.capacity.as_ref().map_or(0.0, |c| c.io_time_ms * 1e3);
    let behind_us = (p999 - floor_us).max(0.0);
    let mut cores = Vec::new();
    for c in &f.cores {
        let d_before = c.config.flush_deadline_us;
        let d_after = t.p99_us.map_or(d_before, |l| {
            let d = model::flush_deadline_us(l, c.ring_rate_eps, c.config.batch_max);
            // Over budget already: never add batching delay on top.
            if f.p99_us.is_some_and(|p99| p99 > l) {
                d.min(d_before)
            } else {
                d
            }
        });
        let r = model::ring_capacity(
            c.ring_rate_eps,
            behind_us,
            d_after,
            c.config.batch_max,
            c.config.ring_capacity,
        );
        cores.push((
            c.cpu,
            c.ring_rate_eps,
            d_before,
            d_after,
            c.config.ring_capacity,
            r.needed,
            r.chosen,
        ));
    }
    // Raise a ring only on evidence that rings filled: backpressure in the run, and not
    // the async operator's own (a full operator stops its core reading the ring, and a
    // bigger ring would only queue more in front of it).
    let full = f
        .async_io
        .as_ref()
        .and_then(|a| a.full_fraction)
        .unwrap_or(0.0);
    let no_raise = if f.backpressure_steps == 0 {
        Some("the rings never filled (no backpressure steps in the run)".to_string())
    } else if full > ASYNC_FULL_NOISE {
        Some(format!(
            "the backpressure came with the async operator at capacity {:.0}% of the time: \
             the lookup holds the job back, not the rings",
            full * 100.0
        ))
    } else {
        None
    };
    if no_raise.is_some() {
        for c in &mut cores {
            c.6 = c.4;
        }
    }
    if layout == Layout::Template {
        let d = cores.iter().map(|c| c.3).min().unwrap_or(0);
        let ring = cores.iter().map(|c| c.6).max().unwrap_or(0);
        for c in &mut cores {
            c.3 = d;
            c.6 = ring;
        }
    }
    if t.p99_us.is_none() {
        p.skip(
            "flush deadline",
            "no latency target (--p99-us): the deadline is kept",
        );
    }
    let mut seen = std::collections::BTreeSet::new();
    for &(cpu, rate, d0, d1, r0, need, r1) in &cores {
        let file = layout.core_file(cpu);
        if !seen.insert(file.clone()) {
            continue;
        }
        if let (Some(l), true) = (t.p99_us, d1 != d0) {
            p.settings.push(Setting {
                file: file.clone(),
                table: None,
                key: "flush_deadline_us",
                before: d0.to_string(),
                value: d1 as i64,
                why: format!("min(p99 target {l:.0} µs / 10, a batch's fill time at {rate:.0}/s)"),
            });
        }
        if r1 != r0 {
            p.settings.push(Setting {
                file,
                table: None,
                key: "ring_capacity",
                before: r0.to_string(),
                value: r1 as i64,
                why: format!(
                    "{need} slots hold {rate:.0}/s for {behind_us:.0} µs behind (p99.9) in \
                     batches sealed at {d1} µs"
                ),
            });
        }
    }
    if let Some(why) = no_raise {
        p.skip("ring capacity", why);
    } else if cores.iter().all(|c| c.6 == c.4) {
        p.skip(
            "ring capacity",
            format!(
                "the rings already hold what arrives in {behind_us:.0} µs behind (need {} ≤ {})",
                cores.iter().map(|c| c.5).max().unwrap_or(0),
                cores.iter().map(|c| c.4).min().unwrap_or(0)
            ),
        );
    }
    p.rings = Some(RingPlan { behind_us, cores });
}

#[cfg(test)]
mod tests;
