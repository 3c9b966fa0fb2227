//! A source partition that reads several splits checkpoints a position made of several
//! offsets (`SourcePartition::position`), a restore hands it back (`seek_position`),
//! and every completed checkpoint is reported to the partition with what it recorded
//! (`checkpoint_complete`). Written as a user crate would write it: only public items.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use rill_engine::checkpoint::restore::StartFrom;
use rill_engine::config::{available_cpus, CoreConfig, JobConfig, JobSpec};
use rill_engine::connectors::FileSink;
use rill_engine::dataflow::{Out, PartitionContext, Pipeline, Source, SourcePartition, SourcePoll};
use rill_engine::ids::CheckpointId;
use rill_engine::runtime::{supervise, Control};
use rill_engine::{EngineError, Result};

const SPLITS: usize = 3;
const PER_SPLIT: u64 = 20_000;

/// Every partition reads `SPLITS` sequences `0..PER_SPLIT`, round robin; the record of
/// sequence `s` of partition `p` at `i` is `(p * SPLITS + s) * 1_000_000 + i`.
struct Splits;

struct SplitsPartition {
    partition: u64,
    next: [u64; SPLITS],
    turn: usize,
}

/// (partition, checkpoint, position) of every `checkpoint_complete`.
static COMPLETED: Mutex<Vec<(u64, u64, [u64; SPLITS])>> = Mutex::new(Vec::new());
/// A restore sought a position past the start.
static SOUGHT_PAST_START: AtomicBool = AtomicBool::new(false);

fn encode(next: &[u64; SPLITS]) -> Vec<u8> {
    next.iter().flat_map(|n| n.to_le_bytes()).collect()
}

fn decode(b: &[u8]) -> Result<[u64; SPLITS]> {
    if b.len() != 8 * SPLITS {
        return Err(EngineError::Graph {
            operator: "splits".into(),
            reason: format!("a position of {} bytes", b.len()),
        });
    }
    let mut next = [0; SPLITS];
    for (n, c) in next.iter_mut().zip(b.chunks_exact(8)) {
        *n = u64::from_le_bytes(c.try_into().expect("8 bytes"));
    }
    Ok(next)
}

impl Source<u64> for Splits {
    fn partition(&self, ctx: &PartitionContext<'_>) -> Result<Box<dyn SourcePartition<u64>>> {
        Ok(Box::new(SplitsPartition {
            partition: u64::from(ctx.partition.0),
            next: [0; SPLITS],
            turn: 0,
        }))
    }
}

impl SourcePartition<u64> for SplitsPartition {
    fn poll(&mut self, _now_ns: u64, max: usize, out: &mut Out<'_, u64>) -> Result<SourcePoll> {
        let mut n = 0;
        while n < max {
            let Some(s) = (0..SPLITS)
                .map(|k| (self.turn + k) % SPLITS)
                .find(|s| self.next[*s] < PER_SPLIT)
            else {
                break;
            };
            let split = self.partition * SPLITS as u64 + s as u64;
            out.emit(split * 1_000_000 + self.next[s]);
            self.next[s] += 1;
            self.turn = (s + 1) % SPLITS;
            n += 1;
        }
        Ok(if n > 0 {
            SourcePoll::Emitted(n)
        } else {
            SourcePoll::Done
        })
    }
    fn offset(&self) -> u64 {
        self.next.iter().sum()
    }
    fn seek(&mut self, _offset: u64) -> Result<()> {
        panic!("a checkpoint with a position restores through seek_position");
    }
    fn position(&self) -> Option<Vec<u8>> {
        Some(encode(&self.next))
    }
    fn seek_position(&mut self, position: &[u8]) -> Result<()> {
        self.next = decode(position)?;
        if self.next.iter().any(|n| *n > 0) {
            SOUGHT_PAST_START.store(true, Ordering::SeqCst);
        }
        Ok(())
    }
    fn checkpoint_complete(&mut self, id: CheckpointId, offset: u64, position: Option<&[u8]>) {
        let next = decode(position.expect("the position reported")).unwrap();
        assert_eq!(
            offset,
            next.iter().sum::<u64>(),
            "the offset reported with it"
        );
        COMPLETED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((self.partition, id.0, next));
    }
}

fn spec(dir: &Path, job: &str) -> JobSpec {
    let job: JobConfig = toml::from_str(job).unwrap();
    let cpus: Vec<usize> = available_cpus().into_iter().take(2).collect();
    JobSpec::with_cores(dir, job, &cpus, CoreConfig::default())
}

#[test]
fn a_multi_offset_position_restores_exactly_once_and_completions_reach_the_source() {
    static ARMED: AtomicBool = AtomicBool::new(true);
    static MAPPED: AtomicU64 = AtomicU64::new(0);
    let dir = tempfile::tempdir().unwrap();
    let spec = spec(
        dir.path(),
        "[checkpoint]\ninterval_ms = 20\n[restart]\nstrategy = \"fixed-delay\"\nattempts = 2\ndelay_ms = 10\n",
    );
    let total = 2 * SPLITS as u64 * PER_SPLIT;
    let build = move |spec: &JobSpec| {
        let p = Pipeline::new(spec.job.max_key_groups);
        p.source("splits", Splits)
            .parallelism(2)
            .map("maybe-fail", move |v: u64| {
                let m = MAPPED.fetch_add(1, Ordering::SeqCst);
                if m % 1_000 == 0 {
                    // Slow enough for checkpoints between the records.
                    std::thread::sleep(Duration::from_millis(1));
                }
                // Half-way through, and after a checkpoint completed.
                if m >= total / 2
                    && !COMPLETED
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .is_empty()
                    && ARMED.swap(false, Ordering::SeqCst)
                {
                    panic!("injected failure at {v}");
                }
                v.to_string()
            })
            .sink("out", FileSink::lines("out"));
        p.build(spec.default_parallelism())
    };
    let report = supervise(
        &spec,
        &build,
        StartFrom::Newest,
        &Control::default(),
        |_| {},
    )
    .unwrap();
    assert_eq!(report.restarts, 1, "the injected failure restarted the job");
    assert!(
        SOUGHT_PAST_START.load(Ordering::SeqCst),
        "the restore sought a position past the start"
    );
    // Exactly once: every record of every split once.
    let mut got: BTreeMap<u64, u32> = BTreeMap::new();
    for f in rill_engine::connectors::committed_files(&dir.path().join("out")).unwrap() {
        for l in std::fs::read_to_string(f).unwrap().lines() {
            *got.entry(l.parse().unwrap()).or_default() += 1;
        }
    }
    let want: BTreeMap<u64, u32> = (0..2 * SPLITS as u64)
        .flat_map(|s| (0..PER_SPLIT).map(move |i| (s * 1_000_000 + i, 1)))
        .collect();
    assert_eq!(got.len(), want.len(), "distinct records");
    assert_eq!(got, want);
    // Completions: per partition in checkpoint order, positions never going back, and
    // the last one (the final checkpoint) at the end of every split.
    let completed = COMPLETED.lock().unwrap_or_else(|e| e.into_inner()).clone();
    for p in 0..2 {
        let mine: Vec<_> = completed.iter().filter(|c| c.0 == p).collect();
        assert!(mine.len() >= 2, "partition {p}: {mine:?}");
        for w in mine.windows(2) {
            if w[1].1 > w[0].1 {
                assert!(
                    (0..SPLITS).all(|s| w[1].2[s] >= w[0].2[s]),
                    "partition {p}: {w:?}"
                );
            }
        }
        assert_eq!(mine.last().unwrap().2, [PER_SPLIT; SPLITS], "partition {p}");
    }
}
