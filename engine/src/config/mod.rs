//! Job directories: `job.toml` plus one `cores/<cpu>.toml` per core. This module reads
//! and resolves them into a `JobSpec`; the schemas and their defaults live in `job.rs`
//! and `core.rs`. Every error names the file, the key and what would be valid.

pub mod asyncio;
mod checkpoint;
mod core;
pub(crate) mod job;
mod scope;

use std::path::{Path, PathBuf};

pub use self::checkpoint::{CheckpointConfig, CheckpointMode, RestartConfig, RestartKind};
pub use self::core::{CoreConfig, MAX_ASYNC_CAPACITY};
pub use self::job::{
    DiagnosticsConfig, GeneratorConfig, JobConfig, MetricsConfig, NexmarkConfig, NexmarkSink,
    PipelineKind, SourceConfig, DEFAULT_METRICS_LISTEN,
};
use crate::error::ConfigError;
use crate::ids::CoreId;

/// One configured core: the CPU it pins to, its file and its settings.
#[derive(Clone, Debug, PartialEq)]
pub struct CoreSpec {
    /// The CPU, from the file name.
    pub cpu: CoreId,
    /// The file it came from (for error messages).
    pub file: PathBuf,
    /// Its settings.
    pub config: CoreConfig,
}

/// A fully read and validated job directory.
#[derive(Clone, Debug, PartialEq)]
pub struct JobSpec {
    /// The job directory; relative paths in `job.toml` are relative to it.
    pub dir: PathBuf,
    /// `job.toml`.
    pub job: JobConfig,
    /// The cores, sorted by CPU id.
    pub cores: Vec<CoreSpec>,
}

/// The CPUs this process may run on (its affinity mask), sorted.
pub fn available_cpus() -> Vec<usize> {
    let mut ids: Vec<usize> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.id)
        .collect();
    ids.sort_unstable();
    if ids.is_empty() {
        // No affinity information (non-Linux or a restricted sandbox): trust the count.
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        ids = (0..n).collect();
    }
    ids
}

fn read(file: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(file).map_err(|source| ConfigError::Read {
        file: file.to_path_buf(),
        source,
    })
}

fn parse<T: serde::de::DeserializeOwned>(
    file: &Path,
    value: toml::Value,
) -> Result<T, ConfigError> {
    T::deserialize(value).map_err(|e| ConfigError::Parse {
        file: file.to_path_buf(),
        message: e.to_string().trim_end().to_string(),
    })
}

fn parse_toml(file: &Path, text: &str) -> Result<toml::Value, ConfigError> {
    text.parse::<toml::Table>()
        .map(toml::Value::Table)
        .map_err(|e| ConfigError::Parse {
            file: file.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })
}

/// Applies `table.key=value` overrides (like Flink's `-D`) to a parsed `job.toml`. The
/// value is read as TOML (`1000`, `true`, `"x"`, `[0, 1]`); anything that is not valid
/// TOML is taken as a string.
pub fn apply_overrides(
    file: &Path,
    root: &mut toml::Value,
    overrides: &[String],
) -> Result<(), ConfigError> {
    for o in overrides {
        let Some((path, raw)) = o.split_once('=') else {
            return Err(ConfigError::Invalid {
                file: file.to_path_buf(),
                key: o.clone(),
                problem: "an override without `=`".into(),
                valid: "table.key=value, e.g. generator.rate_eps=1000000".into(),
            });
        };
        let value = format!("v = {raw}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(raw.to_string()));
        let mut node = &mut *root;
        let parts: Vec<&str> = path.trim().split('.').collect();
        for (i, part) in parts.iter().enumerate() {
            let table = node.as_table_mut().ok_or_else(|| ConfigError::Invalid {
                file: file.to_path_buf(),
                key: path.to_string(),
                problem: format!("`{}` is not a table", parts[..i].join(".")),
                valid: "a dotted path through tables".into(),
            })?;
            if i + 1 == parts.len() {
                table.insert(part.to_string(), value.clone());
                break;
            }
            node = table
                .entry(part.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        }
    }
    Ok(())
}

impl JobSpec {
    /// Reads and validates the job directory `dir`.
    pub fn load(dir: &Path) -> Result<Self, ConfigError> {
        Self::load_with_overrides(dir, &[])
    }

    /// Reads `dir`, applies `table.key=value` overrides to `job.toml`, validates.
    pub fn load_with_overrides(dir: &Path, overrides: &[String]) -> Result<Self, ConfigError> {
        let job_file = dir.join("job.toml");
        if !job_file.is_file() {
            return Err(ConfigError::Missing {
                file: job_file,
                why: "every job directory has a job.toml (see examples/)".into(),
            });
        }
        let mut value = parse_toml(&job_file, &read(&job_file)?)?;
        apply_overrides(&job_file, &mut value, overrides)?;
        let job: JobConfig = parse(&job_file, value.clone())?;
        job.validate(&job_file)?;
        scope::check_keys(&job_file, &value, &job)?;

        let cores_dir = dir.join("cores");
        let mut found: Vec<(usize, PathBuf)> = Vec::new();
        if cores_dir.is_dir() {
            let entries = std::fs::read_dir(&cores_dir).map_err(|source| ConfigError::Read {
                file: cores_dir.clone(),
                source,
            })?;
            for entry in entries {
                let entry = entry.map_err(|source| ConfigError::Read {
                    file: cores_dir.clone(),
                    source,
                })?;
                let path = entry.path();
                if path.extension().and_then(|e| e.to_str()) != Some("toml") {
                    continue;
                }
                let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
                let cpu = stem.parse::<usize>().map_err(|_| ConfigError::Invalid {
                    file: path.clone(),
                    key: "(file name)".into(),
                    problem: format!("`{stem}` is not a CPU id"),
                    valid: "cores/<cpu>.toml with a CPU number, e.g. cores/0.toml".into(),
                })?;
                found.push((cpu, path));
            }
        }
        found.sort();
        for (cpu, path) in &found {
            let canonical = cores_dir.join(format!("{cpu}.toml"));
            if *path != canonical {
                return Err(ConfigError::Invalid {
                    file: path.clone(),
                    key: "(file name)".into(),
                    problem: format!("names CPU {cpu} in a non-canonical way"),
                    valid: format!("{}", canonical.display()),
                });
            }
        }
        if let Some(listed) = &job.cores {
            for cpu in listed {
                if !found.iter().any(|(c, _)| c == cpu) {
                    return Err(ConfigError::Missing {
                        file: cores_dir.join(format!("{cpu}.toml")),
                        why: format!(
                            "job.toml `cores` lists CPU {cpu}; create the file (it may be empty)"
                        ),
                    });
                }
            }
            if let Some((cpu, path)) = found.iter().find(|(c, _)| !listed.contains(c)) {
                return Err(ConfigError::Invalid {
                    file: path.clone(),
                    key: "(file name)".into(),
                    problem: format!("CPU {cpu} is not listed in job.toml `cores`"),
                    valid: format!("one of {listed:?}, or remove the file"),
                });
            }
        }
        if found.is_empty() {
            return Err(ConfigError::Missing {
                file: cores_dir.join("0.toml"),
                why: "a job needs at least one core file in cores/ (an empty file means all \
                      defaults)"
                    .into(),
            });
        }

        let available = available_cpus();
        let mut cores = Vec::with_capacity(found.len());
        for (cpu, file) in found {
            if !available.contains(&cpu) {
                return Err(ConfigError::Invalid {
                    file,
                    key: "(file name)".into(),
                    problem: format!(
                        "CPU {cpu} does not exist or is not available to this process"
                    ),
                    valid: format!("one of the available CPUs {available:?}"),
                });
            }
            let config: CoreConfig = parse(&file, parse_toml(&file, &read(&file)?)?)?;
            config.validate(&file)?;
            scope::check_core(&file, &config, &job)?;
            cores.push(CoreSpec {
                cpu: CoreId(cpu),
                file,
                config,
            });
        }
        let spec = Self {
            dir: dir.to_path_buf(),
            job,
            cores,
        };
        spec.check_parallelism(&job_file)?;
        spec.placement(spec.max_parallelism())?;
        Ok(spec)
    }

    /// A job built in code rather than read from a directory: `job` run in `dir` on
    /// `cpus`, every core with `core`. Not validated (see `JobConfig::validate`).
    pub fn with_cores(dir: &Path, job: JobConfig, cpus: &[usize], core: CoreConfig) -> Self {
        Self {
            dir: dir.to_path_buf(),
            job,
            cores: cpus
                .iter()
                .map(|&cpu| CoreSpec {
                    cpu: CoreId(cpu),
                    file: PathBuf::from(format!("cores/{cpu}.toml")),
                    config: core.clone(),
                })
                .collect(),
        }
    }

    /// The built-in default job: the latency pipeline on `cpus` with all defaults.
    pub fn builtin_default(cpus: &[usize], overrides: &[String]) -> Result<Self, ConfigError> {
        let file = PathBuf::from("(built-in job.toml)");
        let mut value = toml::Value::Table(toml::Table::new());
        apply_overrides(&file, &mut value, overrides)?;
        let job: JobConfig = parse(&file, value.clone())?;
        job.validate(&file)?;
        scope::check_keys(&file, &value, &job)?;
        let spec = Self {
            dir: std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
            job,
            cores: cpus
                .iter()
                .map(|&cpu| CoreSpec {
                    cpu: CoreId(cpu),
                    file: PathBuf::from(format!("(built-in cores/{cpu}.toml)")),
                    config: CoreConfig::default(),
                })
                .collect(),
        };
        spec.check_parallelism(&file)?;
        spec.placement(spec.max_parallelism())?;
        Ok(spec)
    }

    /// Every partition count the job's config sets, with the key that sets it.
    fn partition_counts(&self) -> Vec<(&'static str, u32)> {
        let mut counts = vec![(
            if self.job.parallelism.is_some() {
                "parallelism"
            } else {
                "cores"
            },
            self.default_parallelism(),
        )];
        if let (true, Some(g)) = (
            self.job.builtin().is_some_and(PipelineKind::has_generator),
            &self.job.generator,
        ) {
            counts.extend(g.partitions.map(|p| ("generator.partitions", p)));
        }
        counts
    }

    /// Every operator's parallelism must fit in the key groups.
    fn check_parallelism(&self, file: &Path) -> Result<(), ConfigError> {
        let max = u32::from(self.job.max_key_groups);
        match self.partition_counts().into_iter().find(|(_, p)| *p > max) {
            Some((key, p)) => Err(ConfigError::Invalid {
                file: file.to_path_buf(),
                key: key.into(),
                problem: format!("{p} partitions, more than max_key_groups ({max})"),
                valid: format!("at most max_key_groups ({max}), or raise max_key_groups"),
            }),
            None => Ok(()),
        }
    }

    /// This process's place among the job's processes (`process` in `job.toml`, or
    /// `--process`; one process by default).
    pub fn process(&self) -> crate::ids::Process {
        self.job.process.unwrap_or_default()
    }

    /// This process's local checkpoint directory (log, manifests, history), resolved:
    /// the configured one, and under it `process-<i>-of-<N>` when the job runs as
    /// several processes (so that processes sharing a job directory never share a log).
    /// `None` without `[checkpoint]`.
    pub fn checkpoint_log_dir(&self) -> Option<PathBuf> {
        let cfg = self.job.checkpoint.as_ref()?;
        let dir = self.resolve(&cfg.local_path());
        let p = self.process();
        Some(if p.is_single() {
            dir
        } else {
            dir.join(p.prefix())
        })
    }

    /// Where this process's checkpoints go in S3: the configured `s3://bucket/prefix`, and
    /// under it `process-<i>-of-<N>/` when the job runs as several processes. `None`
    /// without an `s3://` checkpoint `dir`.
    pub fn checkpoint_url(&self) -> Option<String> {
        let url = self.job.checkpoint.as_ref()?.remote_url()?;
        let p = self.process();
        Some(if p.is_single() {
            url.to_string()
        } else {
            format!("{}/{}", url.trim_end_matches('/'), p.prefix())
        })
    }

    /// A path from `job.toml`, resolved against the job directory.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.dir.join(path)
        }
    }

    /// The default parallelism of an operator: `parallelism` from `job.toml`, or one
    /// partition per core.
    pub fn default_parallelism(&self) -> u32 {
        self.job.parallelism.unwrap_or(self.cores.len() as u32)
    }

    /// The largest parallelism any operator of this job's pipeline may have.
    pub fn max_parallelism(&self) -> u32 {
        self.partition_counts()
            .into_iter()
            .map(|(_, p)| p)
            .max()
            .unwrap_or(1)
    }

    /// Which core (an index into `cores`) owns each partition index `0..max_parallelism`.
    pub fn placement(&self, max_parallelism: u32) -> Result<Vec<usize>, ConfigError> {
        let n = self.cores.len();
        if self.cores.iter().all(|c| c.config.partitions.is_none()) {
            return Ok((0..max_parallelism as usize).map(|p| p % n).collect());
        }
        let mut owner: Vec<Option<usize>> = vec![None; max_parallelism as usize];
        for (ci, core) in self.cores.iter().enumerate() {
            for &p in core.config.partitions.as_deref().unwrap_or(&[]) {
                if p >= max_parallelism {
                    continue; // Owning a partition no operator has is harmless.
                }
                if let Some(other) = owner[p as usize] {
                    return Err(ConfigError::Invalid {
                        file: core.file.clone(),
                        key: "partitions".into(),
                        problem: format!(
                            "partition {p} is also owned by {}",
                            self.cores[other].file.display()
                        ),
                        valid: "each partition owned by exactly one core".into(),
                    });
                }
                owner[p as usize] = Some(ci);
            }
        }
        owner
            .iter()
            .enumerate()
            .map(|(p, o)| {
                o.ok_or_else(|| ConfigError::Invalid {
                    file: self.dir.join("cores"),
                    key: "partitions".into(),
                    problem: format!("no core owns partition {p} (the job has {max_parallelism})"),
                    valid: format!(
                        "partitions 0..{max_parallelism} each listed in exactly one core file, \
                         or `partitions` unset everywhere for round-robin placement"
                    ),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
