//! The checkpoint history of a job: one JSON line per event in `<dir>/history.jsonl`
//! (triggered, complete, failed), written by the coordinator's housekeeping thread and
//! read by `rill checkpoints`. Manifests say which checkpoints are complete; the history
//! also says what failed and why, and how long each part took.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::protocol::{PartitionStats, TriggerKind};

/// Where a checkpoint stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// Triggered, not yet complete or failed.
    InProgress,
    /// Its manifest is published.
    Complete,
    /// Aborted; `failure` says why.
    Failed,
}

/// One line of the history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// The checkpoint id.
    pub id: u64,
    /// Why it was taken.
    pub kind: TriggerKind,
    /// Where it stands (as of this line).
    pub state: State,
    /// Trigger time, ms since the Unix epoch.
    pub triggered_unix_ms: u64,
    /// Trigger to completion (or failure), ms.
    pub duration_ms: f64,
    /// Longest time from the trigger to a core receiving it, ms.
    pub start_delay_ms: f64,
    /// Longest barrier alignment at any operator, ms.
    pub alignment_ms: f64,
    /// Longest synchronous part (freezing key groups at the barrier) on any core, ms.
    pub sync_ms: f64,
    /// Longest archiving of frozen key groups after the barrier (wall-clock time inside
    /// the slices between rounds of the core's loop; part of the asynchronous part) on
    /// any core, ms.
    #[serde(default)]
    pub archive_ms: f64,
    /// Longest asynchronous part (archiving, log append and fsync) on any core, ms.
    pub async_ms: f64,
    /// Bytes of every record the checkpoint references (its full size).
    pub bytes_full: u64,
    /// Bytes written for this checkpoint (its incremental size).
    pub bytes_incremental: u64,
    /// Records persisted as channel state.
    pub channel_records: u64,
    /// Publishing after the last ack, ms: the local manifest (its fsyncs) and, with an
    /// `s3://` dir, the upload of the log bytes and the manifest. The checkpoint counts
    /// as complete after it (`duration_ms` ends at the last ack).
    #[serde(default)]
    pub publish_ms: f64,
    /// Log bytes sent to the object store for it (0 with a local dir).
    #[serde(default)]
    pub uploaded_bytes: u64,
    /// A job of several processes: from this process's manifest in the store to the
    /// job's global manifest for the checkpoint, ms (part of `publish_ms`; the wait for
    /// the slowest process and the global commit). 0 for a job of one process.
    #[serde(default)]
    pub global_ms: f64,
    /// Why it failed.
    pub failure: Option<String>,
    /// Per participant (core index, stats).
    pub partitions: Vec<(usize, PartitionStats)>,
}

impl Entry {
    /// A fresh entry for a checkpoint just triggered.
    pub fn triggered(id: u64, kind: TriggerKind) -> Self {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Self {
            id,
            kind,
            state: State::InProgress,
            triggered_unix_ms: now,
            duration_ms: 0.0,
            start_delay_ms: 0.0,
            alignment_ms: 0.0,
            sync_ms: 0.0,
            archive_ms: 0.0,
            async_ms: 0.0,
            publish_ms: 0.0,
            uploaded_bytes: 0,
            global_ms: 0.0,
            bytes_full: 0,
            bytes_incremental: 0,
            channel_records: 0,
            failure: None,
            partitions: Vec::new(),
        }
    }
}

/// The history file of checkpoint directory `dir`.
pub fn path(dir: &Path) -> PathBuf {
    dir.join("history.jsonl")
}

/// Appends `e` as one line (no fsync: the history is for people, manifests are the truth).
pub fn append(dir: &Path, e: &Entry) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path(dir))?;
    let mut line = serde_json::to_vec(e).map_err(std::io::Error::other)?;
    line.push(b'\n');
    f.write_all(&line)
}

/// Every checkpoint's latest entry, by id. Lines that do not parse (a torn last line
/// after a crash) are skipped.
pub fn read(dir: &Path) -> std::io::Result<Vec<Entry>> {
    let text = match std::fs::read_to_string(path(dir)) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut by_id: std::collections::BTreeMap<u64, Entry> = std::collections::BTreeMap::new();
    for line in text.lines() {
        if let Ok(e) = serde_json::from_str::<Entry>(line) {
            by_id.insert(e.id, e);
        }
    }
    Ok(by_id.into_values().collect())
}

/// Most checkpoints the history keeps when it is compacted.
pub const KEEP: usize = 1000;

/// Rewrites the history with the latest line of the newest `KEEP` checkpoints when it has
/// grown past `4 × KEEP` lines (a job start does this; a running job only appends).
pub fn compact(dir: &Path) -> std::io::Result<()> {
    let p = path(dir);
    let lines = match std::fs::read_to_string(&p) {
        Ok(t) => t.lines().count(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if lines <= 4 * KEEP {
        return Ok(());
    }
    let all = read(dir)?;
    let keep = &all[all.len().saturating_sub(KEEP)..];
    let tmp = dir.join("history.jsonl.tmp");
    let mut out = Vec::new();
    for e in keep {
        out.extend(serde_json::to_vec(e).map_err(std::io::Error::other)?);
        out.push(b'\n');
    }
    std::fs::write(&tmp, out)?;
    std::fs::rename(&tmp, &p)
}

/// The id the next checkpoint of a job gets: one past every id in the history and in
/// the manifests.
pub fn next_id(dir: &Path) -> u64 {
    let from_history = read(dir)
        .ok()
        .and_then(|v| v.last().map(|e| e.id))
        .unwrap_or(0);
    let from_manifests = rill_storage::layout::list_manifests(dir)
        .ok()
        .and_then(|v| v.last().map(|c| c.0))
        .unwrap_or(0);
    from_history.max(from_manifests) + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latest_line_per_checkpoint_wins_and_torn_lines_are_skipped() {
        let d = tempfile::tempdir().unwrap();
        let mut e = Entry::triggered(1, TriggerKind::Periodic);
        append(d.path(), &e).unwrap();
        e.state = State::Complete;
        append(d.path(), &e).unwrap();
        let f = Entry::triggered(2, TriggerKind::Savepoint);
        append(d.path(), &f).unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(path(d.path()))
            .unwrap()
            .write_all(b"{\"id\": 3, \"ki")
            .unwrap();
        let all = read(d.path()).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].state, State::Complete);
        assert_eq!(all[1].kind, TriggerKind::Savepoint);
        assert_eq!(next_id(d.path()), 3);
    }

    #[test]
    fn compaction_keeps_the_newest_checkpoints_and_their_latest_state() {
        let d = tempfile::tempdir().unwrap();
        for id in 1..=(KEEP as u64 + 1000) {
            let mut e = Entry::triggered(id, TriggerKind::Periodic);
            append(d.path(), &e).unwrap();
            e.state = State::Complete;
            append(d.path(), &e).unwrap();
            append(d.path(), &e).unwrap();
        }
        compact(d.path()).unwrap();
        let all = read(d.path()).unwrap();
        assert_eq!(all.len(), KEEP);
        assert_eq!(all[0].id, 1001);
        assert!(all.iter().all(|e| e.state == State::Complete));
        let lines = std::fs::read_to_string(path(d.path()))
            .unwrap()
            .lines()
            .count();
        assert_eq!(lines, KEEP);
        assert_eq!(next_id(d.path()), KEEP as u64 + 1001);
    }
}
