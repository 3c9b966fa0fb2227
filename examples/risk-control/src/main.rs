//! The risk-control job's binary: `risk-control run job/`, `risk-control validate job/`,
//! `risk-control checkpoints job/`, and the rest of the command line `rill_engine::app`
//! gives every job. Two pipelines: `risk-control` (files) and `risk-control-kafka`
//! (Kafka topics in and out, exactly-once); a job directory's `pipeline` picks one.

fn main() -> std::process::ExitCode {
    rill_engine::app::App::new("risk-control")
        .pipeline(
            "risk-control",
            "transactions from a JSON-lines file, alerts to files (exactly-once)",
            risk_control::build,
        )
        .pipeline(
            "risk-control-kafka",
            "transactions from a Kafka topic, alerts to a Kafka topic (exactly-once)",
            risk_control::kafka::build,
        )
        .main()
}
