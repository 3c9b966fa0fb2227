//! The `rill` command: the engine's built-in pipelines (the latency, keyed-async and
//! Nexmark jobs the benchmark harness drives) behind the command line every job binary
//! gets from `rill_engine::app`. `rill run` without a job directory runs the built-in
//! latency job on every available CPU.

use std::process::ExitCode;

fn main() -> ExitCode {
    rill_engine::app::App::new("rill").builtins().main()
}
