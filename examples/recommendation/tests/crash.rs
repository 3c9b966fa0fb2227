//! The exactly-once crash test: the recommendation job, run by its real binary with
//! checkpoints every 50 ms, SIGKILLed at seeded random moments (at least 5 times) and
//! restarted until it finishes on its own; then the committed output must equal the
//! reference of an uninterrupted run row for row (0 lost, 0 duplicated) and the dead
//! letters must be the malformed lines, once each. Kills land while lookups are in
//! flight: their inputs are in the async operator's snapshot and re-issued on restore.
//!
//! Every run draws a new seed and prints it; `RILL_CRASH_SEED=<seed>` replays it. A run
//! is given up on only when it stops making progress (no checkpoint completes for
//! `STUCK`), never after a fixed wall-clock budget: a loaded machine makes the work
//! slower, not different.
//!
//! The kill harness (`run_with_kills`, `STUCK`, the seed) is `rill_testkit::crash`.

use std::path::Path;

use rand::SeedableRng;
use rill_testkit::crash::{run_with_kills, seed};

mod common;
use common::{assert_rows_eq, bin, committed, cpus, job_dir, reference, simulated};
use rill_testkit::dead_letters;

fn no_leftovers(dir: &Path) {
    for e in std::fs::read_dir(dir.join("out")).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().to_string();
        assert!(
            name.ends_with(".csv") && !name.starts_with('.'),
            "in-progress or pending file left in the output: {name}"
        );
    }
}

/// Enough input that the job completes a few dozen 50 ms checkpoints in a debug build,
/// so that six kills land before its end.
const LINES: usize = 120_000;

#[test]
fn killed_at_random_moments_the_job_commits_exactly_the_uninterrupted_output() {
    let seed = seed();
    eprintln!("RILL_CRASH_SEED={seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let input = common::write_input(
        &dir.path().join("input.jsonl"),
        LINES,
        seed,
        2_000,
        3_000,
        1,
        false,
    );
    let k = common::Knobs::default();
    // Lookups of 100–900 µs, up to 128 in flight per partition: every barrier finds
    // requests in flight, which go into the checkpoint. The timeout is far above any
    // delay: the shared test machine has stalled whole processes for 8 s, and a timed-out
    // lookup (default 10 s) fails the run.
    job_dir(
        dir.path(),
        &cpus(),
        &k.params(),
        "[checkpoint]\ninterval_ms = 50\n[async]\ncapacity = 128\ntimeout_ms = 120000\n\
         [lookup]\ndelay_us = 100\ndistribution = \"uniform\"\ndelay_max_us = 900\n",
    );
    let killed = run_with_kills(Path::new(bin()), dir.path(), 6, &mut rng);
    eprintln!("killed {killed} times");
    assert!(
        killed >= 5,
        "only {killed} runs were killed mid-way (seed {seed}): make the input larger"
    );
    let want = reference(&input.events, &k, &|i| simulated(i, k.categories));
    assert_rows_eq(&committed(dir.path()), &want, &format!("seed {seed}"));
    assert_eq!(
        dead_letters(dir.path()),
        input.bad,
        "dead letters (seed {seed})"
    );
    no_leftovers(dir.path());
    let history = rill_engine::checkpoint::history::read(&dir.path().join("checkpoints")).unwrap();
    assert!(history.len() >= 6, "checkpoints: {}", history.len());
}
