//! Checkpoints in S3 (`[checkpoint] dir = "s3://..."`), against a real SeaweedFS on
//! loopback: the etl job, run by its real binary, SIGKILLed at seeded random moments with
//! its local log directory deleted after every kill, restores each time from what is in
//! the store and commits exactly the uninterrupted output. `RILL_CRASH_SEED` replays a run.

use std::path::Path;

use rand::SeedableRng;

mod common;
use common::{committed, cpus, job_dir, rill, text, write_input};
use rill_testkit::crash::{completed_in, run_with_kills_in, seed, Runs};
use rill_testkit::dead_letters;
use rill_testkit::S3;

const LINES: usize = 300_000;

fn log_dir(dir: &Path) -> std::path::PathBuf {
    dir.join(".rill").join("checkpoint-log")
}

#[test]
fn killed_with_its_local_log_deleted_the_job_restores_from_s3_exactly_once() {
    let seed = seed();
    eprintln!("RILL_CRASH_SEED={seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let s3 = S3::start();
    let dir = tempfile::tempdir().unwrap();
    let (reference, bad) = write_input(&dir.path().join("input.jsonl"), LINES, seed);
    job_dir(
        dir.path(),
        &cpus(),
        &format!(
            "[checkpoint]\ninterval_ms = 50\ndir = \"{}\"\n",
            s3.url("jobs/etl")
        ),
    );
    let local = log_dir(dir.path());
    let runs = Runs {
        log_dir: local.clone(),
        env: s3.env(),
        after_kill: &|| {
            // The machine is gone: only the store is left.
            std::fs::remove_dir_all(&local).unwrap();
        },
    };
    let kills = 3;
    let killed = run_with_kills_in(Path::new(rill()), dir.path(), kills, &mut rng, &runs);
    eprintln!("killed {killed} times");
    assert!(killed >= 1, "no run was killed mid-way (seed {seed})");
    // Every run after a kill started from a checkpoint it downloaded.
    for attempt in 1..=killed {
        let log =
            std::fs::read_to_string(dir.path().join(format!("stderr-{attempt}.log"))).unwrap();
        assert!(
            log.contains("downloaded checkpoint") && log.contains("restoring checkpoint"),
            "run {attempt} did not restore from S3 (seed {seed}):\n{log}"
        );
    }
    let got = committed(dir.path());
    assert_eq!(got.len(), reference.len(), "users (seed {seed})");
    for (user, want) in &reference {
        assert_eq!(got.get(user), Some(want), "rows of {user} (seed {seed})");
    }
    let dead = dead_letters(dir.path());
    assert_eq!(dead, bad, "dead letters (seed {seed})");

    // `checkpoints` lists what is in the store as complete.
    let out = std::process::Command::new(rill())
        .arg("checkpoints")
        .arg(dir.path())
        .envs(s3.env())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(
        listing.contains(&format!("checkpoints in {}", s3.url("jobs/etl")))
            && listing.contains(" complete "),
        "{listing}"
    );
    // Retention (3 kept) reaches the store for what the last run uploaded: its
    // checkpoints are the ones after the one it restored.
    let last = std::fs::read_to_string(dir.path().join(format!("stderr-{killed}.log"))).unwrap();
    let restored: u64 = last
        .split("restoring checkpoint ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("the last run says which checkpoint it restored");
    let in_store = s3.remote("jobs/etl").unwrap().list_manifests().unwrap();
    let of_last_run = in_store.iter().filter(|c| c.0 > restored).count();
    assert!(
        (1..=3).contains(&of_last_run),
        "{of_last_run} checkpoints of the last run in the store (restored {restored}): \
         {in_store:?}\n{listing}"
    );
}

/// The checkpoint ids of the committed output files (`part-<p>-<n>.csv`).
fn committed_ids(dir: &Path) -> std::collections::BTreeSet<u64> {
    rill_engine::connectors::committed_files(&dir.join("out"))
        .unwrap()
        .iter()
        .filter_map(|f| {
            let name = f.file_stem()?.to_str()?;
            name.rsplit_once('-')?.1.parse().ok()
        })
        .collect()
}

#[test]
fn a_checkpoint_not_in_the_store_is_not_complete_and_commits_nothing() {
    let s3 = S3::start();
    let dir = tempfile::tempdir().unwrap();
    write_input(&dir.path().join("input.jsonl"), LINES, 7);
    let url = s3.url("jobs/hung");
    job_dir(
        dir.path(),
        &cpus(),
        &format!(
            "[checkpoint]\ninterval_ms = 50\ndir = \"{url}\"\n[restart]\nstrategy = \"none\"\n"
        ),
    );
    let local = log_dir(dir.path());
    let log = dir.path().join("rill-stderr.log");
    let mut child = std::process::Command::new(rill())
        .arg("run")
        .arg(dir.path())
        .envs(s3.env())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    while completed_in(&local) == 0 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the job ended before its first checkpoint:\n{}",
            std::fs::read_to_string(&log).unwrap()
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    // The store stops answering: the next upload times out and its checkpoint fails.
    s3.pause();
    let status = child.wait().unwrap();
    s3.resume();
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert!(
        !status.success(),
        "the job should fail (no restarts):\n{stderr}"
    );
    let in_store: std::collections::BTreeSet<u64> = s3
        .remote("jobs/hung")
        .unwrap()
        .list_manifests()
        .unwrap()
        .iter()
        .map(|c| c.0)
        .collect();
    let history = rill_engine::checkpoint::history::read(&local).unwrap();
    let failed: Vec<_> = history
        .iter()
        .filter(|e| e.state == rill_engine::checkpoint::history::State::Failed)
        .collect();
    assert!(
        failed
            .iter()
            .any(|e| e.failure.as_deref().is_some_and(|f| f.contains(&url))),
        "no checkpoint failed naming {url}: {history:?}\n{stderr}"
    );
    for e in &history {
        if e.state == rill_engine::checkpoint::history::State::Complete {
            assert!(
                in_store.contains(&e.id),
                "checkpoint {} complete but not in the store",
                e.id
            );
        }
    }
    for e in &failed {
        assert!(!in_store.contains(&e.id));
        assert!(
            !rill_storage::layout::manifest_path(&local, rill_storage::CheckpointId(e.id)).exists(),
            "failed checkpoint {} left its local manifest",
            e.id
        );
    }
    let committed = committed_ids(dir.path());
    assert!(!committed.is_empty());
    assert!(
        committed.is_subset(&in_store),
        "output committed for checkpoints {committed:?}, in the store: {in_store:?}"
    );
}
