//! Which pipelines read which tables and keys of `job.toml`. A key the job's pipeline
//! does not read is refused, naming the pipelines that read it: nothing in a job file is
//! accepted and then ignored. Tables are checked on the parsed `JobConfig` (their
//! presence survives parsing); keys inside a table are checked on the raw TOML, since
//! serde fills absent keys with their defaults. For a pipeline of the job's own binary
//! (not built in), the tables only built-ins read are refused here; whether it reads
//! `[params]`, `[async]` and `[lookup]` is known once it has been built, and `app`
//! checks that.

use std::path::Path;

use super::core::CoreConfig;
use super::job::{invalid, JobConfig, NexmarkSink, PipelineKind};
use crate::error::ConfigError;
use PipelineKind::*;

const NEXMARK: &[PipelineKind] = &[
    NexmarkQ0, NexmarkQ1, NexmarkQ2, NexmarkQ3, NexmarkQ4, NexmarkQ5, NexmarkQ6, NexmarkQ7,
    NexmarkQ8,
];

const GENERATED: &[PipelineKind] = &[
    Latency, KeyedAsync, NexmarkQ0, NexmarkQ1, NexmarkQ2, NexmarkQ3, NexmarkQ4, NexmarkQ5,
    NexmarkQ6, NexmarkQ7, NexmarkQ8,
];

/// Tables and keys that only some pipelines read, with the built-ins that read them.
/// Everything not listed (`pipeline`, `parallelism`, `max_key_groups`, `cores`,
/// `[checkpoint]`, `[restart]`, `[metrics]`, `[diagnostics]`, and the keys of a listed
/// table not listed themselves) applies to every pipeline that reads its table. The
/// last column: whether a pipeline of the job's own binary may read it.
const SCOPED: &[(&str, &[PipelineKind], bool)] = &[
    ("source", &[KeyedAsync], false),
    ("source.keys", &[KeyedAsync], false),
    ("generator", GENERATED, false),
    ("generator.keys", &[Latency, KeyedAsync], false),
    ("generator.sink_cost_ns", &[Latency, KeyedAsync], false),
    ("nexmark", NEXMARK, false),
    ("async", &[KeyedAsync], true),
    ("lookup", &[KeyedAsync], true),
    ("params", &[], true),
];

/// `"latency", "keyed-async"`, with the Nexmark queries as one range.
fn names(pipelines: &[PipelineKind]) -> String {
    let mut out: Vec<String> = pipelines
        .iter()
        .filter(|p| !p.is_nexmark())
        .map(|p| format!("\"{}\"", p.name()))
        .collect();
    let q: Vec<&PipelineKind> = pipelines.iter().filter(|p| p.is_nexmark()).collect();
    match q.len() {
        0 => {}
        n if n == NEXMARK.len() => out.push("\"nexmark-q0\" … \"nexmark-q8\"".into()),
        _ => out.extend(q.iter().map(|p| format!("\"{}\"", p.name()))),
    }
    out.join(", ")
}

/// Refuses the first of `present` (dotted keys set in `file`) that `job`'s pipeline
/// does not read.
fn check(file: &Path, job: &JobConfig, present: &[String]) -> Result<(), ConfigError> {
    for key in present {
        let Some((_, readers, own)) = SCOPED.iter().find(|(k, _, _)| k == key) else {
            continue;
        };
        let read = match job.builtin() {
            Some(p) => readers.contains(&p),
            None => *own,
        };
        if read {
            continue;
        }
        let valid = match (readers.is_empty(), *own) {
            (true, _) => "remove it; built-in pipelines have no parameters of their own (it applies to a \
                          pipeline of the job's own binary)"
                .to_string(),
            (false, true) => format!(
                "remove it; it applies to the built-in pipeline{} {}, and to a pipeline of                  the job's own binary that reads it",
                if readers.len() > 1 { "s" } else { "" },
                names(readers)
            ),
            (false, false) => format!(
                "remove it; it applies to the built-in pipeline{} {} only",
                if readers.len() > 1 { "s" } else { "" },
                names(readers)
            ),
        };
        return Err(invalid(
            file,
            key,
            format!(
                "set for pipeline \"{}\", which does not read it",
                job.pipeline_name()
            ),
            &valid,
        ));
    }
    Ok(())
}

/// The tables (and optional keys) `job` sets, as parsed.
pub(super) fn check_tables(file: &Path, job: &JobConfig) -> Result<(), ConfigError> {
    let present: Vec<String> = [
        ("source", job.source.is_some()),
        (
            "source.keys",
            job.source.as_ref().is_some_and(|s| s.keys.is_some()),
        ),
        ("generator", job.generator.is_some()),
        ("nexmark", job.nexmark.is_some()),
        ("async", job.async_io.is_some()),
        ("lookup", job.lookup.is_some()),
        ("params", job.params.is_some()),
    ]
    .into_iter()
    .filter(|(_, set)| *set)
    .map(|(k, _)| k.to_string())
    .collect();
    check(file, job, &present)
}

/// Every key of the raw `job.toml` (`raw`, after overrides), checked against `job`'s
/// pipeline, and the keys that depend on another key of their table.
pub(crate) fn check_keys(
    file: &Path,
    raw: &toml::Value,
    job: &JobConfig,
) -> Result<(), ConfigError> {
    let mut present = Vec::new();
    for (name, value) in raw.as_table().into_iter().flatten() {
        present.push(name.clone());
        for key in value.as_table().into_iter().flat_map(|t| t.keys()) {
            present.push(format!("{name}.{key}"));
        }
    }
    check(file, job, &present)?;
    if let Some(n) = &job.nexmark {
        if present.iter().any(|k| k == "nexmark.out") && n.sink != NexmarkSink::File {
            return Err(invalid(
                file,
                "nexmark.out",
                format!(
                    "set with nexmark.sink = \"{}\", which writes no files",
                    if n.sink == NexmarkSink::Latency {
                        "latency"
                    } else {
                        "discard"
                    }
                ),
                "remove it; it applies with sink = \"file\" only",
            ));
        }
    }
    Ok(())
}

/// A core file's `async_capacity` applies to the job's async operator: refused when the
/// pipeline has none.
pub(super) fn check_core(
    file: &Path,
    core: &CoreConfig,
    job: &JobConfig,
) -> Result<(), ConfigError> {
    // A pipeline of the job's own binary may have async operators; built-ins other
    // than keyed-async have none.
    let has_async = job.builtin().map_or(true, |p| p == KeyedAsync);
    if core.async_capacity.is_some() && !has_async {
        return Err(invalid(
            file,
            "async_capacity",
            format!(
                "set for pipeline \"{}\", which has no async operator",
                job.pipeline_name()
            ),
            "remove it; it applies to pipelines with an async operator (\"keyed-async\", \
             or a pipeline of the job's own binary)",
        ));
    }
    Ok(())
}
