//! `checkpoint`: what a checkpoint's barrier costs a core with keyed state, and the
//! archiving that follows it off the record path (`rill_engine::state`, copy-on-write
//! key groups).
//!
//! One keyed partition owning all 128 key groups of a `ValueState<u64, u64>` holding
//! 10k or 1M keys (a checkpoint was taken once before timing, so incremental tables have
//! their chains). Between two checkpoints 1% or 100% of the keys are updated (untimed;
//! scattered order). Then, per checkpoint:
//!
//! * `checkpoint/barrier/{full,incremental}/{10k,1M}/{1pct,100pct}` — the barrier alone,
//!   what the core pays before it forwards the barrier: every key group of the table is
//!   frozen (`SnapshotTable::snapshot`). The archiving then runs untimed.
//! * `checkpoint/barrier_and_archive/…` — the barrier followed at once by archiving every
//!   frozen group (`FrozenGroup::archive`: collect the entries, sort, rkyv). This is the
//!   work the barrier did before copy-on-write (every group archived before the barrier
//!   went on), and the work the core now spreads over slices after it.
//!
//! `full`: plain tables, every checkpoint archives every key; `incremental`: tables that
//! track changed keys, a checkpoint archives deltas (chains up to 16). After the groups it
//! prints, per case, the archive bytes and the median and longest single key group's
//! archiving in the last checkpoint (the slices the core's writer task needs,
//! `checkpoint.archive_slice_us` aside; on a busy machine the longest includes preemption).
//!
//! The untimed updates cost far more than a barrier, so the criterion settings here keep
//! the iteration count low (flat sampling, 10 samples, no warm-up to speak of, and at 1M
//! keys one checkpoint per sample); read the means, not the confidence bands. Excludes appending to the log (`log`) and the checkpoint
//! bookkeeping between cores.
//!
//! Run: `cargo bench -p rill-perf --bench checkpoint`.

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
use rill_engine::ids::KeyGroup;
use rill_engine::keys::key_group_of;
use rill_engine::state::{KeyCtx, StateInit, ValueState};
use std::hint::black_box;
use std::time::{Duration, Instant};

const KEY_GROUPS: u16 = 128;
const MAX_CHAIN: usize = 16;

/// A partition's state of `n` keys, with one checkpoint taken.
struct Case {
    init: StateInit<u64>,
    count: ValueState<u64, u64>,
    keys: Vec<(u64, KeyGroup)>,
    next_id: u64,
    cursor: usize,
}

impl Case {
    fn new(n: u64, incremental: bool) -> Self {
        let mut init = StateInit::<u64>::with_incremental(KEY_GROUPS, incremental);
        let count = init.value::<u64>("count");
        let keys: Vec<(u64, KeyGroup)> =
            (0..n).map(|k| (k, key_group_of(&k, KEY_GROUPS))).collect();
        for (k, kg) in &keys {
            count.set(&KeyCtx::new(k, *kg), 0);
        }
        let mut c = Self {
            init,
            count,
            keys,
            next_id: 1,
            cursor: 0,
        };
        c.barrier().archive();
        c
    }

    /// Updates `touched` keys, in a scattered order continuing where the last call ended.
    fn touch(&mut self, touched: usize) {
        let n = self.keys.len();
        for _ in 0..touched {
            let (k, kg) = &self.keys[self.cursor % n];
            self.cursor = self.cursor.wrapping_add(7919);
            self.count.update(&KeyCtx::new(k, *kg), || 0, |c| *c += 1);
        }
    }

    fn barrier(&mut self) -> rill_engine::state::BenchBarrier {
        let id = self.next_id;
        self.next_id += 1;
        self.init.bench_barrier(id, MAX_CHAIN)
    }
}

fn checkpoint(c: &mut Criterion) {
    let mut notes = Vec::new();
    for (what, archive_at_barrier) in [("barrier", false), ("barrier_and_archive", true)] {
        let mut g = c.benchmark_group(format!("checkpoint/{what}"));
        g.sampling_mode(SamplingMode::Flat)
            .sample_size(10)
            .warm_up_time(Duration::from_nanos(1))
            .throughput(Throughput::Elements(1));
        for (mode, incremental) in [("full", false), ("incremental", true)] {
            for (size, n) in [("10k", 10_000u64), ("1M", 1_000_000)] {
                let mut case = Case::new(n, incremental);
                // Criterion sizes the iterations by the timed part; the untimed updates
                // of 1M keys would make that hours: one barrier per sample there.
                g.measurement_time(if n >= 1_000_000 {
                    Duration::from_nanos(1)
                } else {
                    Duration::from_millis(20)
                });
                for (pct, touched) in [("1pct", n as usize / 100), ("100pct", n as usize)] {
                    let mut groups: Vec<Duration> = Vec::new();
                    let mut bytes = 0usize;
                    g.bench_function(
                        BenchmarkId::from_parameter(format!("{mode}/{size}/{pct}")),
                        |b| {
                            b.iter_custom(|iters| {
                                let mut timed = Duration::ZERO;
                                for _ in 0..iters {
                                    case.touch(touched);
                                    let t0 = Instant::now();
                                    let frozen = black_box(case.barrier());
                                    if archive_at_barrier {
                                        let archived = frozen.archive();
                                        timed += t0.elapsed();
                                        (bytes, groups) = archived;
                                    } else {
                                        timed += t0.elapsed();
                                        assert!(frozen.frozen() > 0, "a barrier froze no group");
                                        (bytes, groups) = frozen.archive();
                                    }
                                }
                                timed
                            });
                        },
                    );
                    let keys = case.count.with_table(|t| t.len());
                    assert_eq!(keys as u64, n, "keys appeared or vanished");
                    assert_eq!(
                        case.count.with_table(|t| t.frozen_groups()),
                        0,
                        "a key group stayed frozen"
                    );
                    if !archive_at_barrier {
                        groups.sort_unstable();
                        let us = |d: Option<&Duration>| d.map_or(0.0, |d| d.as_secs_f64() * 1e6);
                        notes.push(format!(
                            "{mode}/{size}/{pct}: {bytes} archive bytes per checkpoint, {} key \
                             groups archived, each {:.1} us median, {:.1} us longest",
                            groups.len(),
                            us(groups.get(groups.len() / 2)),
                            us(groups.last())
                        ));
                    }
                }
            }
        }
        g.finish();
    }
    for n in notes {
        println!("checkpoint: {n}");
    }
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    checkpoint(&mut c);
    c.final_summary();
}
