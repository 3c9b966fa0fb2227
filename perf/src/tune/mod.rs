//! The tuning advisor behind `rill-perf tune JOB_DIR`: it runs a job under the
//! benchmark harness, measures the IO time t, the arrival rate λ, the checkpoint
//! duration C and the state's growth, applies the seed's models (async capacity
//! N ≥ λ·t with headroom; checkpoint interval T with C/T under the overhead target and
//! the recovery time under its target; ring capacities and flush deadlines from the
//! measured rates), writes the settings into the job's own config files (comments and
//! other keys kept), runs again and prints predicted against measured for each figure.
//!
//! - [`model`]: the decision rules, pure, with their unit tests;
//! - [`measure`]: the figures of one harness run;
//! - [`plan`]: figures and targets → which value goes into which file;
//! - [`edit`]: writing TOML with `toml_edit`, in a staged copy first;
//! - [`advisor`]: the shell that runs, writes and verifies;
//! - [`report`]: the predicted-against-measured table.
//!
//! It reuses the harness (`rill_bench`) for every run and never runs a job any other way.

pub mod advisor;
pub mod edit;
pub mod measure;
pub mod model;
pub mod plan;
pub mod report;

#[cfg(test)]
mod fixtures;

pub use advisor::{tune, Options, Outcome};
pub use model::Targets;
