//! The engine's built-in pipelines, selected by `pipeline = "…"` in `job.toml`: the
//! latency, keyed-async and Nexmark jobs the benchmark harness drives. A job of your own
//! is a crate of its own on `rill_engine::app` (see `examples/` in the repository).

pub mod keyed_async;
pub mod latency;
pub mod nexmark;

use crate::config::{JobSpec, PipelineKind};
use crate::dataflow::JobGraph;
use crate::error::Result;

/// Builds the built-in pipeline `spec` names, with its parameters.
pub fn build(spec: &JobSpec) -> Result<JobGraph> {
    match spec.job.builtin() {
        Some(PipelineKind::Latency) => latency::build(spec),
        Some(PipelineKind::KeyedAsync) => keyed_async::build(spec),
        Some(q) => nexmark::build(spec, q),
        None => Err(crate::error::ConfigError::Invalid {
            file: spec.dir.join("job.toml"),
            key: "pipeline".into(),
            problem: format!(
                "\"{}\" is not a built-in pipeline",
                spec.job.pipeline_name()
            ),
            valid: format!(
                "one of {}",
                PipelineKind::ALL
                    .iter()
                    .map(|p| format!("\"{}\"", p.name()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
        .into()),
    }
}
