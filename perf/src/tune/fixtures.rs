//! Hand-made figures for the unit tests of the planning and reporting code.

use rill_engine::config::{CoreConfig, PipelineKind};

use super::measure::{AsyncFigures, CapacityInEffect, CheckpointFigures, CoreFigures, Figures};

pub(crate) fn core(cpu: usize, rate: f64, capacity: Option<CapacityInEffect>) -> CoreFigures {
    CoreFigures {
        cpu,
        config: CoreConfig::default(),
        sink_records: rate as u64,
        share: 0.5,
        rate_eps: rate,
        ring_rate_eps: rate / 2.0,
        async_partitions: u32::from(capacity.is_some()),
        capacity,
    }
}

/// keyed-async on two cores at 10000/s offered, capacity 4 from job.toml, t = 2 ms.
pub(crate) fn keyed_async() -> Figures {
    Figures {
        pipeline: PipelineKind::KeyedAsync.name().to_string(),
        offered_eps: Some(10_000.0),
        arrival_eps: 10_000.0,
        throughput_eps: 3_000.0,
        sink_throughput_eps: 3_990.0,
        kept_up: false,
        keep_up_problems: vec!["behind".into()],
        elapsed_s: 5.0,
        p99_us: Some(900_000.0),
        p999_us: Some(1_000_000.0),
        backpressure_steps: 1_000,
        cores: vec![
            core(0, 6_000.0, Some(CapacityInEffect::Job(4))),
            core(1, 4_000.0, Some(CapacityInEffect::Job(4))),
        ],
        async_io: Some(AsyncFigures {
            partitions: 2,
            io_time_ms: Some(2.0),
            completed: 20_000,
            mean_in_flight: Some(3.9),
            full_fraction: Some(0.97),
        }),
        checkpoint: None,
    }
}

pub(crate) fn with_checkpoints(interval: Option<u64>, durations: &[f64]) -> Figures {
    let mut f = keyed_async();
    f.checkpoint = Some(CheckpointFigures {
        interval_ms: interval,
        completed: durations.len(),
        duration_ms: super::measure::mean(durations),
        periodic: durations
            .iter()
            .enumerate()
            .map(|(i, d)| (i as f64 * 200.0, *d))
            .collect(),
        sizes: (0..durations.len())
            .map(|i| (i as f64 * 200.0, 1_000_000 + i as u64 * 20_000))
            .collect(),
        incremental: false,
        restart_delay_ms: 1_000.0,
    });
    f
}
