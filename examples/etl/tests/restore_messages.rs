//! What `rill run` says when the checkpoint directory does not hold what the checkpoint
//! history says it should: a deleted newest manifest, every manifest deleted, the whole
//! directory gone. The run names what was expected (the newest complete checkpoint in
//! `history.jsonl`), what it found, and what it starts from; a job whose last run left
//! checkpoints behind refuses to start over silently when the directory is gone.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;
use common::{committed, cpus, job_dir, rill, text, write_input, Reference};

/// A job directory for the etl job on up to two CPUs, checkpointing every 20 ms over an
/// input of `n` lines; returns the output it must commit.
fn job(dir: &Path, n: usize) -> Reference {
    job_dir(
        dir,
        &cpus(),
        "[checkpoint]\ninterval_ms = 20\nretained = 3\n",
    );
    write_input(&dir.join("input.jsonl"), n, 13).0
}

fn run(dir: &Path, args: &[&str]) -> Output {
    Command::new(rill())
        .arg("run")
        .arg(dir)
        .args(args)
        .output()
        .expect("start rill")
}

/// Runs the job to the end once; returns the checkpoint directory and the newest
/// checkpoint the history lists as complete.
fn first_run(dir: &Path) -> (PathBuf, u64) {
    let out = run(dir, &[]);
    assert!(out.status.success(), "{}", text(&out));
    let root = dir.join("checkpoints");
    let newest = rill_engine::checkpoint::history::read(&root)
        .unwrap()
        .iter()
        .filter(|e| e.state == rill_engine::checkpoint::history::State::Complete)
        .map(|e| e.id)
        .max()
        .expect("the first run completed checkpoints");
    let manifests = rill_storage::layout::list_manifests(&root).unwrap();
    assert_eq!(manifests.last().map(|c| c.0), Some(newest));
    assert!(manifests.len() >= 2, "retained: {manifests:?}");
    (root, newest)
}

#[test]
fn a_deleted_newest_manifest_is_named_with_the_checkpoint_restored_instead() {
    let dir = tempfile::tempdir().unwrap();
    let want = job(dir.path(), 40_000);
    let (root, newest) = first_run(dir.path());
    let manifests = rill_storage::layout::list_manifests(&root).unwrap();
    let previous = manifests[manifests.len() - 2].0;
    let path = rill_storage::layout::manifest_path(&root, rill_storage::CheckpointId(newest));
    std::fs::remove_file(&path).unwrap();

    let out = run(dir.path(), &[]);
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(
        all.contains(&format!(
            "the checkpoint history lists checkpoint {newest} as complete but its manifest is \
             missing"
        )),
        "{all}"
    );
    assert!(
        all.contains(&format!("restoring from checkpoint {previous}")),
        "{all}"
    );
    assert_eq!(committed(dir.path()), want, "the output after the restore");
}

#[test]
fn with_every_manifest_deleted_the_run_says_it_starts_from_the_beginning() {
    let dir = tempfile::tempdir().unwrap();
    let want = job(dir.path(), 40_000);
    let (root, newest) = first_run(dir.path());
    std::fs::remove_dir_all(rill_storage::layout::manifest_dir(&root)).unwrap();

    let out = run(dir.path(), &[]);
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(
        all.contains(&format!(
            "the checkpoint history lists checkpoint {newest} as complete but its manifest is \
             missing"
        )),
        "{all}"
    );
    assert!(
        all.contains("no checkpoint is usable; starting from the beginning of the input"),
        "{all}"
    );
    assert_eq!(committed(dir.path()), want, "the output of the fresh start");
}

#[test]
fn a_missing_checkpoint_directory_after_a_run_that_left_checkpoints_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let want = job(dir.path(), 40_000);
    let (root, newest) = first_run(dir.path());
    let before = committed(dir.path());
    std::fs::remove_dir_all(&root).unwrap();

    let out = run(dir.path(), &[]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(
        all.contains(&format!(
            "the checkpoint directory {} does not exist or is empty",
            root.display()
        )),
        "{all}"
    );
    assert!(
        all.contains(&format!("left checkpoint {newest} complete")),
        "{all}"
    );
    assert!(all.contains("--fresh"), "{all}");
    assert_eq!(
        committed(dir.path()),
        before,
        "the refused run left the committed output alone"
    );

    // The refused run kept what the last real run left: a second try refuses too.
    let out = run(dir.path(), &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));

    // Starting over is one explicit flag away.
    let out = run(dir.path(), &["--fresh"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(committed(dir.path()), want);
}
