//! The risk-control job's binary: `risk-control run job/`, `risk-control validate job/`,
//! `risk-control checkpoints job/`, and the rest of the command line `rill_engine::app`
//! gives every job.

fn main() -> std::process::ExitCode {
    rill_engine::app::main("risk-control", risk_control::build)
}
