//! What `rill run` says when the checkpoint directory does not hold what the checkpoint
//! history says it should: a deleted newest manifest, every manifest deleted, the whole
//! directory gone. The run names what was expected (the newest complete checkpoint in
//! `history.jsonl`), what it found, and what it starts from; a job whose last run left
//! checkpoints behind refuses to start over silently when the directory is gone.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn rill() -> &'static str {
    env!("CARGO_BIN_EXE_rill")
}

/// Each user's (count, running total) rows, in order.
type Rows = BTreeMap<String, Vec<(u64, i64)>>;

/// A job directory for the etl job on up to two CPUs, checkpointing every 20 ms over an
/// input of `n` lines; returns the reference output.
fn job(dir: &Path, n: usize) -> Rows {
    std::fs::create_dir_all(dir.join("cores")).unwrap();
    let mut cpus = rill_engine::config::available_cpus();
    cpus.truncate(2);
    for c in cpus {
        std::fs::write(dir.join("cores").join(format!("{c}.toml")), "").unwrap();
    }
    std::fs::write(
        dir.join("job.toml"),
        "pipeline = \"etl\"\n[checkpoint]\ninterval_ms = 20\nretained = 3\n",
    )
    .unwrap();
    let mut f = std::io::BufWriter::new(std::fs::File::create(dir.join("input.jsonl")).unwrap());
    let mut want: Rows = BTreeMap::new();
    let mut state: BTreeMap<String, (u64, i64)> = BTreeMap::new();
    for i in 0..n {
        let user = format!("u{}", (i * 7919) % 500);
        let amount = (i % 97) as i64 + 1;
        let s = state.entry(user.clone()).or_default();
        s.0 += 1;
        s.1 += amount;
        want.entry(user.clone()).or_default().push(*s);
        writeln!(
            f,
            "{{\"ts\": {i}, \"user\": \"{user}\", \"amount_cents\": {amount}}}"
        )
        .unwrap();
    }
    f.flush().unwrap();
    want
}

fn committed(dir: &Path) -> Rows {
    let mut got: Rows = BTreeMap::new();
    for f in rill_engine::connectors::committed_files(&dir.join("out")).unwrap() {
        for line in std::fs::read_to_string(&f).unwrap().lines() {
            let (rest, total) = line.rsplit_once(',').unwrap();
            let (user, count) = rest.rsplit_once(',').unwrap();
            got.entry(user.to_string())
                .or_default()
                .push((count.parse().unwrap(), total.parse().unwrap()));
        }
    }
    got
}

fn run(dir: &Path, args: &[&str]) -> Output {
    Command::new(rill())
        .arg("run")
        .arg(dir)
        .args(args)
        .output()
        .expect("start rill")
}

fn text(out: &Output) -> String {
    format!(
        "exit {}\n--- stderr\n{}\n--- stdout\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    )
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
