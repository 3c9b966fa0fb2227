//! One core's side of checkpointing: the participants placed on the core (source
//! partitions, keyed operator partitions, sink partitions) report their part of each
//! checkpoint here at the barrier (offsets, key groups frozen for archiving,
//! pre-committed files); once all have, the core's writer task archives the frozen key
//! groups in slices between rounds of the core's loop (at most `archive_slice_ns` of
//! work per round), appends the records and syncs the files through the core's io_uring
//! (the asynchronous part, while processing goes on), and the core acks to the
//! coordinator. Also applies what the coordinator says back (complete, abort). It never
//! blocks and never touches another core's state.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::task::Waker;

use rill_storage::{
    KeyGroupRange, LogWriter, OperatorId, Owner, PartitionId as SPartition, RecordRef, RecordSpec,
    Uring, UringFs,
};
use rkyv::util::AlignedVec;

use super::protocol::{CoreAck, PartitionStats, SourceOffset, ToCoordinator};
use super::restart::Unfixable;
use crate::config::CheckpointMode;
use crate::error::storage_unfixable;
use crate::ids::{CheckpointId, CoreId, KeyGroup, PartitionId};
use crate::state::{GroupSnapshot, SnapshotTable};

/// The storage owner id of state `state` of operator `operator`: a stable hash of both
/// names (operator names are unique in a job), so that it survives changes of
/// parallelism, placement and graph shape.
pub fn state_operator_id(operator: &str, state: &str) -> OperatorId {
    OperatorId((crate::keys::stable_hash(&(operator, state)) & 0x7fff_ffff) as u32)
}

/// The storage owner id of the channel state (unaligned checkpoints) of exchange
/// `exchange`.
pub fn channel_operator_id(exchange: &str) -> OperatorId {
    state_operator_id(exchange, "\0channel")
}

/// The owner of key group `kg` of a state table.
pub fn group_owner(op: OperatorId, partition: PartitionId, kg: KeyGroup) -> Owner {
    Owner::new(
        op,
        SPartition(partition.0),
        KeyGroupRange::single(u32::from(kg.0)),
    )
}

/// A sink partition's commit hook, called when a checkpoint completes.
pub(crate) trait Committer {
    /// Makes everything pre-committed up to `id` visible; returns files whose
    /// directory entries must be synced.
    fn commit(&mut self, id: CheckpointId) -> crate::Result<Vec<File>>;
}

/// What one participant handed in for a checkpoint.
enum Part {
    Source(SourceOffset),
    State {
        /// Frozen groups are archived by the writer task, which replaces them.
        groups: Vec<(Owner, GroupSnapshot)>,
        keys: u64,
        sync_ns: u64,
        /// Time the writer task spent archiving its frozen groups.
        archive_ns: u64,
    },
    Sink(Vec<File>),
    Channel(Vec<(Owner, AlignedVec)>, u64),
}

struct Pending {
    triggered_ns: u64,
    triggered: bool,
    reported: Vec<Option<u64>>,
    missing: usize,
    parts: Vec<(usize, Part)>,
    alignment_ns: u64,
    /// Multi-input points aligning this checkpoint.
    aligning: Vec<Aligning>,
}

/// A multi-input point aligning a checkpoint; put into words only if the checkpoint
/// aborts.
struct Aligning {
    point: Rc<str>,
    /// The cores whose barrier it waits for.
    from: Vec<CoreId>,
    since_ns: u64,
    /// When it finished aligning.
    done_ns: Option<u64>,
}

/// A checkpoint ready for the asynchronous part.
pub(crate) struct ReadyCheckpoint {
    id: CheckpointId,
    pending: Pending,
    ready_ns: u64,
}

/// The participants and in-flight checkpoints of one core.
pub(crate) struct CoreCheckpoints {
    core: usize,
    pub(crate) mode: CheckpointMode,
    pub(crate) max_chain: usize,
    pub(crate) incremental: bool,
    /// Most time the writer task archives frozen key groups in one round of the core's
    /// loop before it lets the loop go on (ns; a key group is never split, so a round
    /// can take one group longer).
    pub(crate) archive_slice_ns: u64,
    /// Rounds of the core's loop so far (the archiving slices wait for the next one).
    pub(crate) rounds: u64,
    /// Unaligned checkpoints: how long alignment may take before it switches (ns).
    pub(crate) unaligned_after_ns: Option<u64>,
    names: Vec<String>,
    tables: Vec<Rc<RefCell<dyn SnapshotTable>>>,
    committers: Vec<Rc<RefCell<dyn Committer>>>,
    pending: BTreeMap<CheckpointId, Pending>,
    aborted_upto: Option<CheckpointId>,
    /// The newest checkpoint handed to the asynchronous part.
    written_upto: Option<CheckpointId>,
    ready: VecDeque<ReadyCheckpoint>,
    /// The checkpoint the log writer is appending and syncing, since when (ns).
    writing: Option<(CheckpointId, u64)>,
    writer_waker: Option<Waker>,
    /// The chains of every owner on this core as of the last written checkpoint.
    chains: HashMap<Owner, Vec<RecordRef>>,
    sizes: HashMap<RecordRef, u64>,
    pub(crate) outbox: Vec<ToCoordinator>,
    sources: usize,
    sources_finished: usize,
    finished_sent: bool,
    /// Set once the final checkpoint completed on this core.
    pub(crate) final_complete: bool,
}

/// A participant's handle: its index on the core and the shared core state.
#[derive(Clone)]
pub(crate) struct Participant {
    pub(crate) core: Rc<RefCell<CoreCheckpoints>>,
    pub(crate) index: usize,
}

impl CoreCheckpoints {
    pub(crate) fn new(
        core: usize,
        mode: CheckpointMode,
        incremental: bool,
        max_chain: usize,
    ) -> Self {
        Self {
            core,
            mode,
            max_chain,
            incremental,
            archive_slice_ns: crate::config::CheckpointConfig::default().archive_slice_us * 1_000,
            rounds: 0,
            unaligned_after_ns: None,
            names: Vec::new(),
            tables: Vec::new(),
            committers: Vec::new(),
            pending: BTreeMap::new(),
            aborted_upto: None,
            written_upto: None,
            ready: VecDeque::new(),
            writing: None,
            writer_waker: None,
            chains: HashMap::new(),
            sizes: HashMap::new(),
            outbox: Vec::new(),
            sources: 0,
            sources_finished: 0,
            finished_sent: false,
            final_complete: false,
        }
    }

    /// Registers a participant (`name` is what failures and statistics call it).
    pub(crate) fn register(this: &Rc<RefCell<Self>>, name: String) -> Participant {
        let mut c = this.borrow_mut();
        c.names.push(name);
        Participant {
            core: this.clone(),
            index: c.names.len() - 1,
        }
    }

    pub(crate) fn register_source(this: &Rc<RefCell<Self>>, name: String) -> Participant {
        this.borrow_mut().sources += 1;
        Self::register(this, name)
    }

    pub(crate) fn add_tables(&mut self, tables: &[Rc<RefCell<dyn SnapshotTable>>]) {
        self.tables.extend(tables.iter().cloned());
    }

    pub(crate) fn add_committer(&mut self, c: Rc<RefCell<dyn Committer>>) {
        self.committers.push(c);
    }

    /// Whether a participant should still do its part of `id` (false once aborted or
    /// already written).
    pub(crate) fn wants(&self, id: CheckpointId) -> bool {
        self.aborted_upto.map_or(true, |a| id > a) && self.written_upto.map_or(true, |w| id > w)
    }

    fn pending_mut(&mut self, id: CheckpointId, now_ns: u64) -> &mut Pending {
        let n = self.names.len();
        self.pending.entry(id).or_insert_with(|| Pending {
            triggered_ns: now_ns,
            triggered: false,
            reported: vec![None; n],
            missing: n,
            parts: Vec::new(),
            alignment_ns: 0,
            aligning: Vec::new(),
        })
    }

    /// The coordinator triggered `id`: the core expects every participant. (A barrier
    /// may reach a participant through a data ring before the trigger reaches its core;
    /// its report is kept until then.)
    pub(crate) fn on_trigger(&mut self, id: CheckpointId, now_ns: u64) {
        if !self.wants(id) {
            return;
        }
        let p = self.pending_mut(id, now_ns);
        p.triggered = true;
        p.triggered_ns = p.triggered_ns.min(now_ns);
        self.check_ready(id, now_ns);
    }

    fn report(&mut self, p: usize, id: CheckpointId, part: Part, now_ns: u64) {
        if !self.wants(id) {
            return; // Aborted: nothing to keep.
        }
        let pend = self.pending_mut(id, now_ns);
        if pend.reported[p].is_some() {
            return;
        }
        pend.reported[p] = Some(now_ns);
        pend.missing -= 1;
        pend.parts.push((p, part));
        self.check_ready(id, now_ns);
    }

    fn check_ready(&mut self, id: CheckpointId, now_ns: u64) {
        if self
            .pending
            .get(&id)
            .is_some_and(|p| p.missing == 0 && p.triggered)
        {
            let pending = self.pending.remove(&id).expect("checked above");
            self.written_upto = Some(self.written_upto.map_or(id, |w| w.max(id)));
            self.ready.push_back(ReadyCheckpoint {
                id,
                pending,
                ready_ns: now_ns,
            });
            if let Some(w) = self.writer_waker.take() {
                w.wake();
            }
        }
    }

    /// A multi-input point took `ns` to align barrier `id`.
    pub(crate) fn note_alignment(&mut self, id: CheckpointId, point: &str, ns: u64, now_ns: u64) {
        if self.wants(id) {
            let p = self.pending_mut(id, now_ns);
            p.alignment_ns = p.alignment_ns.max(ns);
            for a in p.aligning.iter_mut().filter(|a| &*a.point == point) {
                a.done_ns.get_or_insert(now_ns);
            }
        }
    }

    /// Multi-input point `point` is waiting for barrier `id` from the inputs of `cores`.
    pub(crate) fn note_aligning(
        &mut self,
        id: CheckpointId,
        point: &Rc<str>,
        cores: Vec<CoreId>,
        now_ns: u64,
    ) {
        if self.wants(id) {
            self.pending_mut(id, now_ns).aligning.push(Aligning {
                point: point.clone(),
                from: cores,
                since_ns: now_ns,
                done_ns: None,
            });
        }
    }

    /// A source partition reached the end of its input.
    pub(crate) fn source_finished(&mut self) {
        self.sources_finished += 1;
    }

    /// Whether every source partition on this core has finished its input.
    pub(crate) fn all_sources_finished(&self) -> bool {
        self.sources_finished == self.sources
    }

    /// Tells the coordinator once when every source on the core has finished.
    pub(crate) fn poll_finished(&mut self) {
        if !self.finished_sent && self.sources_finished == self.sources {
            self.finished_sent = true;
            self.outbox
                .push(ToCoordinator::SourcesFinished { core: self.core });
        }
    }

    /// The coordinator aborted `id`: drop it and every older in-flight one; the next
    /// snapshot of every key group is a full one (an aborted checkpoint's deltas may never
    /// have been written).
    pub(crate) fn on_abort(&mut self, id: CheckpointId, now_ns: u64) {
        self.aborted_upto = Some(self.aborted_upto.map_or(id, |a| a.max(id)));
        let mut waiting: Vec<String> = self
            .pending
            .get(&id)
            .map(|p| {
                let mut w: Vec<String> = p
                    .reported
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| r.is_none())
                    .map(|(i, _)| self.names[i].clone())
                    .collect();
                // Alignment that is still waiting says since when; one that finished
                // says how long it took (the checkpoint then waited elsewhere).
                w.extend(p.aligning.iter().map(|a| {
                    let from: Vec<String> = a.from.iter().map(ToString::to_string).collect();
                    let what = format!(
                        "alignment at `{}` waiting for the barrier from {}",
                        a.point,
                        from.join(", ")
                    );
                    match a.done_ns {
                        None => format!(
                            "{what} (still waiting after {:.1} ms)",
                            now_ns.saturating_sub(a.since_ns) as f64 / 1e6
                        ),
                        Some(d) => format!(
                            "{what} (aligned after {:.1} ms)",
                            d.saturating_sub(a.since_ns) as f64 / 1e6
                        ),
                    }
                }));
                w
            })
            .unwrap_or_default();
        // Everything archived, but the storage has not confirmed it yet.
        if let Some((w, since)) = self.writing.filter(|(w, _)| *w <= id) {
            waiting.push(format!(
                "the log write + fdatasync of checkpoint {} (storage latency: {:.1} ms so far)",
                w.0,
                now_ns.saturating_sub(since) as f64 / 1e6
            ));
        }
        let queued = self.ready.iter().filter(|r| r.id <= id).count();
        if queued > 0 {
            waiting.push(format!(
                "{queued} archived checkpoint(s) queued for the log writer"
            ));
        }
        if !waiting.is_empty() {
            self.outbox.push(ToCoordinator::Waiting {
                core: self.core,
                id,
                what: waiting.join("; "),
            });
        }
        self.pending.retain(|k, _| *k > id);
        for t in &self.tables {
            t.borrow_mut().reset_chains();
        }
        // Later in-flight checkpoints may hold deltas over the aborted one's.
        let later: Vec<CheckpointId> = self.pending.keys().copied().collect();
        for l in later {
            self.pending.remove(&l);
            self.outbox.push(ToCoordinator::Decline {
                core: self.core,
                id: l,
                reason: format!("its deltas build on aborted checkpoint {}", id.0),
                unfixable: None,
            });
        }
    }

    /// Checkpoint `id` completed: commit every sink partition's output up to it.
    pub(crate) fn on_complete(&mut self, id: CheckpointId, last: bool) -> crate::Result<Vec<File>> {
        let mut dirs = Vec::new();
        for c in &self.committers {
            dirs.extend(c.borrow_mut().commit(id)?);
        }
        if last {
            self.final_complete = true;
        }
        Ok(dirs)
    }

    /// Channel-state records reported for `id` so far (tests).
    #[cfg(test)]
    pub(crate) fn channel_records(&self, id: CheckpointId) -> Option<u64> {
        let parts = self.pending.get(&id).map(|p| &p.parts).or_else(|| {
            self.ready
                .iter()
                .find(|r| r.id == id)
                .map(|r| &r.pending.parts)
        })?;
        let n = parts
            .iter()
            .filter_map(|(_, part)| match part {
                Part::Channel(_, n) => Some(*n),
                _ => None,
            })
            .sum();
        Some(n)
    }

    fn next_ready(&mut self, waker: &Waker) -> Option<ReadyCheckpoint> {
        let r = self.ready.pop_front();
        if r.is_none() {
            self.writer_waker = Some(waker.clone());
        }
        r
    }
}

impl Participant {
    pub(crate) fn wants(&self, id: CheckpointId) -> bool {
        self.core.borrow().wants(id)
    }

    pub(crate) fn source(&self, id: CheckpointId, offset: SourceOffset, now_ns: u64) {
        self.core
            .borrow_mut()
            .report(self.index, id, Part::Source(offset), now_ns);
    }

    pub(crate) fn state(
        &self,
        id: CheckpointId,
        groups: Vec<(Owner, GroupSnapshot)>,
        keys: u64,
        sync_ns: u64,
        now_ns: u64,
    ) {
        self.core.borrow_mut().report(
            self.index,
            id,
            Part::State {
                groups,
                keys,
                sync_ns,
                archive_ns: 0,
            },
            now_ns,
        );
    }

    pub(crate) fn sink(&self, id: CheckpointId, files: Vec<File>, now_ns: u64) {
        self.core
            .borrow_mut()
            .report(self.index, id, Part::Sink(files), now_ns);
    }

    pub(crate) fn channel(
        &self,
        id: CheckpointId,
        records: Vec<(Owner, AlignedVec)>,
        count: u64,
        now_ns: u64,
    ) {
        self.core
            .borrow_mut()
            .report(self.index, id, Part::Channel(records, count), now_ns);
    }
}

/// A future that resolves once the core's loop has gone round again (the shard loop
/// polls the writer task in every round; between two rounds it steps its drivers).
struct NextRound<'a> {
    core: &'a Rc<RefCell<CoreCheckpoints>>,
    round: u64,
}

impl std::future::Future for NextRound<'_> {
    type Output = ();
    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        if self.core.borrow().rounds > self.round {
            std::task::Poll::Ready(())
        } else {
            // Polled again in the next round: keep the task's flag set.
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        }
    }
}

/// Archives every key group the barrier of `pending` froze, replacing each with its
/// archive, in slices of at most the core's `archive_slice_ns` (plus one group) per round
/// of the core's loop. Archives every group even after an error (so that none stays
/// frozen), then returns the first error.
async fn archive_frozen(
    core: &Rc<RefCell<CoreCheckpoints>>,
    id: CheckpointId,
    pending: &mut Pending,
    clock: &impl Fn() -> u64,
) -> Result<(), (String, Option<Unfixable>)> {
    let slice_ns = core.borrow().archive_slice_ns;
    let mut slice_start = clock();
    let mut in_slice = 0usize;
    let mut first_error: Option<String> = None;
    for (p, part) in &mut pending.parts {
        let Part::State {
            groups, archive_ns, ..
        } = part
        else {
            continue;
        };
        for (owner, g) in groups.iter_mut() {
            if !matches!(g, GroupSnapshot::Frozen(_)) {
                continue;
            }
            // Every slice archives at least one group.
            if in_slice > 0 && clock().saturating_sub(slice_start) >= slice_ns {
                let round = core.borrow().rounds;
                NextRound { core, round }.await;
                slice_start = clock();
                in_slice = 0;
            }
            in_slice += 1;
            let t0 = clock();
            let GroupSnapshot::Frozen(job) = std::mem::replace(g, GroupSnapshot::Unchanged) else {
                unreachable!("matched above")
            };
            match job.archive() {
                Ok(Some(done)) => *g = done,
                Ok(None) => {
                    first_error.get_or_insert_with(|| {
                        format!(
                            "{}: the frozen state of {owner} was dropped by an abort before \
                             checkpoint {} archived it",
                            core.borrow().names[*p],
                            id.0
                        )
                    });
                }
                Err(e) => {
                    first_error.get_or_insert_with(|| {
                        format!(
                            "{}: archiving {owner} for checkpoint {}: {e}",
                            core.borrow().names[*p],
                            id.0
                        )
                    });
                }
            }
            *archive_ns += clock().saturating_sub(t0);
        }
    }
    first_error.map_or(Ok(()), |e| Err((e, None)))
}

/// A future that resolves with the next checkpoint ready for its asynchronous part.
struct NextReady<'a>(&'a Rc<RefCell<CoreCheckpoints>>);

impl std::future::Future for NextReady<'_> {
    type Output = ReadyCheckpoint;
    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<ReadyCheckpoint> {
        match self.0.borrow_mut().next_ready(cx.waker()) {
            Some(r) => std::task::Poll::Ready(r),
            None => std::task::Poll::Pending,
        }
    }
}

/// The core's asynchronous part, forever: for each ready checkpoint in order, append its
/// records (group-committed), sync the sink files through the io_uring, and put the ack
/// (or a decline naming the storage error) in the outbox. `clock` gives ns on the job
/// clock.
pub(crate) async fn writer_loop(
    core: Rc<RefCell<CoreCheckpoints>>,
    log: Rc<LogWriter<UringFs>>,
    uring: Rc<Uring>,
    clock: impl Fn() -> u64,
) {
    loop {
        let ready = NextReady(&core).await;
        let id = ready.id;
        core.borrow_mut().writing = Some((id, clock()));
        let written = write_one(&core, &log, &uring, ready, &clock).await;
        core.borrow_mut().writing = None;
        let msg = match written {
            Ok(ack) => ToCoordinator::Ack(Box::new(ack)),
            Err((reason, unfixable)) => ToCoordinator::Decline {
                core: core.borrow().core,
                id,
                reason,
                unfixable,
            },
        };
        core.borrow_mut().outbox.push(msg);
    }
}

async fn write_one(
    core: &Rc<RefCell<CoreCheckpoints>>,
    log: &Rc<LogWriter<UringFs>>,
    uring: &Rc<Uring>,
    ready: ReadyCheckpoint,
    clock: &impl Fn() -> u64,
) -> Result<CoreAck, (String, Option<Unfixable>)> {
    let ReadyCheckpoint {
        id,
        mut pending,
        ready_ns,
    } = ready;
    archive_frozen(core, id, &mut pending, clock).await?;
    let mut archive_ns = 0u64;
    let sid = rill_storage::CheckpointId(id.0);
    let mut offsets = Vec::new();
    let mut syncs: Vec<File> = Vec::new();
    let mut stats: Vec<PartitionStats> = Vec::new();
    let mut sync_ns = 0u64;
    let mut channel_records = 0u64;
    // (owner, spec, bytes, participant stats index)
    let mut appends: Vec<(Owner, RecordSpec, AlignedVec, usize)> = Vec::new();
    let mut removed: Vec<Owner> = Vec::new();
    {
        let c = core.borrow();
        for (p, part) in pending.parts {
            let reported = pending.reported[p].unwrap_or(pending.triggered_ns);
            let si = stats.len();
            stats.push(PartitionStats {
                name: c.names[p].clone(),
                barrier_us: reported.saturating_sub(pending.triggered_ns) / 1_000,
                ..PartitionStats::default()
            });
            match part {
                Part::Source(o) => offsets.push(o),
                Part::Sink(files) => syncs.extend(files),
                Part::State {
                    groups,
                    keys,
                    sync_ns: s,
                    archive_ns: a,
                } => {
                    sync_ns += s;
                    archive_ns += a;
                    stats[si].sync_us = s / 1_000;
                    stats[si].archive_us = a / 1_000;
                    stats[si].keys = keys;
                    for (owner, g) in groups {
                        match g {
                            GroupSnapshot::Full(b) => {
                                appends.push((owner, RecordSpec::full(sid, owner), b, si));
                            }
                            GroupSnapshot::Delta(b) => {
                                let base = c
                                    .chains
                                    .get(&owner)
                                    .and_then(|ch| ch.first())
                                    .map(|r| r.checkpoint);
                                match base {
                                    Some(base) => appends.push((
                                        owner,
                                        RecordSpec::delta(sid, base, owner),
                                        b,
                                        si,
                                    )),
                                    None => {
                                        return Err((
                                            format!(
                                                "{}: a delta for {owner} has no base \
                                                 snapshot on this core (a bug; the next \
                                                 checkpoint writes full snapshots)",
                                                c.names[p]
                                            ),
                                            None,
                                        ))
                                    }
                                }
                            }
                            GroupSnapshot::Unchanged => {}
                            GroupSnapshot::Empty => removed.push(owner),
                            GroupSnapshot::Frozen(_) => {
                                unreachable!("archive_frozen archived every frozen group")
                            }
                        }
                    }
                }
                Part::Channel(records, n) => {
                    channel_records += n;
                    for (owner, b) in records {
                        appends.push((owner, RecordSpec::blob(sid, owner), b, si));
                    }
                }
            }
        }
    }
    // Staging copies each archive into the log's batch and checksums it: work in
    // proportion to the bytes, so it goes in slices between rounds of the core's loop
    // too; one write and one fdatasync then make every record durable.
    let slice_ns = core.borrow().archive_slice_ns;
    let mut slice_start = clock();
    let mut written = Vec::with_capacity(appends.len());
    let mut end = None;
    for (i, (_, spec, bytes, _)) in appends.iter().enumerate() {
        if i > 0 && clock().saturating_sub(slice_start) >= slice_ns {
            let round = core.borrow().rounds;
            NextRound { core, round }.await;
            slice_start = clock();
        }
        let (r, e) = log
            .stage_record(*spec, bytes)
            .map_err(|e| (format!("checkpoint log: {e}"), storage_unfixable(&e)))?;
        written.push(r);
        end = Some(e);
    }
    if let Some(end) = end {
        log.wait_durable(end)
            .await
            .map_err(|e| (format!("checkpoint log: {e}"), storage_unfixable(&e)))?;
    }
    for f in &syncs {
        uring.fdatasync(f.as_raw_fd()).await.map_err(|e| {
            let path = std::fs::read_link(format!("/proc/self/fd/{}", f.as_raw_fd()))
                .unwrap_or_else(|_| "a pre-committed sink file".into());
            let unfixable = e
                .raw_os_error()
                .and_then(|n| Unfixable::of_os_error(n, "fdatasync", &path));
            (format!("fdatasync of {}: {e}", path.display()), unfixable)
        })?;
    }
    let mut bytes_written = 0u64;
    let mut c = core.borrow_mut();
    let c = &mut *c;
    let mut blobs = Vec::new();
    for ((owner, spec, bytes, si), r) in appends.iter().zip(&written) {
        let len = bytes.len() as u64;
        bytes_written += len;
        stats[*si].bytes += len;
        c.sizes.insert(*r, len);
        match spec.kind {
            rill_storage::RecordKind::Full => {
                if let Some(old) = c.chains.insert(*owner, vec![*r]) {
                    old.iter().for_each(|o| {
                        c.sizes.remove(o);
                    });
                }
            }
            rill_storage::RecordKind::Delta => c.chains.entry(*owner).or_default().push(*r),
            _ => blobs.push(*r),
        }
    }
    for o in removed {
        if let Some(old) = c.chains.remove(&o) {
            old.iter().for_each(|r| {
                c.sizes.remove(r);
            });
        }
    }
    let mut records: Vec<RecordRef> = c.chains.values().flatten().copied().collect();
    records.sort_by_key(|r| (r.owner, r.checkpoint));
    let bytes_total = records
        .iter()
        .map(|r| c.sizes.get(r).copied().unwrap_or(0))
        .sum::<u64>()
        + blobs
            .iter()
            .map(|r| c.sizes.get(r).copied().unwrap_or(0))
            .sum::<u64>();
    for b in &blobs {
        c.sizes.remove(b);
    }
    records.extend(blobs);
    let now = clock();
    Ok(CoreAck {
        core: c.core,
        id,
        records,
        offsets,
        triggered_ns: pending.triggered_ns,
        alignment_us: pending.alignment_ns / 1_000,
        sync_us: sync_ns / 1_000,
        archive_us: archive_ns / 1_000,
        async_us: now.saturating_sub(ready_ns) / 1_000,
        bytes_written,
        bytes_total,
        channel_records,
        partitions: stats,
    })
}

#[cfg(test)]
mod abort_tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn waiting(c: &CoreCheckpoints) -> String {
        c.outbox
            .iter()
            .find_map(|m| match m {
                ToCoordinator::Waiting { what, .. } => Some(what.clone()),
                _ => None,
            })
            .expect("a Waiting message")
    }

    #[test]
    fn an_abort_names_the_participants_owed_and_the_alignment_with_its_wait() {
        let core = Rc::new(RefCell::new(CoreCheckpoints::new(
            1,
            CheckpointMode::ExactlyOnce,
            false,
            4,
        )));
        let _p = CoreCheckpoints::register(&core, "operator `count` p1".into());
        let mut c = core.borrow_mut();
        c.on_trigger(CheckpointId(1), 10 * MS);
        c.note_aligning(CheckpointId(1), &Rc::from("k"), vec![CoreId(0)], 20 * MS);
        c.on_abort(CheckpointId(1), 320 * MS);
        let w = waiting(&c);
        assert!(w.contains("operator `count` p1"), "{w}");
        assert!(
            w.contains("from cpu0 (still waiting after 300.0 ms)"),
            "{w}"
        );
    }

    #[test]
    fn an_abort_while_the_log_syncs_blames_the_storage_with_its_latency() {
        let mut c = CoreCheckpoints::new(0, CheckpointMode::ExactlyOnce, false, 4);
        c.writing = Some((CheckpointId(3), 100 * MS));
        c.on_abort(CheckpointId(3), 350 * MS);
        let w = waiting(&c);
        assert!(
            w.contains("log write + fdatasync of checkpoint 3 (storage latency: 250.0 ms so far)"),
            "{w}"
        );
    }
}
