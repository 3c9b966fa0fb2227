//! The advisor's shell: run the job under the harness, read the figures, plan, write
//! the settings into a staged copy, load that copy with the engine (so a value the
//! engine rejects is never written), copy the changed files back, and run again to
//! verify. All decisions are in [`super::plan`] and [`super::model`]; the runs are the
//! harness's own (`rill_bench::runner::run`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use rill_bench::report::RunReport;
use rill_bench::runner;
use rill_bench::scenario::{Scenario, Settings};
use serde::Serialize;

use super::edit::{Applied, Staging};
use super::measure::Figures;
use super::model::Targets;
use super::plan::{plan, Layout, Plan, Setting};
use super::report::{rows, Row};

/// The longest verification run the advisor makes to see enough checkpoints, s.
pub const MAX_VERIFY_S: f64 = 30.0;
/// Periodic checkpoints a verification run should hold (at least two give a gap).
pub const VERIFY_INTERVALS: f64 = 3.5;

/// What to tune and how.
#[derive(Clone, Debug)]
pub struct Options {
    /// The job directory or scenario (a path, or a name under `bench/scenarios/`).
    pub job_dir: String,
    /// The targets.
    pub targets: Targets,
    /// The harness settings of both runs (rate, duration, warm-up, CPUs, `--set`s).
    pub settings: Settings,
    /// Print and verify, but write nothing.
    pub dry_run: bool,
    /// Run again with the new settings.
    pub verify: bool,
    /// Show the harness's progress line.
    pub progress: bool,
}

/// What one `tune` did.
#[derive(Serialize)]
pub struct Outcome {
    /// The directory tuned.
    pub dir: PathBuf,
    /// How it lays out its core files.
    pub layout: Layout,
    /// The targets.
    #[serde(skip)]
    pub targets: Targets,
    /// The first run's figures.
    pub before: Figures,
    /// The first run's report.
    pub before_report: RunReport,
    /// The decisions.
    pub plan: Plan,
    /// Each value as set in the staged files.
    pub applied: Vec<Applied>,
    /// The user's files that were replaced (none on a dry run).
    pub written: Vec<PathBuf>,
    /// Whether this was a dry run.
    pub dry_run: bool,
    /// The verification run's figures and report.
    pub after: Option<(Figures, RunReport)>,
    /// What the verification run changed beyond the settings (a longer run, …).
    pub notes: Vec<String>,
    /// Predicted against measured, one row per figure.
    pub rows: Vec<Row>,
    /// What the same rules would change after the verification run (the figures move
    /// with the settings: t grows with a busier core, rings can be sized once the job
    /// keeps up). Empty: the settings are stable; run tune again otherwise.
    pub next_round: Vec<Setting>,
}

/// Checks the targets; errors name the flag and what is valid.
pub fn check_targets(t: &Targets) -> Result<()> {
    if !(t.max_overhead.is_finite() && t.max_overhead > 0.0 && t.max_overhead < 1.0) {
        bail!(
            "--overhead {}: the largest fraction of time checkpoints may take, between 0 and 1 \
             (exclusive), e.g. 0.05",
            t.max_overhead
        );
    }
    if !(t.recovery_s.is_finite() && t.recovery_s > 0.0) {
        bail!(
            "--recovery-s {}: the longest time to be back after a failure, seconds, above 0 \
             (e.g. 10)",
            t.recovery_s
        );
    }
    if !(t.headroom.is_finite() && (1.0..=100.0).contains(&t.headroom)) {
        bail!(
            "--headroom {}: the margin over the mean need, 1 ..= 100 (e.g. 1.5 for 50% more)",
            t.headroom
        );
    }
    if let Some(p) = t.p99_us {
        if !(p.is_finite() && p > 0.0) {
            bail!("--p99-us {p}: the p99 latency target, microseconds, above 0 (e.g. 1000)");
        }
    }
    Ok(())
}

/// A file-source job read from its own directory (not a scenario that generates its
/// input): the harness runs it in a temporary directory, so the input is named by its
/// absolute path.
fn input_override(scenario: &Scenario) -> Result<Option<String>> {
    let generated = rill_engine::config::PipelineKind::from_name(&scenario.pipeline()?)
        .is_some_and(rill_engine::config::PipelineKind::has_generator);
    if generated || scenario.load.etl_input.is_some() {
        return Ok(None);
    }
    let file = scenario.dir.join("job.toml");
    let text =
        std::fs::read_to_string(&file).with_context(|| format!("read {}", file.display()))?;
    let job: toml::Table = text
        .parse()
        .with_context(|| format!("{}: not TOML", file.display()))?;
    let path = job
        .get("params")
        .and_then(|s| s.get("input"))
        .and_then(|p| p.as_str())
        .unwrap_or("input.jsonl");
    let path = Path::new(path);
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        scenario.dir.join(path)
    };
    if !abs.is_file() {
        bail!(
            "{}: missing: the job reads it ([params] input in {}); make one with \
             `python3 examples/etl/gen.py 1000000 > {}`, or give the directory a load.toml \
             with [etl_input] so the harness generates it",
            abs.display(),
            file.display(),
            abs.display()
        );
    }
    let abs = abs.canonicalize()?;
    Ok(Some(format!(
        "params.input={}",
        toml::Value::String(abs.display().to_string())
    )))
}

/// The verification run's settings: the user's, without the `--set`s of keys the plan
/// writes (the files carry those now; on a dry run the staged files do), and long enough
/// to see a few checkpoints at the new interval.
fn verify_settings(
    first: &Settings,
    plan: &Plan,
    before: &runner::RunOutcome,
) -> (Settings, Vec<String>) {
    let mut s = first.clone();
    let mut notes = Vec::new();
    let job_keys: BTreeSet<String> = plan
        .settings
        .iter()
        .filter(|x| x.file == Path::new("job.toml"))
        .map(|x| match x.table {
            Some(t) => format!("{t}.{}", x.key),
            None => x.key.to_string(),
        })
        .collect();
    let core_keys: BTreeSet<&str> = plan
        .settings
        .iter()
        .filter(|x| x.file != Path::new("job.toml"))
        .map(|x| x.key)
        .collect();
    let key_of = |set: &String| set.split_once('=').map(|(k, _)| k.trim().to_string());
    s.job_sets.retain(|x| {
        let drop = key_of(x).is_some_and(|k| job_keys.contains(&k));
        if drop {
            notes.push(format!(
                "--set {x} not applied: the tuned value replaces it"
            ));
        }
        !drop
    });
    s.core_sets.retain(|x| {
        let drop = key_of(x).is_some_and(|k| core_keys.contains(k.as_str()));
        if drop {
            notes.push(format!(
                "--set core.{x} not applied: the tuned value replaces it"
            ));
        }
        !drop
    });
    if let (Some(c), Some(g)) = (&plan.checkpoint, &before.spec.job.generator) {
        let t_ms = c.decision.interval_ms as f64;
        // `--duration` is the measured time after the warm-up (the engine's schedule is
        // warm-up + duration), so compare like with like.
        let measured_s = g.duration_ms.saturating_sub(g.warmup_ms) as f64 / 1e3;
        let want_s = (VERIFY_INTERVALS * t_ms / 1e3).max(measured_s);
        if want_s > measured_s {
            let d = want_s.min(MAX_VERIFY_S.max(measured_s));
            let d = (d * 10.0).ceil() / 10.0;
            s.duration_s = Some(d);
            notes.push(format!(
                "verification run measures {:.1} s instead of {:.1} s (after the {:.1} s \
                 warm-up), to see {} checkpoints {} ms apart",
                d,
                measured_s,
                g.warmup_ms as f64 / 1e3,
                (d * 1e3 / t_ms).floor(),
                c.decision.interval_ms
            ));
        }
    }
    (s, notes)
}

/// Tunes `o.job_dir`.
pub fn tune(o: &Options) -> Result<Outcome> {
    check_targets(&o.targets)?;
    let scenario = Scenario::find(&o.job_dir)?;
    let layout = if scenario.dir.join("cores").is_dir() {
        Layout::Fixed
    } else {
        Layout::Template
    };
    let mut settings = o.settings.clone();
    if let Some(set) = input_override(&scenario)? {
        settings.job_sets.insert(0, set);
    }
    let first = runner::run(&scenario, &settings, o.progress)
        .with_context(|| format!("measuring {}", scenario.dir.display()))?;
    let before_report = RunReport::new(&first);
    let before = Figures::of(&first, &before_report);
    let plan = plan(&before, layout, &o.targets);

    let staging = Staging::copy(&scenario.dir)?;
    let mut applied = Vec::new();
    for s in &plan.settings {
        applied.push(staging.set(&s.file, s.table, s.key, s.value, &s.why)?);
    }
    let (check, mut notes) = verify_settings(&settings, &plan, &first);
    // The engine's own loader checks every written file before the user's are touched.
    let staged = Scenario::load(&staging.dir)?;
    staged
        .materialise(&check)
        .context("the tuned configuration does not load (nothing was written)")?;
    let files: Vec<PathBuf> = applied
        .iter()
        .map(|a| a.file.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let written = if o.dry_run {
        Vec::new()
    } else {
        staging.write_back(&files)?
    };
    let after = if o.verify {
        let again = if o.dry_run {
            notes.push(format!(
                "dry run: verified on a staged copy ({}); nothing written",
                staging.dir.display()
            ));
            staged
        } else {
            Scenario::load(&scenario.dir)?
        };
        let second = runner::run(&again, &check, o.progress).context("the verification run")?;
        let r = RunReport::new(&second);
        Some((Figures::of(&second, &r), r))
    } else {
        None
    };
    let rows = rows(&before, &plan, after.as_ref().map(|a| &a.0), &o.targets);
    let next_round = after.as_ref().map_or_else(Vec::new, |(a, _)| {
        super::plan::plan(a, layout, &o.targets).settings
    });
    Ok(Outcome {
        dir: scenario.dir.clone(),
        layout,
        targets: o.targets,
        before,
        before_report,
        plan,
        applied,
        written,
        dry_run: o.dry_run,
        after,
        notes,
        rows,
        next_round,
    })
}
