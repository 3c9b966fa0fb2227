//! The recommendation job's binary: `recommendation run job/`, `recommendation validate
//! job/`, `recommendation checkpoints job/`, and the rest of the command line
//! `rill_engine::app` gives every job.

fn main() -> std::process::ExitCode {
    rill_engine::app::main("recommendation", recommendation::build)
}
