//! `windows`: event-time window aggregation per record (`dataflow::windows`), tumbling and
//! sliding, with an incremental count.
//!
//! Isolates one window operator partition (128 key groups) driven as its chain drives it:
//! in-order records of 1024 keys, 16 records per event-time millisecond, and a watermark
//! one millisecond behind every 256 records. Per record that is the pane update in keyed
//! map state and the event-time timer registration; amortised over the records, the
//! firing at watermarks (timers popped, panes merged, one result per key and window
//! emitted, state purged). Key groups are precomputed (done at `key_by`). After the run
//! (untimed) the input ends, every remaining window fires, and the counts emitted must
//! add up to each record counted once per window it belongs to, with no late records.
//! Excludes the exchange in front and whatever consumes the results. Element throughput
//! is records/s. Ids:
//!
//! * `windows/per_record/tumbling_1s_count` — 1 s windows: one window and one pane per
//!   record.
//! * `windows/per_record/sliding_1s_250ms_count` — 1 s windows every 250 ms: four windows
//!   over 250 ms panes per record.
//!
//! Driven through `rill_engine::dataflow::bench::WindowDriver`, which builds the real
//! operator (doc-hidden, for benchmarks only).
//!
//! Run: `cargo bench -p rill-perf --bench windows -- --warm-up-time 1 --measurement-time 3`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rill_engine::dataflow::bench::WindowDriver;
use rill_engine::dataflow::windows::{Count, WindowOutput, WindowSpec};
use rill_engine::ids::KeyGroup;
use rill_engine::keys::key_group_of;
use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

const KEYS: usize = 1024;
const KEY_GROUPS: u16 = 128;
const RECORDS_PER_MS: u64 = 16;
const WATERMARK_EVERY: u64 = 256;

/// Event time (ms) of record `i`.
fn ts(i: u64) -> u64 {
    i / RECORDS_PER_MS
}

/// How many windows of `size` every `slide` (starting at multiples of `slide` from 0)
/// contain time `t`.
fn windows_containing(t: u64, size: u64, slide: u64) -> u64 {
    (t / slide + 1).min(size / slide)
}

/// Runs `n` records through a fresh operator; returns the time they took.
fn run(keys: &[(u64, KeyGroup)], size_ms: u64, slide_ms: u64, n: u64) -> Duration {
    let spec = if size_ms == slide_ms {
        WindowSpec::tumbling(Duration::from_millis(size_ms))
    } else {
        WindowSpec::sliding(
            Duration::from_millis(size_ms),
            Duration::from_millis(slide_ms),
        )
    };
    let counted = Rc::new(Cell::new(0u64));
    let c = counted.clone();
    let sink = move |o: WindowOutput<u64, u64, (u64, u64)>| match o {
        WindowOutput::Result(r) => c.set(c.get() + r.value),
        WindowOutput::Late(_) => panic!("late records are not emitted here"),
    };
    let mut op = WindowDriver::new(KEY_GROUPS, spec, |v: &(u64, u64)| v.0, Count, sink);
    let start = Instant::now();
    for i in 0..n {
        let (k, kg) = keys[i as usize % KEYS];
        let t = ts(i);
        op.record(k, kg, (t, i));
        if i % WATERMARK_EVERY == WATERMARK_EVERY - 1 && t > 0 {
            op.watermark(t - 1);
        }
    }
    let elapsed = start.elapsed();
    op.end();
    assert_eq!(op.late_records(), 0, "in-order records counted late");
    let expected: u64 = (0..n)
        .map(|i| windows_containing(ts(i), size_ms, slide_ms))
        .sum();
    assert_eq!(counted.get(), expected, "window counts do not add up");
    elapsed
}

fn per_record(c: &mut Criterion) {
    let keys: Vec<(u64, KeyGroup)> = (0..KEYS as u64)
        .map(|k| (k, key_group_of(&k, KEY_GROUPS)))
        .collect();
    let mut g = c.benchmark_group("windows/per_record");
    g.throughput(Throughput::Elements(1));
    for (name, size, slide) in [
        ("tumbling_1s_count", 1000, 1000),
        ("sliding_1s_250ms_count", 1000, 250),
    ] {
        g.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter_custom(|n| run(&keys, size, slide, n))
        });
    }
    g.finish();
}

criterion_group!(windows, per_record);
criterion_main!(windows);
