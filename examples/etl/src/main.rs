//! The etl job's binary: `etl run job/`, `etl validate job/`, `etl checkpoints job/`,
//! and the rest of the command line `rill_engine::app` gives every job.

fn main() -> std::process::ExitCode {
    rill_engine::app::main("etl", etl::build)
}
