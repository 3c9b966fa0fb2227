//! Built-in pipelines, selected by `pipeline = "…"` in `job.toml`. Each is written with
//! the public pipeline API, exactly as a user would write it.

pub mod etl;
pub mod keyed_async;
pub mod latency;
pub mod lookup;
pub mod nexmark;

use crate::config::{JobSpec, PipelineKind};
use crate::dataflow::JobGraph;
use crate::error::Result;

/// Builds the pipeline `spec` names, with its parameters.
pub fn build(spec: &JobSpec) -> Result<JobGraph> {
    match spec.job.pipeline {
        PipelineKind::Latency => latency::build(spec),
        PipelineKind::Etl => etl::build(spec),
        PipelineKind::KeyedAsync => keyed_async::build(spec),
        q => nexmark::build(spec, q),
    }
}
