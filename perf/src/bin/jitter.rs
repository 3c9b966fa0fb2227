//! jitter: the floor the machine puts under any pinned busy-polling engine. One thread
//! per CPU spins reading the clock for a while; every gap between two consecutive reads
//! is time the thread did not run (preempted by another task, an interrupt, the
//! hypervisor). An engine on the same cores cannot have a latency tail below these gaps.
//!
//! `cargo run --release -p rill-perf --bin jitter -- --seconds 10`

use std::time::{Duration, Instant};

use clap::Parser;
use hdrhistogram::Histogram;

#[derive(Parser)]
struct Args {
    /// How long each thread spins.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
}

struct CoreJitter {
    cpu: usize,
    gaps: Histogram<u64>,
    stalled: Duration,
    over_100us: u64,
    over_1ms: u64,
}

fn spin(cpu: core_affinity::CoreId, run: Duration) -> CoreJitter {
    core_affinity::set_for_current(cpu);
    let mut gaps = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("bounds");
    let (mut stalled, mut over_100us, mut over_1ms) = (Duration::ZERO, 0, 0);
    let start = Instant::now();
    let mut last = start;
    while last - start < run {
        let now = Instant::now();
        let gap = now - last;
        // Gaps under a microsecond are the loop itself, not an interruption.
        if gap > Duration::from_micros(1) {
            gaps.saturating_record(gap.as_nanos() as u64);
            stalled += gap;
            over_100us += u64::from(gap > Duration::from_micros(100));
            over_1ms += u64::from(gap > Duration::from_millis(1));
        }
        last = now;
    }
    CoreJitter {
        cpu: cpu.id,
        gaps,
        stalled,
        over_100us,
        over_1ms,
    }
}

fn main() {
    let args = Args::parse();
    let run = Duration::from_secs(args.seconds);
    let cpus = core_affinity::get_core_ids().unwrap_or_default();
    let threads: Vec<_> = cpus
        .into_iter()
        .map(|c| std::thread::spawn(move || spin(c, run)))
        .collect();
    println!(
        "jitter: gaps > 1 us seen by a thread spinning on each CPU for {} s",
        args.seconds
    );
    for t in threads {
        let j = t.join().expect("spin thread");
        println!(
            "cpu{}: {} gaps, >100us {}, >1ms {}, max {:.1} ms, not running {:.3}% of the time",
            j.cpu,
            j.gaps.len(),
            j.over_100us,
            j.over_1ms,
            j.gaps.max() as f64 / 1e6,
            100.0 * j.stalled.as_secs_f64() / run.as_secs_f64()
        );
    }
}
