//! Scenarios: a job directory plus load parameters, and how one run of it is made
//! concrete for this machine.
//!
//! A scenario directory (`bench/scenarios/<name>/` or any path) holds:
//!
//! - `job.toml`: the job, exactly as `rill run` reads it;
//! - `load.toml` (optional): the load defaults, see [`LoadFile`];
//! - either `core.toml` (optional): a *template* core file applied to every CPU the run
//!   uses, or `cores/<cpu>.toml`: fixed core files, used as they are.
//!
//! CPUs are never hard-coded in a template scenario: a run uses the first `cores`
//! CPUs of `rill_engine::config::available_cpus()` (all of them by default) and the
//! harness writes a temporary job directory with `job.toml` (overrides applied, `cores`
//! set to the chosen CPUs) and one `cores/<cpu>.toml` per CPU copied from the template.
//! A fixed scenario keeps its files (a CPU that does not exist is the engine's error);
//! `cores = N` then takes the first N of its files. `core.KEY=VALUE` overrides are
//! applied to every core file in both forms. The engine then loads the temporary
//! directory with `JobSpec::load`, so every engine check applies; error messages name the
//! scenario's files, not the temporary ones.
//!
//! This module does no running and no printing.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use rill_engine::config::{apply_overrides, available_cpus, JobSpec, PipelineKind};

/// The example job the harness runs besides the built-ins (`examples/etl`).
pub const ETL: &str = "etl";
use serde::{Deserialize, Serialize};

/// `load.toml`: the load a scenario runs under unless the command line says otherwise.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadFile {
    /// Target rate of the open-loop generator, events per second
    /// (`generator.rate_eps`; pipelines with a generator only). Unset: job.toml's.
    pub rate_eps: Option<u64>,
    /// Measured time after the warm-up, seconds (the engine's `generator.duration_ms`
    /// is warm-up + this).
    pub duration_s: Option<f64>,
    /// Warm-up before the measured time, seconds (`generator.warmup_ms`).
    pub warmup_s: Option<f64>,
    /// How many of the available CPUs to use. Unset: all of them.
    pub cores: Option<usize>,
    /// For file-source jobs (`etl`): the input the harness generates before the run.
    pub etl_input: Option<EtlInput>,
}

/// `[etl_input]` of `load.toml`: a deterministic JSON-lines input like
/// `examples/etl/gen.py` makes (about 1.5% malformed lines, some non-positive amounts).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EtlInput {
    /// Lines to write.
    pub lines: u64,
    /// Seed of the generator.
    pub seed: u64,
    /// Distinct users.
    pub users: u64,
}

impl Default for EtlInput {
    fn default() -> Self {
        Self {
            lines: 200_000,
            seed: 42,
            users: 10_000,
        }
    }
}

/// Which CPUs a run uses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum CpuChoice {
    /// The first N available CPUs (or, in a fixed scenario, its first N core files).
    Count(usize),
    /// Exactly these CPUs.
    Ids(Vec<usize>),
}

/// Where a scenario's core files come from.
#[derive(Clone, Debug)]
enum Cores {
    /// `core.toml` (or nothing: all defaults), copied for every chosen CPU.
    Template(toml::Value, Option<PathBuf>),
    /// `cores/<cpu>.toml`, sorted by CPU.
    Fixed(Vec<(usize, PathBuf, toml::Value)>),
}

/// A scenario as read from disk.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// Its name (the directory's name).
    pub name: String,
    /// Its directory.
    pub dir: PathBuf,
    /// `job.toml`, parsed but not yet validated.
    job: toml::Value,
    /// `load.toml` (defaults when absent).
    pub load: LoadFile,
    cores: Cores,
}

/// What one run changes relative to the scenario's files.
#[derive(Clone, Debug, Default)]
pub struct Settings {
    /// `--rate`.
    pub rate_eps: Option<u64>,
    /// `--rate max`: flat out, as fast as the job goes for the measured time (the
    /// harness stops the sources after warm-up + duration).
    pub flat_out: bool,
    /// `--duration`: measured time after the warm-up, seconds.
    pub duration_s: Option<f64>,
    /// `--warmup`, seconds.
    pub warmup_s: Option<f64>,
    /// `--cores` / `--set cores=…`.
    pub cores: Option<CpuChoice>,
    /// `table.key=value` overrides of job.toml, applied in order (later wins).
    pub job_sets: Vec<String>,
    /// `key=value` overrides of every core file (given as `core.key=value`).
    pub core_sets: Vec<String>,
    /// Keys of job.toml to remove (a sweep value `off`).
    pub removes: Vec<String>,
    /// Abort a run that has not finished after this long, seconds (default: twice the
    /// schedule plus 30 s; 600 s for file sources).
    pub timeout_s: Option<f64>,
}

impl Settings {
    /// Sorts one `--set` into its kind: `cores=N` or `cores=[ids]`, `core.key=value`
    /// (every core file) or a job.toml override.
    pub fn add_set(&mut self, set: &str) -> Result<()> {
        let Some((key, value)) = set.split_once('=') else {
            bail!("--set {set:?}: expected table.key=value, e.g. generator.rate_eps=1000000");
        };
        let key = key.trim();
        if key.is_empty() {
            bail!("--set {set:?}: the key is empty");
        }
        if key == "cores" {
            self.cores = Some(parse_cpu_choice(value).with_context(|| format!("--set {set}"))?);
        } else if let Some(k) = key.strip_prefix("core.") {
            self.core_sets.push(format!("{k}={value}"));
        } else {
            self.job_sets.push(format!("{key}={value}"));
        }
        Ok(())
    }
}

/// The load flags `rill-bench run`/`sweep` and `rill-perf tune` share (flattened into
/// their clap arguments).
#[derive(clap::Args, Clone, Debug, Default)]
pub struct LoadArgs {
    /// Measured time AFTER the warm-up, seconds: a run lasts warm-up + duration (as in
    /// Flink's benchmark harnesses; default: load.toml's `duration_s`, else job.toml's).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Warm-up before the measured time, seconds: events in it are processed, not
    /// measured.
    #[arg(long)]
    pub warmup: Option<f64>,
    /// Number of CPUs (the first N available), or a list like `[0,1]`.
    #[arg(long)]
    pub cores: Option<String>,
    /// Override a key for the run: `table.key=value` (job.toml), `core.key=value` (every
    /// core file) or `cores=N`. Repeatable; later wins.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
}

impl LoadArgs {
    /// Settings with these flags applied (the rate and the rest at their defaults).
    pub fn settings(&self) -> anyhow::Result<Settings> {
        for (flag, v) in [("--duration", self.duration), ("--warmup", self.warmup)] {
            if v.is_some_and(|v| !v.is_finite() || v < 0.0) {
                anyhow::bail!(
                    "{flag} {}: a non-negative number of seconds",
                    v.unwrap_or(0.0)
                );
            }
        }
        let mut s = Settings {
            duration_s: self.duration,
            warmup_s: self.warmup,
            ..Settings::default()
        };
        if let Some(c) = &self.cores {
            s.cores = Some(parse_cpu_choice(c).map_err(|e| e.context("--cores"))?);
        }
        for set in &self.sets {
            s.add_set(set)?;
        }
        Ok(s)
    }
}

/// Parses `2` (a count) or `[0, 1]` (CPU ids).
pub fn parse_cpu_choice(value: &str) -> Result<CpuChoice> {
    let v = value.trim();
    if let Ok(n) = v.parse::<usize>() {
        if n == 0 {
            bail!("cores = 0: a run needs at least one CPU");
        }
        return Ok(CpuChoice::Count(n));
    }
    let ids: Vec<usize> = toml::from_str::<toml::Table>(&format!("v = {v}"))
        .ok()
        .and_then(|t| t.get("v").cloned())
        .and_then(|v| v.try_into().ok())
        .ok_or_else(|| {
            anyhow!("cores = {v}: expected a CPU count (2) or a list of CPU ids ([0, 1])")
        })?;
    if ids.is_empty() {
        bail!("cores = []: a run needs at least one CPU");
    }
    Ok(CpuChoice::Ids(ids))
}

/// Names of the scenarios shipped under `bench/scenarios/`.
pub fn shipped() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(shipped_dir())
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.path().join("job.toml").is_file())
                .filter_map(|e| e.file_name().to_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn shipped_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios")
}

fn read_toml(file: &Path) -> Result<toml::Value> {
    let text = std::fs::read_to_string(file).with_context(|| format!("read {}", file.display()))?;
    text.parse::<toml::Table>()
        .map(toml::Value::Table)
        .map_err(|e| anyhow!("{}: {}", file.display(), e.to_string().trim_end()))
}

impl Scenario {
    /// Finds `name_or_path`: a directory path, or a name under `bench/scenarios/`.
    pub fn find(name_or_path: &str) -> Result<Self> {
        let as_path = PathBuf::from(name_or_path);
        let dir = if as_path.is_dir() {
            as_path
        } else {
            let candidate = shipped_dir().join(name_or_path);
            if !candidate.is_dir() {
                bail!(
                    "no scenario {name_or_path:?}: not a directory, and not one of the shipped \
                     scenarios {:?} in {}",
                    shipped(),
                    shipped_dir().display()
                );
            }
            candidate
        };
        Self::load(&dir)
    }

    /// Reads the scenario in `dir`.
    pub fn load(dir: &Path) -> Result<Self> {
        let job_file = dir.join("job.toml");
        if !job_file.is_file() {
            bail!(
                "{}: missing; a scenario is a job directory with a job.toml (and optionally \
                 load.toml and core.toml or cores/)",
                job_file.display()
            );
        }
        let job = read_toml(&job_file)?;
        let load_file = dir.join("load.toml");
        let load = if load_file.is_file() {
            let text = std::fs::read_to_string(&load_file)
                .with_context(|| format!("read {}", load_file.display()))?;
            toml::from_str::<LoadFile>(&text).map_err(|e| {
                anyhow!(
                    "{}: {} (valid keys: rate_eps, duration_s, warmup_s, cores, [etl_input] \
                     lines/seed/users)",
                    load_file.display(),
                    e.to_string().trim_end()
                )
            })?
        } else {
            LoadFile::default()
        };
        for (key, v) in [("duration_s", load.duration_s), ("warmup_s", load.warmup_s)] {
            if v.is_some_and(|v| !v.is_finite() || v < 0.0) {
                bail!(
                    "{}: {key} must be a non-negative number of seconds",
                    load_file.display()
                );
            }
        }
        let template = dir.join("core.toml");
        let cores_dir = dir.join("cores");
        let cores = if cores_dir.is_dir() {
            if template.is_file() {
                bail!(
                    "{}: a scenario has either core.toml (a template for every CPU) or cores/ \
                     (fixed CPUs), not both",
                    dir.display()
                );
            }
            let mut fixed = Vec::new();
            for e in std::fs::read_dir(&cores_dir)
                .with_context(|| format!("read {}", cores_dir.display()))?
            {
                let path = e?.path();
                if path.extension().and_then(|x| x.to_str()) != Some("toml") {
                    continue;
                }
                let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
                let cpu = stem.parse::<usize>().map_err(|_| {
                    anyhow!(
                        "{}: the name is not a CPU id (cores/<cpu>.toml)",
                        path.display()
                    )
                })?;
                let value = read_toml(&path)?;
                fixed.push((cpu, path, value));
            }
            fixed.sort_by_key(|(c, _, _)| *c);
            if fixed.is_empty() {
                bail!("{}: no cores/<cpu>.toml files", cores_dir.display());
            }
            Cores::Fixed(fixed)
        } else if template.is_file() {
            Cores::Template(read_toml(&template)?, Some(template))
        } else {
            Cores::Template(toml::Value::Table(toml::Table::new()), None)
        };
        let name = dir
            .canonicalize()
            .ok()
            .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| dir.display().to_string());
        Ok(Self {
            name,
            dir: dir.to_path_buf(),
            job,
            load,
            cores,
        })
    }

    /// The pipeline job.toml names (before overrides): a built-in, or `etl` (the example
    /// job, which the harness links).
    pub fn pipeline(&self) -> Result<String> {
        match self.job.get("pipeline") {
            None => Ok(PipelineKind::Latency.name().to_string()),
            Some(toml::Value::String(name))
                if name == ETL || PipelineKind::from_name(name).is_some() =>
            {
                Ok(name.clone())
            }
            Some(v) => Err(anyhow!(
                "{}: pipeline = {v}: valid: \"{ETL}\", {}",
                self.dir.join("job.toml").display(),
                PipelineKind::ALL
                    .iter()
                    .map(|p| format!("\"{}\"", p.name()))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }

    /// Makes the run `settings` describes concrete in a temporary job directory and loads
    /// it with the engine's own loader.
    pub fn materialise(&self, settings: &Settings) -> Result<Materialised> {
        let job_file = self.dir.join("job.toml");
        let mut job = self.job.clone();
        let mut sets: Vec<String> = Vec::new();
        let has_generator =
            PipelineKind::from_name(&self.pipeline()?).is_some_and(PipelineKind::has_generator);
        let rate = settings.rate_eps.or(self.load.rate_eps);
        let duration = settings.duration_s.or(self.load.duration_s);
        let warmup = settings.warmup_s.or(self.load.warmup_s);
        if has_generator {
            if settings.flat_out {
                // Every event due at once and more than any run produces: the harness
                // ends the sources after warm-up + duration and measures the window
                // between through the metrics endpoint (runner::Window).
                sets.push(format!("generator.rate_eps={FLAT_OUT_RATE_EPS}"));
                sets.push(format!("generator.duration_ms={FLAT_OUT_DURATION_MS}"));
                sets.push("generator.warmup_ms=0".into());
            } else {
                if let Some(r) = rate {
                    sets.push(format!("generator.rate_eps={r}"));
                }
                if let Some(w) = warmup {
                    sets.push(format!("generator.warmup_ms={}", (w * 1e3).round() as u64));
                }
            }
            let mut with_sets = job.clone();
            apply_overrides(&job_file, &mut with_sets, &settings.job_sets)?;
            if settings.flat_out || window_measured(&with_sets) {
                // The window is read from the endpoint: a free port (parallel runs do
                // not collide) and fresh figures; a `--set metrics.…` still wins.
                sets.push("metrics.listen=\"127.0.0.1:0\"".into());
                sets.push(format!("metrics.publish_ms={WINDOW_PUBLISH_MS}"));
            }
        } else if settings.rate_eps.is_some()
            || settings.flat_out
            || settings.duration_s.is_some()
            || settings.warmup_s.is_some()
        {
            bail!(
                "--rate, --duration and --warmup apply to jobs with a generator; scenario {} \
                 runs a file source (its size is [etl_input] lines in load.toml)",
                self.name
            );
        }
        sets.extend(settings.job_sets.iter().cloned());
        // `--duration` is the measured time after the warm-up; the engine's
        // `generator.duration_ms` is the whole schedule, so it is warm-up + duration,
        // with the warm-up as resolved above (a `--set generator.duration_ms` wins).
        let sets_duration = settings
            .job_sets
            .iter()
            .any(|x| x.split('=').next().map(str::trim) == Some("generator.duration_ms"));
        if let (true, false, false, Some(d)) =
            (has_generator, settings.flat_out, sets_duration, duration)
        {
            let mut probe = job.clone();
            apply_overrides(&job_file, &mut probe, &sets)?;
            let warmup_ms = probe
                .get("generator")
                .and_then(|g| g.get("warmup_ms"))
                .and_then(toml::Value::as_integer)
                .map_or(
                    rill_engine::config::GeneratorConfig::default().warmup_ms,
                    |w| w.max(0) as u64,
                );
            let at = sets.len() - settings.job_sets.len();
            sets.insert(
                at,
                format!(
                    "generator.duration_ms={}",
                    warmup_ms + (d * 1e3).round() as u64
                ),
            );
        }
        apply_overrides(&job_file, &mut job, &sets)?;
        for key in &settings.removes {
            remove_key(&mut job, key);
        }

        let available = available_cpus();
        let choice = settings
            .cores
            .clone()
            .or(self.load.cores.map(CpuChoice::Count));
        let core_files: Vec<(usize, Option<PathBuf>, toml::Value)> = match &self.cores {
            Cores::Template(t, file) => {
                let cpus = match &choice {
                    None => available.clone(),
                    Some(CpuChoice::Count(n)) if *n <= available.len() => available[..*n].to_vec(),
                    Some(CpuChoice::Count(n)) => bail!(
                        "cores = {n}: this machine has only {} available CPUs {available:?}",
                        available.len()
                    ),
                    Some(CpuChoice::Ids(ids)) => ids.clone(),
                };
                cpus.into_iter()
                    .map(|c| (c, file.clone(), t.clone()))
                    .collect()
            }
            Cores::Fixed(fixed) => {
                let mut all: Vec<_> = fixed
                    .iter()
                    .map(|(c, f, v)| (*c, Some(f.clone()), v.clone()))
                    .collect();
                match &choice {
                    None => {}
                    Some(CpuChoice::Count(n)) if *n <= all.len() => all.truncate(*n),
                    Some(CpuChoice::Count(n)) => bail!(
                        "cores = {n}: scenario {} has only {} core files",
                        self.name,
                        all.len()
                    ),
                    Some(CpuChoice::Ids(ids)) => all.retain(|(c, _, _)| ids.contains(c)),
                }
                all
            }
        };
        if core_files.is_empty() {
            bail!("the run selects no CPU");
        }
        let cpus: Vec<usize> = core_files.iter().map(|(c, _, _)| *c).collect();
        apply_overrides(&job_file, &mut job, &[format!("cores={cpus:?}")])?;

        let tmp = tempfile::Builder::new()
            .prefix("rill-bench-")
            .tempdir()
            .context("create a temporary job directory")?;
        let tmp_dir = tmp.path().to_path_buf();
        std::fs::create_dir(tmp_dir.join("cores"))?;
        let job_text = toml::to_string(&job).context("write job.toml")?;
        std::fs::write(tmp_dir.join("job.toml"), &job_text)?;
        let mut origins = Vec::new();
        for (cpu, origin, mut value) in core_files {
            let name = format!("cores/{cpu}.toml");
            let shown = origin
                .clone()
                .unwrap_or_else(|| self.dir.join("(no core.toml: defaults)"));
            apply_overrides(&shown, &mut value, &settings.core_sets)?;
            std::fs::write(tmp_dir.join(&name), toml::to_string(&value)?)?;
            origins.push((tmp_dir.join(&name), shown, name));
        }
        if let (false, Some(input)) = (has_generator, self.load.etl_input) {
            let path = job
                .get("params")
                .and_then(|s| s.get("input"))
                .and_then(|p| p.as_str())
                .unwrap_or("input.jsonl");
            let path = tmp_dir.join(path);
            write_etl_input(&path, input)?;
        }
        let spec = JobSpec::load(&tmp_dir).map_err(|e| {
            let mut msg = e.to_string();
            for (tmp_file, shown, name) in &origins {
                let as_name = if shown.ends_with(name) {
                    String::new()
                } else {
                    format!(" (the template, written as {name})")
                };
                msg = msg.replace(
                    &tmp_file.display().to_string(),
                    &format!("{}{as_name}", shown.display()),
                );
            }
            msg = msg.replace(
                &tmp_dir.display().to_string(),
                &self.dir.display().to_string(),
            );
            if sets.is_empty() {
                anyhow!("{msg}")
            } else {
                anyhow!("{msg}\n  (job.toml with overrides {sets:?})")
            }
        })?;
        let measured_window = match spec.job.generator.as_ref() {
            Some(g) if settings.flat_out => Some(Window {
                warmup_s: warmup.unwrap_or(DEFAULT_FLAT_OUT_WARMUP_S),
                duration_s: duration.unwrap_or(DEFAULT_FLAT_OUT_DURATION_S),
                flat_out: true,
            })
            .filter(|_| g.rate_eps == FLAT_OUT_RATE_EPS),
            Some(g) if has_generator && window_measured(&job) => Some(Window {
                warmup_s: g.warmup_ms as f64 / 1e3,
                duration_s: g.duration_ms.saturating_sub(g.warmup_ms) as f64 / 1e3,
                flat_out: false,
            }),
            _ => None,
        };
        Ok(Materialised {
            spec,
            window: measured_window,
            overrides: sets,
            core_sets: settings.core_sets.clone(),
            _dir: tmp,
        })
    }
}

/// The generator rate of a flat-out run (the engine's largest: every event due at once).
pub const FLAT_OUT_RATE_EPS: u64 = 1_000_000_000;
/// The generator schedule of a flat-out run, ms: far more events than a run produces
/// (10¹⁵); the harness ends the run.
const FLAT_OUT_DURATION_MS: u64 = 1_000_000_000;
/// How often cores publish their counters when the harness measures a window from the
/// endpoint, ms.
pub const WINDOW_PUBLISH_MS: u64 = 100;

/// Whether a generator job's throughput is measured from the source's counters over
/// the measured window (through the metrics endpoint) rather than from latency samples:
/// the Nexmark queries without a latency sink (their results are few, or discarded).
pub fn window_measured(job: &toml::Value) -> bool {
    let pipeline = job.get("pipeline").and_then(|p| p.as_str()).unwrap_or("");
    let sink = job
        .get("nexmark")
        .and_then(|n| n.get("sink"))
        .and_then(|s| s.as_str())
        .unwrap_or("discard");
    pipeline.starts_with("nexmark") && sink != "latency"
}

/// Removes `a.b.c` from a TOML tree (a no-op when absent).
fn remove_key(root: &mut toml::Value, key: &str) {
    let parts: Vec<&str> = key.split('.').collect();
    let mut node = root;
    for part in &parts[..parts.len() - 1] {
        match node.get_mut(*part) {
            Some(n) => node = n,
            None => return,
        }
    }
    if let Some(t) = node.as_table_mut() {
        t.remove(parts[parts.len() - 1]);
    }
}

/// The measured window of a run whose throughput the harness reads from the source's
/// counters: `[warmup_s, warmup_s + duration_s]` after the job's start.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Window {
    /// Warm-up before the window, seconds.
    pub warmup_s: f64,
    /// The window's length, seconds.
    pub duration_s: f64,
    /// Flat out: the harness ends the sources at the window's end.
    pub flat_out: bool,
}

/// Warm-up of a flat-out run when neither the command line nor load.toml gives one, s.
pub const DEFAULT_FLAT_OUT_WARMUP_S: f64 = 1.0;
/// Measured time of a flat-out run when neither the command line nor load.toml gives
/// one, s.
pub const DEFAULT_FLAT_OUT_DURATION_S: f64 = 5.0;

/// A run made concrete: the engine's `JobSpec` of a temporary job directory that lives
/// as long as this value.
pub struct Materialised {
    /// The loaded, validated spec.
    pub spec: JobSpec,
    /// The window the harness measures from the source's counters (flat-out runs, and
    /// generator jobs without latency samples); `None`: latency samples measure it.
    pub window: Option<Window>,
    /// The job.toml overrides the run applied (load parameters first, then `--set`).
    pub overrides: Vec<String>,
    /// The overrides applied to every core file.
    pub core_sets: Vec<String>,
    _dir: tempfile::TempDir,
}

/// Writes `input.lines` JSON lines of etl input to `path` (deterministic for a seed).
pub fn write_etl_input(path: &Path, input: EtlInput) -> Result<()> {
    use std::io::Write;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let file = std::fs::File::create(path).with_context(|| format!("create {}", path.display()))?;
    let mut w = std::io::BufWriter::new(file);
    // splitmix64: a tiny seeded generator; the exact stream does not matter, only that
    // it is the same for a seed.
    let mut state = input.seed;
    let mut next = move || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let users = input.users.max(1);
    for i in 0..input.lines {
        match next() % 1000 {
            0..=9 => writeln!(w, "{{\"ts\": oops")?,
            10..=14 => writeln!(w, "{{\"ts\": {i}, \"user\": \"u1\"}}")?,
            _ => {
                let user = next() % users;
                let amount = (next() % 10_100) as i64 - 100;
                writeln!(
                    w,
                    "{{\"ts\": {i}, \"user\": \"u{user}\", \"amount_cents\": {amount}}}"
                )?
            }
        }
    }
    w.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_are_sorted_by_kind() {
        let mut s = Settings::default();
        s.add_set("generator.rate_eps=5").unwrap();
        s.add_set("core.ring_capacity=64").unwrap();
        s.add_set("cores=1").unwrap();
        assert_eq!(s.job_sets, vec!["generator.rate_eps=5"]);
        assert_eq!(s.core_sets, vec!["ring_capacity=64"]);
        assert_eq!(s.cores, Some(CpuChoice::Count(1)));
        s.add_set("cores=[0, 1]").unwrap();
        assert_eq!(s.cores, Some(CpuChoice::Ids(vec![0, 1])));
        assert!(s.add_set("no-equals").is_err());
        assert!(s.add_set("=3").is_err());
        assert!(s.add_set("cores=0").is_err());
        assert!(s.add_set("cores=abc").is_err());
    }

    #[test]
    fn remove_key_removes_only_that_key() {
        let mut v: toml::Value = toml::from_str("[a]\nb = 1\nc = 2\n").unwrap();
        remove_key(&mut v, "a.b");
        remove_key(&mut v, "x.y");
        assert_eq!(v, toml::from_str::<toml::Value>("[a]\nc = 2\n").unwrap());
    }

    #[test]
    fn etl_input_is_deterministic() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        let input = EtlInput {
            lines: 500,
            ..EtlInput::default()
        };
        write_etl_input(&a, input).unwrap();
        write_etl_input(&b, input).unwrap();
        let text = std::fs::read_to_string(&a).unwrap();
        assert_eq!(text, std::fs::read_to_string(&b).unwrap());
        assert_eq!(text.lines().count(), 500);
    }

    /// A scenario directory with `job` and `load` (load.toml, empty: none).
    fn scenario(job: &str, load: &str) -> (tempfile::TempDir, Scenario) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("job.toml"), job).unwrap();
        if !load.is_empty() {
            std::fs::write(dir.path().join("load.toml"), load).unwrap();
        }
        let s = Scenario::load(dir.path()).unwrap();
        (dir, s)
    }

    fn one_cpu() -> Settings {
        Settings {
            cores: Some(CpuChoice::Count(1)),
            ..Settings::default()
        }
    }

    fn schedule(m: &Materialised) -> (u64, u64) {
        let g = m.spec.job.generator.clone().unwrap();
        (g.warmup_ms, g.duration_ms)
    }

    #[test]
    fn duration_is_the_measured_time_after_the_warm_up() {
        // load.toml: 5 s measured after 1 s: the engine's schedule is 6 s.
        let (_d, s) = scenario(
            "pipeline = \"latency\"\n",
            "rate_eps = 1000\nduration_s = 5.0\nwarmup_s = 1.0\n",
        );
        assert_eq!(
            schedule(&s.materialise(&one_cpu()).unwrap()),
            (1_000, 6_000)
        );
        // The command line beats load.toml, for either part.
        let cli = Settings {
            duration_s: Some(10.0),
            warmup_s: Some(3.0),
            ..one_cpu()
        };
        assert_eq!(schedule(&s.materialise(&cli).unwrap()), (3_000, 13_000));
        let cli = Settings {
            duration_s: Some(2.0),
            ..one_cpu()
        };
        assert_eq!(schedule(&s.materialise(&cli).unwrap()), (1_000, 3_000));
        // A --set of the warm-up moves the end with it; a --set of the engine's
        // schedule is taken as it is.
        let mut set = Settings {
            duration_s: Some(2.0),
            ..one_cpu()
        };
        set.add_set("generator.warmup_ms=500").unwrap();
        assert_eq!(schedule(&s.materialise(&set).unwrap()), (500, 2_500));
        set.add_set("generator.duration_ms=700").unwrap();
        assert_eq!(schedule(&s.materialise(&set).unwrap()), (500, 700));
        // No warm-up anywhere but job.toml: job.toml's.
        let (_d, s) = scenario("pipeline = \"latency\"\n[generator]\nwarmup_ms = 250\n", "");
        let cli = Settings {
            duration_s: Some(1.0),
            ..one_cpu()
        };
        assert_eq!(schedule(&s.materialise(&cli).unwrap()), (250, 1_250));
        assert_eq!(s.materialise(&cli).unwrap().window, None);
    }

    #[test]
    fn flat_out_is_a_window_of_the_given_duration_after_the_warm_up() {
        let (_d, s) = scenario(
            "pipeline = \"nexmark-q0\"\n",
            "rate_eps = 1000\nduration_s = 5.0\nwarmup_s = 1.0\n",
        );
        let max = Settings {
            flat_out: true,
            duration_s: Some(10.0),
            warmup_s: Some(3.0),
            ..one_cpu()
        };
        let m = s.materialise(&max).unwrap();
        assert_eq!(
            m.window,
            Some(Window {
                warmup_s: 3.0,
                duration_s: 10.0,
                flat_out: true
            })
        );
        let g = m.spec.job.generator.clone().unwrap();
        assert_eq!(g.rate_eps, FLAT_OUT_RATE_EPS);
        // The schedule outlasts any run (the harness ends it), not 10 s x 10^9 events.
        assert_eq!(g.duration_ms, FLAT_OUT_DURATION_MS);
        let metrics = m.spec.job.metrics.clone().unwrap();
        assert_eq!(metrics.listen, "127.0.0.1:0");
        assert_eq!(metrics.publish_ms, WINDOW_PUBLISH_MS);
        // Without --duration/--warmup: load.toml's.
        let m = s
            .materialise(&Settings {
                flat_out: true,
                ..one_cpu()
            })
            .unwrap();
        assert_eq!(
            m.window.map(|w| (w.warmup_s, w.duration_s)),
            Some((1.0, 5.0))
        );
        // Open loop, no latency sink: measured over the schedule after the warm-up.
        let m = s.materialise(&one_cpu()).unwrap();
        assert_eq!(
            m.window,
            Some(Window {
                warmup_s: 1.0,
                duration_s: 5.0,
                flat_out: false
            })
        );
        // With a latency sink the samples measure it.
        let mut latency = one_cpu();
        latency.add_set("nexmark.sink=\"latency\"").unwrap();
        assert_eq!(s.materialise(&latency).unwrap().window, None);
        // File-source jobs have no rate, duration or warm-up.
        let (_d, etl) = scenario("pipeline = \"etl\"\n", "");
        let err = etl
            .materialise(&Settings {
                flat_out: true,
                ..one_cpu()
            })
            .err()
            .unwrap();
        assert!(
            err.to_string().contains("apply to jobs with a generator"),
            "{err}"
        );
    }
}
