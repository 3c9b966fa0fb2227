//! The coordinator's shell on the job's first core: feeds the pure `Coordinator` with what
//! the cores say (acks, declines, finished sources) and the clock, and carries out its
//! decisions: triggers and completions go to every core over rings; manifests, retention
//! and the history are written by a housekeeping thread (`Janitor`) so that no core ever
//! waits for an fsync of the coordinator's.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;

use rill_storage::{CheckpointStore, Manifest};

use super::coordinator::{AbortReason, CheckpointKind, Coordinator, Decision};
use super::history::{self, Entry, State};
use super::protocol::{CoreAck, ToCoordinator, ToCore, TriggerKind};
use super::restart::Unfixable;
use super::restore::Metadata;
use crate::error::{storage_unfixable, EngineError, Result};
use crate::ids::CheckpointId;
use crate::ring::{Consumer, Doorbell, Producer};

/// What the housekeeping thread is asked to do.
enum Job {
    Publish {
        manifest: Manifest,
        entry: Entry,
        retained: usize,
        /// The other checkpoints in flight when it was sent: retention keeps what they
        /// may reference (they can complete after this one).
        in_flight: std::collections::BTreeSet<rill_storage::CheckpointId>,
    },
    History(Entry),
    /// A job of several processes: checkpoint `n` failed here (never uploaded); abort it
    /// for the whole job so that the other processes stop waiting for it.
    AbortGlobal(CheckpointId, String),
}

/// A job run as several processes: where the global decisions are and who this is.
pub(crate) struct GlobalArgs {
    /// The job's `s3://bucket/prefix` (each process's part is under its own prefix).
    pub(crate) job_url: String,
    /// This process.
    pub(crate) process: crate::ids::Process,
    /// Process 0 aborts a checkpoint for the whole job when the other processes'
    /// manifests have not all arrived this long after its own (`checkpoint.timeout_ms`).
    pub(crate) timeout: std::time::Duration,
}

/// How often a process waiting for a global decision asks the store.
const GLOBAL_POLL: std::time::Duration = std::time::Duration::from_millis(20);

/// Waits, on the janitor thread, for the job's decision on checkpoint `n` once this
/// process's part is in the store. Process 0 publishes the global manifest as soon as
/// every process's manifest is there (or aborts `n` for the job after `timeout`); the
/// others read the decision. `Ok` once `n` is complete for the job; `Err(why)` when it
/// was aborted or the job is stopping. Store errors are retried (logged).
fn await_global(
    job: &rill_storage::Remote,
    g: &GlobalArgs,
    n: rill_storage::CheckpointId,
    stopping: &AtomicBool,
) -> std::result::Result<(), String> {
    use rill_storage::GlobalOutcome;
    let prefixes = g.process.all_prefixes();
    let started = std::time::Instant::now();
    loop {
        if stopping.load(Ordering::SeqCst) {
            return Err("the job stopped before the checkpoint completed for the job".into());
        }
        let decided = if g.process.index == 0 {
            match job.publish_global(n, &prefixes) {
                Ok(GlobalOutcome::Won | GlobalOutcome::Lost) => Ok(Some(Ok(()))),
                Ok(GlobalOutcome::Aborted(why)) => Ok(Some(Err(why))),
                Ok(GlobalOutcome::Missing(missing)) if started.elapsed() >= g.timeout => {
                    let why = format!(
                        "the manifests of {} were not in the store {} ms after process 0's",
                        missing.join(", "),
                        g.timeout.as_millis()
                    );
                    job.abort_global(n, &why).map(|m| {
                        Some(match m {
                            Some(_) => Ok(()),
                            None => Err(why),
                        })
                    })
                }
                Ok(GlobalOutcome::Missing(_)) => Ok(None),
                Err(e) => Err(e),
            }
        } else {
            job.load_global(n).map(|m| {
                m.map(|m| match m.aborted {
                    None => Ok(()),
                    Some(why) => Err(why),
                })
            })
        };
        match decided {
            Ok(Some(Ok(()))) => return Ok(()),
            Ok(Some(Err(why))) => {
                return Err(format!("checkpoint aborted for the whole job: {why}"))
            }
            Ok(None) => {}
            Err(e) => tracing::warn!("waiting for the global decision on checkpoint {}: {e}", n.0),
        }
        std::thread::sleep(GLOBAL_POLL);
    }
}

/// What it reports back.
pub(crate) enum Done {
    Published(CheckpointId),
    /// A job of several processes: this process's part of the checkpoint is in the store
    /// but the checkpoint was aborted for the job (or the job is stopping).
    GlobalAborted(CheckpointId, String),
    PublishFailed(CheckpointId, String, Option<Unfixable>),
}

/// The housekeeping thread: publishes manifests (tmp, fsync, rename, fsync dir), applies
/// retention and appends history lines, in order.
pub(crate) struct Janitor {
    jobs: Option<mpsc::Sender<Job>>,
    done: Consumer<Done>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Set when the job ends: a wait for a global decision gives up.
    stopping: Arc<AtomicBool>,
}

impl Janitor {
    /// With `remote` (an `s3://bucket/prefix`), each manifest published locally is
    /// uploaded with the log bytes it needs before the checkpoint counts as complete;
    /// a failed upload fails the checkpoint and removes the local manifest.
    ///
    /// With `global` (a job of several processes), a checkpoint counts as complete only
    /// once the job's global manifest for it is in the store (see [`await_global`]).
    pub(crate) fn start(
        dir: PathBuf,
        doorbell: Arc<Doorbell>,
        remote: Option<String>,
        global: Option<GlobalArgs>,
    ) -> Self {
        let (tx, rx) = mpsc::channel::<Job>();
        let (mut done_tx, done) = crate::ring::channel::<Done>(256);
        let stopping = Arc::new(AtomicBool::new(false));
        let stop = stopping.clone();
        let thread = std::thread::Builder::new()
            .name("rill-janitor".into())
            .spawn(move || {
                let store = CheckpointStore::new(&dir);
                // The job's location (global decisions), for a job of several processes.
                let job = global.map(|g| {
                    let r = rill_storage::Remote::open(&g.job_url).map_err(|e| e.to_string());
                    (g, r)
                });
                // The client, or why it could not be set up (then every upload fails).
                let mut remote = remote.map(|url| {
                    rill_storage::Remote::open(&url).map_err(|e| match e {
                        rill_storage::Error::RemoteConfig { problem, .. } => (url, problem),
                        e => (url, e.to_string()),
                    })
                });
                // Whether each checkpoint loads with every record intact, checked once:
                // the ones published here are (their records were acked durable).
                let mut complete: std::collections::HashMap<rill_storage::CheckpointId, bool> =
                    std::collections::HashMap::new();
                while let Ok(next) = rx.recv() {
                    match next {
                        Job::AbortGlobal(id, why) => {
                            if let Some((g, Ok(r))) = &job {
                                let why = format!("process {}: {why}", g.process);
                                match r.abort_global(rill_storage::CheckpointId(id.0), &why) {
                                    Ok(None) => {}
                                    Ok(Some(_)) => tracing::warn!(
                                        "checkpoint {} failed here but had completed for the job",
                                        id.0
                                    ),
                                    Err(e) => tracing::warn!(
                                        "aborting checkpoint {} for the job: {e}",
                                        id.0
                                    ),
                                }
                            }
                        }
                        Job::History(e) => {
                            if let Err(err) = history::append(&dir, &e) {
                                tracing::warn!("checkpoint history: {err}");
                            }
                        }
                        Job::Publish {
                            manifest,
                            mut entry,
                            retained,
                            in_flight,
                        } => {
                            let id = CheckpointId(manifest.checkpoint.0);
                            let started = std::time::Instant::now();
                            let published = store.publish(&manifest).and_then(|()| {
                                let Some(r) = remote.as_mut() else {
                                    return Ok(());
                                };
                                let uploaded = match r {
                                    Ok(r) => r
                                        .upload_checkpoint(&dir, &manifest)
                                        .map(|sent| entry.uploaded_bytes = sent),
                                    Err((url, problem)) => Err(rill_storage::Error::RemoteConfig {
                                        url: url.clone(),
                                        problem: problem.clone(),
                                    }),
                                };
                                let uploaded = uploaded.and_then(|()| match &job {
                                    None => Ok(()),
                                    Some((_, Err(problem))) => {
                                        Err(rill_storage::Error::RemoteConfig {
                                            url: "the job's s3:// location".into(),
                                            problem: problem.clone(),
                                        })
                                    }
                                    Some((g, Ok(r))) => {
                                        let waited = std::time::Instant::now();
                                        let n = manifest.checkpoint;
                                        let r = await_global(r, g, n, &stop).map_err(|reason| {
                                            rill_storage::Error::GlobalNotComplete {
                                                url: r.url("global/"),
                                                checkpoint: n.0,
                                                reason,
                                            }
                                        });
                                        entry.global_ms = waited.elapsed().as_secs_f64() * 1e3;
                                        r
                                    }
                                });
                                if uploaded.is_err() {
                                    // Not in the store: not complete, here either.
                                    let p = rill_storage::layout::manifest_path(
                                        &dir,
                                        manifest.checkpoint,
                                    );
                                    if let Err(e) = std::fs::remove_file(&p) {
                                        tracing::warn!("removing {}: {e}", p.display());
                                    }
                                }
                                uploaded
                            });
                            entry.publish_ms = started.elapsed().as_secs_f64() * 1e3;
                            let msg = match published {
                                Ok(()) => {
                                    complete.insert(manifest.checkpoint, true);
                                    let memo = std::cell::RefCell::new(&mut complete);
                                    let r = rill_storage::retention::apply(
                                        &dir,
                                        retained,
                                        &in_flight,
                                        |c| {
                                            if let Some(ok) = memo.borrow().get(&c) {
                                                return *ok;
                                            }
                                            let ok = store.load(c).is_ok();
                                            memo.borrow_mut().insert(c, ok);
                                            ok
                                        },
                                    );
                                    store.reader().forget_deleted();
                                    // Forget what retention deleted (the map stays as small
                                    // as the set of retained checkpoints).
                                    if let Ok(kept) = rill_storage::layout::list_manifests(&dir) {
                                        complete.retain(|c, _| kept.contains(c));
                                    }
                                    if let Err(e) = r {
                                        tracing::warn!("checkpoint retention: {e}");
                                    }
                                    if let Some(Ok(r)) = remote.as_mut() {
                                        if let Err(e) = r.mirror_retention(&dir) {
                                            tracing::warn!("checkpoint retention in S3: {e}");
                                        }
                                    }
                                    Done::Published(id)
                                }
                                Err(e) => {
                                    entry.state = State::Failed;
                                    entry.failure = Some(format!("publishing the manifest: {e}"));
                                    match e {
                                        rill_storage::Error::GlobalNotComplete {
                                            reason, ..
                                        } => Done::GlobalAborted(id, reason),
                                        e => Done::PublishFailed(
                                            id,
                                            e.to_string(),
                                            storage_unfixable(&e),
                                        ),
                                    }
                                }
                            };
                            if let Err(err) = history::append(&dir, &entry) {
                                tracing::warn!("checkpoint history: {err}");
                            }
                            let mut m = msg;
                            while let Err(full) = done_tx.try_push(m) {
                                m = full.into_inner();
                                std::thread::sleep(std::time::Duration::from_micros(100));
                            }
                            doorbell.notify();
                        }
                    }
                }
            })
            .expect("spawn the checkpoint housekeeping thread");
        Self {
            jobs: Some(tx),
            done,
            thread: Some(thread),
            stopping,
        }
    }

    fn send(&self, job: Job) {
        if let Some(tx) = &self.jobs {
            let _ = tx.send(job);
        }
    }
}

impl Drop for Janitor {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.jobs.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct InFlight {
    kind: TriggerKind,
    trigger_ns: u64,
    entry: Entry,
    acks: Vec<Option<CoreAck>>,
    waiting: Vec<String>,
}

/// The coordinator's shell on core 0.
pub(crate) struct Shell {
    coord: Coordinator,
    to: Vec<Option<(Producer<ToCore>, Arc<Doorbell>)>>,
    backlog: Vec<VecDeque<ToCore>>,
    from: Vec<Option<Consumer<ToCoordinator>>>,
    janitor: Janitor,
    inflight: BTreeMap<CheckpointId, InFlight>,
    finished: Vec<bool>,
    final_requested: bool,
    savepoint: Arc<AtomicBool>,
    max_key_groups: u16,
    sources: Vec<(String, u32)>,
    retained: usize,
    /// The cause of the latest checkpoint failure a restart cannot fix (cleared when a
    /// checkpoint completes): the job's failure carries it to the restart strategy.
    unfixable: Option<Unfixable>,
    /// Finished entries, for the run report.
    pub(crate) history: Vec<Entry>,
    /// A job of several processes (checkpoints complete for the whole job or not at all).
    multi: bool,
}

/// What the shell needs to start.
pub(crate) struct ShellArgs {
    pub(crate) coord: Coordinator,
    pub(crate) to: Vec<Option<(Producer<ToCore>, Arc<Doorbell>)>>,
    pub(crate) from: Vec<Option<Consumer<ToCoordinator>>>,
    pub(crate) dir: PathBuf,
    pub(crate) doorbell: Arc<Doorbell>,
    pub(crate) savepoint: Arc<AtomicBool>,
    pub(crate) max_key_groups: u16,
    pub(crate) sources: Vec<(String, u32)>,
    pub(crate) retained: usize,
    /// `s3://bucket/prefix` when checkpoints go to object storage.
    pub(crate) remote: Option<String>,
    /// A job of several processes: the job's location and this process.
    pub(crate) global: Option<GlobalArgs>,
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

impl Shell {
    pub(crate) fn new(a: ShellArgs) -> Self {
        let cores = a.to.len();
        Self {
            coord: a.coord,
            to: a.to,
            backlog: (0..cores).map(|_| VecDeque::new()).collect(),
            from: a.from,
            multi: a.global.is_some(),
            janitor: Janitor::start(a.dir, a.doorbell, a.remote, a.global),
            inflight: BTreeMap::new(),
            finished: vec![false; cores],
            final_requested: false,
            savepoint: a.savepoint,
            max_key_groups: a.max_key_groups,
            sources: a.sources,
            retained: a.retained,
            unfixable: None,
            history: Vec::new(),
        }
    }

    /// When the shell next has something timed to do (ns).
    pub(crate) fn next_wake_ns(&self) -> Option<u64> {
        self.coord.next_wake_ns()
    }

    /// Whether any core's message or a housekeeping result is waiting.
    pub(crate) fn has_input(&self) -> bool {
        self.from.iter().flatten().any(|c| !c.is_empty())
            || !self.done_is_empty()
            || self.backlog.iter().any(|b| !b.is_empty())
            || self.savepoint.load(Ordering::Relaxed)
    }

    fn done_is_empty(&self) -> bool {
        self.janitor.done.is_empty()
    }

    /// One round: take the cores' messages (`local` is core 0's own outbox), tick, and
    /// carry out the decisions; messages for core 0 land in `local_inbox`. Returns whether
    /// anything happened; fails the job when checkpoints failed more often than tolerated.
    pub(crate) fn step(
        &mut self,
        now: u64,
        local: Vec<ToCoordinator>,
        local_inbox: &mut Vec<ToCore>,
    ) -> Result<bool> {
        let mut msgs = local;
        for c in self.from.iter_mut().flatten() {
            while let Some(m) = c.try_pop() {
                msgs.push(m);
            }
        }
        let mut progress = !msgs.is_empty();
        let mut decisions = Vec::new();
        for m in msgs {
            match m {
                ToCoordinator::Ack(ack) => {
                    let (core, id) = (ack.core, ack.id);
                    if let Some(f) = self.inflight.get_mut(&id) {
                        f.acks[core] = Some(*ack);
                    }
                    decisions.extend(self.coord.on_ack(now, core, id));
                }
                ToCoordinator::Decline {
                    core,
                    id,
                    reason,
                    unfixable,
                } => {
                    if unfixable.is_some() {
                        self.unfixable = unfixable;
                    }
                    decisions.extend(self.coord.on_decline(now, core, id, reason));
                }
                ToCoordinator::SourcesFinished { core } => {
                    self.finished[core] = true;
                }
                ToCoordinator::Waiting { core, id, what } => {
                    if let Some(e) = self.history.iter_mut().rev().find(|e| e.id == id.0) {
                        let note = format!("; core {core} was waiting on: {what}");
                        if let Some(f) = &mut e.failure {
                            f.push_str(&note);
                        }
                        self.janitor.send(Job::History(e.clone()));
                    }
                }
            }
        }
        while let Some(d) = self.janitor.done.try_pop() {
            progress = true;
            match d {
                Done::Published(id) => {
                    self.unfixable = None;
                    decisions.extend(self.coord.on_published(now, id))
                }
                Done::GlobalAborted(id, reason) => {
                    return Err(EngineError::GlobalRollback {
                        checkpoint: id,
                        reason,
                    });
                }
                Done::PublishFailed(id, why, unfixable) => {
                    if unfixable.is_some() {
                        self.unfixable = unfixable;
                    }
                    decisions.extend(self.coord.on_publish_failed(now, id, why))
                }
            }
        }
        if !self.final_requested && self.finished.iter().all(|f| *f) {
            self.final_requested = true;
            decisions.extend(self.coord.request_final(now));
        }
        if self.savepoint.swap(false, Ordering::SeqCst) {
            decisions.extend(self.coord.request_savepoint(now));
        }
        decisions.extend(self.coord.on_tick(now));
        progress |= !decisions.is_empty();
        for d in decisions {
            self.apply(now, d, local_inbox)?;
        }
        self.flush_backlog();
        Ok(progress)
    }

    fn send_all(&mut self, m: impl Fn() -> ToCore, local_inbox: &mut Vec<ToCore>) {
        for i in 0..self.to.len() {
            if self.to[i].is_none() {
                local_inbox.push(m());
            } else {
                self.backlog[i].push_back(m());
            }
        }
    }

    fn flush_backlog(&mut self) {
        for (i, t) in self.to.iter_mut().enumerate() {
            let Some((ring, bell)) = t else { continue };
            let mut moved = false;
            while let Some(m) = self.backlog[i].pop_front() {
                match ring.try_push(m) {
                    Ok(()) => moved = true,
                    Err(full) => {
                        self.backlog[i].push_front(full.into_inner());
                        break;
                    }
                }
            }
            if moved {
                bell.notify();
            }
        }
    }

    fn apply(&mut self, now: u64, d: Decision, local_inbox: &mut Vec<ToCore>) -> Result<()> {
        match d {
            Decision::Trigger { id, kind } => {
                let kind = match kind {
                    CheckpointKind::Periodic => TriggerKind::Periodic,
                    CheckpointKind::Savepoint => TriggerKind::Savepoint,
                    CheckpointKind::Final => TriggerKind::Final,
                };
                let entry = Entry::triggered(id.0, kind);
                self.janitor.send(Job::History(entry.clone()));
                self.inflight.insert(
                    id,
                    InFlight {
                        kind,
                        trigger_ns: now,
                        entry,
                        acks: vec![None; self.to.len()],
                        waiting: Vec::new(),
                    },
                );
                let last = kind == TriggerKind::Final;
                self.send_all(|| ToCore::Trigger { id, last }, local_inbox);
            }
            Decision::Publish { id } => {
                let Some(f) = self.inflight.get_mut(&id) else {
                    return Ok(());
                };
                let mut records = Vec::new();
                let mut offsets = Vec::new();
                let e = &mut f.entry;
                for (core, a) in f.acks.iter().enumerate() {
                    let a = a.as_ref().expect("every core acked before Publish");
                    records.extend(a.records.iter().copied());
                    offsets.extend(a.offsets.iter().cloned());
                    e.start_delay_ms = e
                        .start_delay_ms
                        .max(ms(a.triggered_ns.saturating_sub(f.trigger_ns)));
                    e.alignment_ms = e.alignment_ms.max(a.alignment_us as f64 / 1e3);
                    e.sync_ms = e.sync_ms.max(a.sync_us as f64 / 1e3);
                    e.archive_ms = e.archive_ms.max(a.archive_us as f64 / 1e3);
                    e.async_ms = e.async_ms.max(a.async_us as f64 / 1e3);
                    e.bytes_full += a.bytes_total;
                    e.bytes_incremental += a.bytes_written;
                    e.channel_records += a.channel_records;
                    e.partitions
                        .extend(a.partitions.iter().cloned().map(|p| (core, p)));
                }
                let meta = Metadata {
                    version: super::restore::METADATA_VERSION,
                    kind: f.kind,
                    max_key_groups: self.max_key_groups,
                    sources: self.sources.clone(),
                    offsets,
                    cores: self.to.len(),
                    triggered_unix_ms: e.triggered_unix_ms,
                };
                let mut manifest = Manifest::new(
                    rill_storage::CheckpointId(id.0),
                    records,
                    serde_json::to_vec(&meta).expect("metadata serializes"),
                );
                manifest.savepoint = f.kind == TriggerKind::Savepoint;
                e.state = State::Complete;
                e.duration_ms = ms(now.saturating_sub(f.trigger_ns));
                let entry = e.clone();
                let in_flight = self
                    .inflight
                    .keys()
                    .filter(|c| **c != id)
                    .map(|c| rill_storage::CheckpointId(c.0))
                    .collect();
                self.janitor.send(Job::Publish {
                    manifest,
                    entry,
                    retained: self.retained,
                    in_flight,
                });
            }
            Decision::NotifyComplete { id } => {
                let f = self.inflight.remove(&id);
                let last = f.as_ref().is_some_and(|f| f.kind == TriggerKind::Final);
                if let Some(f) = f {
                    self.history.push(f.entry);
                }
                self.send_all(|| ToCore::Complete { id, last }, local_inbox);
            }
            Decision::Abort { id, reason } => {
                if let Some(mut f) = self.inflight.remove(&id) {
                    f.entry.state = State::Failed;
                    f.entry.duration_ms = ms(now.saturating_sub(f.trigger_ns));
                    let mut why = describe(&reason);
                    if !f.waiting.is_empty() {
                        why.push_str(&format!("; waiting on: {}", f.waiting.join("; ")));
                    }
                    tracing::warn!("checkpoint {} failed: {why}", id.0);
                    f.entry.failure = Some(why.clone());
                    self.janitor.send(Job::History(f.entry.clone()));
                    self.history.push(f.entry);
                    if self.multi && !matches!(reason, AbortReason::Subsumed { .. }) {
                        // A job of several processes: abort it for the job (the others
                        // must not wait for it), and start again from the newest global
                        // checkpoint, as they will (a sink that sealed its transaction
                        // for it would otherwise wait for a commit that never comes).
                        self.janitor.send(Job::AbortGlobal(id, why.clone()));
                        return Err(EngineError::GlobalRollback {
                            checkpoint: id,
                            reason: why,
                        });
                    }
                }
                self.send_all(|| ToCore::Abort { id }, local_inbox);
            }
            Decision::FailJob {
                id,
                consecutive_failures,
                last,
            } => {
                return Err(EngineError::CheckpointsFailing {
                    checkpoint: id,
                    consecutive: consecutive_failures,
                    reason: describe(&last),
                    unfixable: self.unfixable.take(),
                })
            }
            Decision::Finished { .. } => {}
        }
        Ok(())
    }
}

/// A failure reason in words a user can act on.
pub(crate) fn describe(r: &AbortReason) -> String {
    match r {
        AbortReason::Expired { after, missing } => format!(
            "expired after {} ms (checkpoint.timeout_ms) without an ack from core(s) {:?}; \
             look for a blocked operator, a slow sink or storage on those cores",
            after.as_millis(),
            missing
        ),
        AbortReason::Declined {
            participant,
            reason,
        } => format!("declined by core {participant}: {reason}"),
        AbortReason::PublishFailed { reason } => {
            format!(
                "publishing the manifest failed (check the checkpoint directory's disk): {reason}"
            )
        }
        AbortReason::Subsumed { by } => format!("subsumed by checkpoint {}", by.0),
    }
}
