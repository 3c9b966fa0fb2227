//! The checkpoint coordinator's decisions, with Flink's triggering and failure rules.
//!
//! [`Coordinator`] is a pure state machine: the shell feeds it facts (a tick, an ack, a
//! decline, the outcome of publishing a manifest, a savepoint or final request), each with
//! `now_ns` from the job's monotonic clock, and carries out the [`Decision`]s it returns:
//! inject barriers, write the manifest, notify participants, fail or end the job. The shell
//! must call [`Coordinator::on_tick`] no later than [`Coordinator::next_wake_ns`]; ticking
//! earlier decides nothing. This module must not do IO, read a clock or know what a
//! participant is beyond its index `0..participants`.
//!
//! The rules (each has a test below):
//!
//! - Ids strictly increase from `first_id`, whatever the kind.
//! - A periodic checkpoint is due one `interval` after the previous periodic trigger
//!   (start to start; the first one an interval after [`Coordinator::new`]), but not
//!   before `min_pause` has passed since the last checkpoint *ended* (completed or failed),
//!   and only while fewer than `max_concurrent` are in flight. A `min_pause` above zero
//!   lets at most one checkpoint be in flight for periodic triggering, as in Flink. A due
//!   trigger that is held back fires as soon as it is allowed; it is not skipped.
//! - A checkpoint is in flight from its trigger until it is published or aborted. It
//!   completes only when every participant acked it: then [`Decision::Publish`]; after
//!   the shell reports [`Coordinator::on_published`], [`Decision::NotifyComplete`].
//! - It expires `timeout` after its trigger if some participant has not acked yet
//!   ([`AbortReason::Expired`] names them); every handler, not just `on_tick`, applies the
//!   expiries due at its `now_ns`, so the outcome does not depend on how promptly the shell
//!   ticks. A checkpoint being published does not expire: the shell owns its outcome.
//! - A decline aborts at once; so does a failed publish.
//! - The completion of checkpoint n subsumes (aborts with [`AbortReason::Subsumed`]) every
//!   older checkpoint still in flight, except savepoints (Flink's `canBeSubsumed`), even
//!   one whose manifest is being published: if that manifest lands anyway it is older than
//!   n, and its `on_published` is ignored. Subsumed checkpoints are not failures.
//! - Expired, declined and unpublished checkpoints are failures. They count towards
//!   `tolerable_failures` (consecutive, reset by a completion newer than the failure, as
//!   Flink's `CheckpointFailureManager`), except savepoint failures (a manual action the
//!   job does not depend on). When the count exceeds `tolerable_failures`,
//!   [`Decision::FailJob`]; a failed coordinator decides nothing more.
//! - A savepoint is triggered as soon as fewer than `max_concurrent` are in flight,
//!   ignoring `interval` and `min_pause`; otherwise it waits in a queue (first come, first
//!   served, ahead of periodic triggers). As in Flink since 1.15, a completed savepoint is
//!   published but neither subsumes anything nor is notified: the next checkpoint's
//!   notification covers it.
//! - A final request (a bounded job's input is done) queues a [`CheckpointKind::Final`]
//!   checkpoint like a savepoint and ends periodic triggering. When it completes:
//!   `NotifyComplete`, then, once nothing else is in flight or queued,
//!   [`Decision::Finished`]. If it fails (and the job does not), the next tick triggers a
//!   new final checkpoint.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::time::Duration;

use crate::ids::CheckpointId;

/// When checkpoints are triggered and how many failures are tolerated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CoordinatorConfig {
    /// Time between the triggers of two periodic checkpoints (start to start). `None`:
    /// no periodic checkpoints; savepoints and the final checkpoint still work.
    pub interval: Option<Duration>,
    /// An in-flight checkpoint not acked by every participant this long after its trigger
    /// is aborted as expired.
    pub timeout: Duration,
    /// Least time from the end (completion or failure) of the last checkpoint to the next
    /// periodic trigger. Above zero it also means at most one checkpoint in flight for
    /// periodic triggering, as in Flink.
    pub min_pause: Duration,
    /// Most checkpoints in flight at once (at least 1).
    pub max_concurrent: usize,
    /// Consecutive failed checkpoints tolerated; one more fails the job (Flink's
    /// tolerable-failed-checkpoints). A completion resets the count.
    pub tolerable_failures: u32,
}

/// What a checkpoint is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CheckpointKind {
    /// Triggered by the interval.
    Periodic,
    /// Requested by a user; never subsumed, not notified, its failure is not counted.
    Savepoint,
    /// The last checkpoint of a bounded job, after its input is done.
    Final,
}

/// What the shell must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Start checkpoint `id`: tell every source instance to emit its barrier.
    Trigger {
        /// The new checkpoint.
        id: CheckpointId,
        /// Why it was triggered.
        kind: CheckpointKind,
    },
    /// Every participant acked: the shell publishes the manifest, then calls
    /// [`Coordinator::on_published`] or [`Coordinator::on_publish_failed`].
    Publish {
        /// The checkpoint to publish.
        id: CheckpointId,
    },
    /// Published: tell every participant (a notification for n also covers older ones).
    NotifyComplete {
        /// The completed checkpoint.
        id: CheckpointId,
    },
    /// The checkpoint failed or was subsumed: participants drop what they hold for it.
    Abort {
        /// The aborted checkpoint.
        id: CheckpointId,
        /// Why.
        reason: AbortReason,
    },
    /// More consecutive checkpoint failures than `tolerable_failures`: fail the job.
    FailJob {
        /// The checkpoint whose failure was one too many.
        id: CheckpointId,
        /// The consecutive failures counted, `tolerable_failures + 1`.
        consecutive_failures: u32,
        /// Why that last checkpoint failed.
        last: AbortReason,
    },
    /// The final checkpoint of a bounded job completed and was notified: the job may end.
    Finished {
        /// The final checkpoint.
        id: CheckpointId,
    },
}

/// Why a checkpoint was aborted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AbortReason {
    /// Not acked by every participant within the timeout.
    Expired {
        /// How long after its trigger it was found expired (at least the timeout).
        after: Duration,
        /// The participants that had not acked, ascending.
        missing: Vec<usize>,
    },
    /// A participant failed its part (a storage error, ...).
    Declined {
        /// The participant that declined.
        participant: usize,
        /// What it reported.
        reason: String,
    },
    /// Publishing the manifest failed.
    PublishFailed {
        /// What the shell reported.
        reason: String,
    },
    /// A newer checkpoint completed first; not a failure.
    Subsumed {
        /// The newer, completed checkpoint.
        by: CheckpointId,
    },
}

impl fmt::Display for AbortReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AbortReason::Expired { after, missing } => write!(
                f,
                "expired {after:?} after its trigger; participants {missing:?} had not acked"
            ),
            AbortReason::Declined {
                participant,
                reason,
            } => write!(f, "declined by participant {participant}: {reason}"),
            AbortReason::PublishFailed { reason } => {
                write!(f, "publishing the manifest failed: {reason}")
            }
            AbortReason::Subsumed { by } => write!(f, "subsumed by {by}"),
        }
    }
}

/// One triggered checkpoint that is neither published nor aborted.
#[derive(Clone, Debug)]
struct InFlight {
    kind: CheckpointKind,
    triggered_ns: u64,
    acked: Vec<bool>,
    missing: usize,
    /// Every participant acked and `Publish` was decided; waiting for the shell.
    publishing: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FinalState {
    NotRequested,
    /// Queued or in flight.
    Requested,
    /// The last final checkpoint failed at `failed_ns`; the next tick re-triggers one.
    RetryOnTick {
        failed_ns: u64,
    },
    Completed(CheckpointId),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Running,
    /// `FailJob` was decided.
    Failed,
    /// `Finished` was decided.
    Finished,
}

/// The checkpoint coordinator's state; see the module docs for its rules.
#[derive(Clone, Debug)]
pub struct Coordinator {
    cfg: CoordinatorConfig,
    participants: usize,
    next_id: CheckpointId,
    in_flight: BTreeMap<CheckpointId, InFlight>,
    /// Savepoint and final requests waiting for a free slot, first come first served.
    queued: VecDeque<CheckpointKind>,
    /// When the next periodic checkpoint is due, before `min_pause` and slots.
    next_periodic_ns: Option<u64>,
    /// When the last checkpoint completed or failed.
    last_end_ns: Option<u64>,
    consecutive_failures: u32,
    last_completed: Option<CheckpointId>,
    final_state: FinalState,
    phase: Phase,
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Coordinator {
    /// A coordinator for `participants` participants whose first checkpoint will be
    /// `first_id`; the first periodic trigger is due at `now_ns + interval`.
    ///
    /// Panics if `participants` or `cfg.max_concurrent` is zero.
    pub fn new(
        cfg: CoordinatorConfig,
        participants: usize,
        first_id: CheckpointId,
        now_ns: u64,
    ) -> Self {
        assert!(
            participants >= 1,
            "a checkpoint needs at least one participant"
        );
        assert!(
            cfg.max_concurrent >= 1,
            "max_concurrent must be at least 1, got 0"
        );
        let next_periodic_ns = cfg.interval.map(|i| now_ns.saturating_add(nanos(i)));
        Self {
            cfg,
            participants,
            next_id: first_id,
            in_flight: BTreeMap::new(),
            queued: VecDeque::new(),
            next_periodic_ns,
            last_end_ns: None,
            consecutive_failures: 0,
            last_completed: None,
            final_state: FinalState::NotRequested,
            phase: Phase::Running,
        }
    }

    /// Time passed: expire timed-out checkpoints, re-trigger a failed final checkpoint,
    /// trigger a periodic one when it is due and allowed.
    pub fn on_tick(&mut self, now_ns: u64) -> Vec<Decision> {
        self.step(now_ns, true, |_, _| {})
    }

    /// `participant` acked checkpoint `id`. Duplicate acks and acks for an unknown,
    /// aborted or completed id are ignored.
    ///
    /// Panics if `participant` is out of range.
    pub fn on_ack(&mut self, now_ns: u64, participant: usize, id: CheckpointId) -> Vec<Decision> {
        self.assert_participant(participant);
        self.step(now_ns, false, |c, out| {
            let Some(cp) = c.in_flight.get_mut(&id) else {
                return;
            };
            if cp.publishing || cp.acked[participant] {
                return;
            }
            cp.acked[participant] = true;
            cp.missing -= 1;
            if cp.missing == 0 {
                cp.publishing = true;
                out.push(Decision::Publish { id });
            }
        })
    }

    /// `participant` failed its part of checkpoint `id`: abort it. Ignored for an id that
    /// is not in flight or is already being published.
    ///
    /// Panics if `participant` is out of range.
    pub fn on_decline(
        &mut self,
        now_ns: u64,
        participant: usize,
        id: CheckpointId,
        reason: String,
    ) -> Vec<Decision> {
        self.assert_participant(participant);
        self.step(now_ns, false, |c, out| {
            if c.in_flight.get(&id).is_some_and(|cp| !cp.publishing) {
                let reason = AbortReason::Declined {
                    participant,
                    reason,
                };
                c.fail(now_ns, id, reason, out);
            }
        })
    }

    /// The manifest of `id` is published: the checkpoint completed. Ignored unless `id`
    /// was decided `Publish` and is still in flight.
    pub fn on_published(&mut self, now_ns: u64, id: CheckpointId) -> Vec<Decision> {
        self.step(now_ns, false, |c, out| {
            if c.in_flight.get(&id).is_some_and(|cp| cp.publishing) {
                c.complete(now_ns, id, out);
            }
        })
    }

    /// Publishing the manifest of `id` failed: abort it. Ignored unless `id` was decided
    /// `Publish` and is still in flight.
    pub fn on_publish_failed(
        &mut self,
        now_ns: u64,
        id: CheckpointId,
        reason: String,
    ) -> Vec<Decision> {
        self.step(now_ns, false, |c, out| {
            if c.in_flight.get(&id).is_some_and(|cp| cp.publishing) {
                c.fail(now_ns, id, AbortReason::PublishFailed { reason }, out);
            }
        })
    }

    /// A user asked for a savepoint: triggered at once if fewer than `max_concurrent` are
    /// in flight (ignoring `interval` and `min_pause`), queued otherwise. Ignored once the
    /// final checkpoint completed.
    pub fn request_savepoint(&mut self, now_ns: u64) -> Vec<Decision> {
        self.step(now_ns, false, |c, _| {
            if !matches!(c.final_state, FinalState::Completed(_)) {
                c.queued.push_back(CheckpointKind::Savepoint);
            }
        })
    }

    /// A bounded job's input is done: trigger a final checkpoint as soon as a slot is free
    /// (queued like a savepoint) and stop periodic triggering. A repeated request is
    /// ignored.
    pub fn request_final(&mut self, now_ns: u64) -> Vec<Decision> {
        self.step(now_ns, false, |c, _| {
            if c.final_state == FinalState::NotRequested {
                c.final_state = FinalState::Requested;
                c.queued.push_back(CheckpointKind::Final);
            }
        })
    }

    /// The earliest time at which [`Coordinator::on_tick`] would decide something (the next
    /// allowed periodic trigger, final re-trigger or expiry), if no other fact arrives
    /// first; `None` when nothing is timed. It may lie in the past: tick at once.
    pub fn next_wake_ns(&self) -> Option<u64> {
        if self.phase != Phase::Running {
            return None;
        }
        let timeout = nanos(self.cfg.timeout);
        let expiry = self
            .in_flight
            .values()
            .filter(|cp| !cp.publishing)
            .map(|cp| cp.triggered_ns.saturating_add(timeout))
            .min();
        let retry = match self.final_state {
            FinalState::RetryOnTick { failed_ns } if self.has_free_slot() => Some(failed_ns),
            _ => None,
        };
        [expiry, retry, self.periodic_allowed_ns()]
            .into_iter()
            .flatten()
            .min()
    }

    /// The checkpoints triggered and neither published nor aborted, ascending.
    pub fn in_flight(&self) -> Vec<CheckpointId> {
        self.in_flight.keys().copied().collect()
    }

    /// Failed checkpoints counted since the last completion.
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }

    /// The newest published checkpoint of any kind.
    pub fn last_completed(&self) -> Option<CheckpointId> {
        self.last_completed
    }

    fn assert_participant(&self, participant: usize) {
        assert!(
            participant < self.participants,
            "participant {participant} out of range: there are {}",
            self.participants
        );
    }

    /// Every handler: expire what is due, apply the fact, trigger what is allowed.
    fn step(
        &mut self,
        now_ns: u64,
        tick: bool,
        fact: impl FnOnce(&mut Self, &mut Vec<Decision>),
    ) -> Vec<Decision> {
        let mut out = Vec::new();
        if self.phase != Phase::Running {
            return out;
        }
        self.expire(now_ns, &mut out);
        if self.phase == Phase::Running {
            fact(self, &mut out);
        }
        if self.phase != Phase::Running {
            return out;
        }
        if tick {
            if let FinalState::RetryOnTick { .. } = self.final_state {
                self.final_state = FinalState::Requested;
                self.queued.push_back(CheckpointKind::Final);
            }
        }
        while self.has_free_slot() {
            let Some(kind) = self.queued.pop_front() else {
                break;
            };
            self.trigger(now_ns, kind, &mut out);
        }
        if tick && self.periodic_allowed_ns().is_some_and(|at| now_ns >= at) {
            self.trigger(now_ns, CheckpointKind::Periodic, &mut out);
            self.next_periodic_ns = self.cfg.interval.map(|i| now_ns.saturating_add(nanos(i)));
        }
        if let FinalState::Completed(id) = self.final_state {
            if self.in_flight.is_empty() && self.queued.is_empty() {
                self.phase = Phase::Finished;
                out.push(Decision::Finished { id });
            }
        }
        out
    }

    fn has_free_slot(&self) -> bool {
        self.in_flight.len() < self.cfg.max_concurrent
    }

    /// When a periodic trigger is allowed given the current in-flight set, or `None`
    /// while it is not allowed at any time.
    fn periodic_allowed_ns(&self) -> Option<u64> {
        if self.phase != Phase::Running || self.final_state != FinalState::NotRequested {
            return None;
        }
        let due = self.next_periodic_ns?;
        let limit = if self.cfg.min_pause > Duration::ZERO {
            1
        } else {
            self.cfg.max_concurrent
        };
        if self.in_flight.len() >= limit || !self.queued.is_empty() {
            return None;
        }
        let pause_end = self
            .last_end_ns
            .map_or(0, |end| end.saturating_add(nanos(self.cfg.min_pause)));
        Some(due.max(pause_end))
    }

    fn trigger(&mut self, now_ns: u64, kind: CheckpointKind, out: &mut Vec<Decision>) {
        let id = self.next_id;
        self.next_id = CheckpointId(id.0.checked_add(1).expect("checkpoint ids exhausted"));
        self.in_flight.insert(
            id,
            InFlight {
                kind,
                triggered_ns: now_ns,
                acked: vec![false; self.participants],
                missing: self.participants,
                publishing: false,
            },
        );
        out.push(Decision::Trigger { id, kind });
    }

    fn expire(&mut self, now_ns: u64, out: &mut Vec<Decision>) {
        let timeout = nanos(self.cfg.timeout);
        let due: Vec<CheckpointId> = self
            .in_flight
            .iter()
            .filter(|(_, cp)| !cp.publishing && now_ns >= cp.triggered_ns.saturating_add(timeout))
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            if self.phase != Phase::Running {
                return;
            }
            let cp = &self.in_flight[&id];
            let reason = AbortReason::Expired {
                after: Duration::from_nanos(now_ns - cp.triggered_ns),
                missing: (0..self.participants).filter(|p| !cp.acked[*p]).collect(),
            };
            self.fail(now_ns, id, reason, out);
        }
    }

    /// Abort `id` for a failure (never for subsumption) and count it.
    fn fail(
        &mut self,
        now_ns: u64,
        id: CheckpointId,
        reason: AbortReason,
        out: &mut Vec<Decision>,
    ) {
        let cp = self
            .in_flight
            .remove(&id)
            .expect("failing a checkpoint in flight");
        self.last_end_ns = Some(now_ns);
        out.push(Decision::Abort {
            id,
            reason: reason.clone(),
        });
        let counts = cp.kind != CheckpointKind::Savepoint
            && self.last_completed.map_or(true, |last| id > last);
        if counts {
            self.consecutive_failures += 1;
            if self.consecutive_failures > self.cfg.tolerable_failures {
                out.push(Decision::FailJob {
                    id,
                    consecutive_failures: self.consecutive_failures,
                    last: reason,
                });
                self.phase = Phase::Failed;
                self.in_flight.clear();
                self.queued.clear();
                return;
            }
        }
        if cp.kind == CheckpointKind::Final {
            self.final_state = FinalState::RetryOnTick { failed_ns: now_ns };
        }
    }

    fn complete(&mut self, now_ns: u64, id: CheckpointId, out: &mut Vec<Decision>) {
        let cp = self
            .in_flight
            .remove(&id)
            .expect("completing a checkpoint in flight");
        self.last_end_ns = Some(now_ns);
        if self.last_completed.map_or(true, |last| id > last) {
            self.last_completed = Some(id);
            self.consecutive_failures = 0;
        }
        if cp.kind == CheckpointKind::Savepoint {
            return;
        }
        let subsumed: Vec<CheckpointId> = self
            .in_flight
            .range(..id)
            .filter(|(_, older)| older.kind != CheckpointKind::Savepoint)
            .map(|(older, _)| *older)
            .collect();
        for older in subsumed {
            self.in_flight.remove(&older);
            out.push(Decision::Abort {
                id: older,
                reason: AbortReason::Subsumed { by: id },
            });
        }
        out.push(Decision::NotifyComplete { id });
        if cp.kind == CheckpointKind::Final {
            self.final_state = FinalState::Completed(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, BTreeSet};

    const MS: u64 = 1_000_000;

    fn cfg(interval_ms: Option<u64>) -> CoordinatorConfig {
        CoordinatorConfig {
            interval: interval_ms.map(Duration::from_millis),
            timeout: Duration::from_secs(10),
            min_pause: Duration::ZERO,
            max_concurrent: 1,
            tolerable_failures: 0,
        }
    }

    fn with(
        interval_ms: Option<u64>,
        edit: impl FnOnce(&mut CoordinatorConfig),
        participants: usize,
    ) -> Coordinator {
        let mut c = cfg(interval_ms);
        edit(&mut c);
        Coordinator::new(c, participants, CheckpointId(1), 0)
    }

    fn id(n: u64) -> CheckpointId {
        CheckpointId(n)
    }

    fn trig(n: u64, kind: CheckpointKind) -> Decision {
        Decision::Trigger { id: id(n), kind }
    }

    fn periodic(n: u64) -> Decision {
        trig(n, CheckpointKind::Periodic)
    }

    fn notify(n: u64) -> Decision {
        Decision::NotifyComplete { id: id(n) }
    }

    fn abort(n: u64, reason: AbortReason) -> Decision {
        Decision::Abort { id: id(n), reason }
    }

    fn declined(p: usize) -> AbortReason {
        AbortReason::Declined {
            participant: p,
            reason: "disk full".into(),
        }
    }

    /// Every participant acks `n` at `now`; what they decided, together.
    fn ack_all(c: &mut Coordinator, now: u64, n: u64) -> Vec<Decision> {
        (0..c.participants)
            .flat_map(|p| c.on_ack(now, p, id(n)))
            .collect()
    }

    /// Every participant acks `n`, the shell publishes it; what publishing decided.
    fn complete(c: &mut Coordinator, now: u64, n: u64) -> Vec<Decision> {
        assert_eq!(ack_all(c, now, n), vec![Decision::Publish { id: id(n) }]);
        c.on_published(now, id(n))
    }

    #[test]
    fn ids_strictly_increase_from_first_id() {
        let mut c = Coordinator::new(
            CoordinatorConfig {
                max_concurrent: 3,
                ..cfg(Some(100))
            },
            1,
            CheckpointId(41),
            0,
        );
        assert_eq!(
            c.request_savepoint(MS),
            vec![trig(41, CheckpointKind::Savepoint)]
        );
        assert_eq!(c.on_tick(100 * MS), vec![periodic(42)]);
        assert_eq!(
            c.request_final(101 * MS),
            vec![trig(43, CheckpointKind::Final)]
        );
        assert_eq!(c.in_flight(), vec![id(41), id(42), id(43)]);
    }

    #[test]
    fn first_periodic_trigger_is_due_one_interval_after_new() {
        let mut c = Coordinator::new(cfg(Some(100)), 1, CheckpointId(1), 5 * MS);
        assert_eq!(c.next_wake_ns(), Some(105 * MS));
        assert_eq!(c.on_tick(105 * MS - 1), vec![]);
        assert_eq!(c.on_tick(105 * MS), vec![periodic(1)]);
    }

    #[test]
    fn periodic_triggers_are_spaced_start_to_start() {
        let mut c = with(Some(100), |_| {}, 1);
        assert_eq!(c.on_tick(100 * MS), vec![periodic(1)]);
        assert_eq!(complete(&mut c, 130 * MS, 1), vec![notify(1)]);
        assert_eq!(c.next_wake_ns(), Some(200 * MS), "not 130 + 100");
        assert_eq!(c.on_tick(200 * MS - 1), vec![]);
        assert_eq!(c.on_tick(200 * MS), vec![periodic(2)]);
    }

    #[test]
    fn a_held_back_periodic_trigger_fires_once_allowed_and_the_next_is_an_interval_later() {
        let mut c = with(Some(100), |_| {}, 1);
        assert_eq!(c.on_tick(100 * MS), vec![periodic(1)]);
        assert_eq!(c.on_tick(200 * MS), vec![], "one in flight already");
        assert_eq!(complete(&mut c, 250 * MS, 1), vec![notify(1)]);
        assert_eq!(
            c.next_wake_ns(),
            Some(250 * MS),
            "allowed since the completion: tick at once"
        );
        assert_eq!(c.on_tick(250 * MS), vec![periodic(2)]);
        assert_eq!(complete(&mut c, 260 * MS, 2), vec![notify(2)]);
        assert_eq!(c.next_wake_ns(), Some(350 * MS));
    }

    #[test]
    fn periodic_trigger_waits_for_min_pause_after_the_last_completion() {
        let mut c = with(Some(100), |c| c.min_pause = Duration::from_millis(80), 1);
        assert_eq!(c.on_tick(100 * MS), vec![periodic(1)]);
        assert_eq!(complete(&mut c, 150 * MS, 1), vec![notify(1)]);
        assert_eq!(c.next_wake_ns(), Some(230 * MS));
        assert_eq!(c.on_tick(229 * MS), vec![]);
        assert_eq!(c.on_tick(230 * MS), vec![periodic(2)]);
    }

    #[test]
    fn min_pause_counts_from_a_failure_too() {
        let mut c = with(
            Some(100),
            |c| {
                c.min_pause = Duration::from_millis(80);
                c.tolerable_failures = 5;
            },
            1,
        );
        assert_eq!(c.on_tick(100 * MS), vec![periodic(1)]);
        let d = c.on_decline(170 * MS, 0, id(1), "disk full".into());
        assert_eq!(d, vec![abort(1, declined(0))]);
        assert_eq!(c.next_wake_ns(), Some(250 * MS));
        assert_eq!(c.on_tick(249 * MS), vec![]);
        assert_eq!(c.on_tick(250 * MS), vec![periodic(2)]);
    }

    #[test]
    fn min_pause_allows_only_one_in_flight() {
        let mut c = with(
            Some(100),
            |c| {
                c.min_pause = Duration::from_nanos(1);
                c.max_concurrent = 3;
            },
            1,
        );
        assert_eq!(c.on_tick(100 * MS), vec![periodic(1)]);
        assert_eq!(c.on_tick(200 * MS), vec![]);
        assert_eq!(c.on_tick(300 * MS), vec![]);
        assert_eq!(c.in_flight(), vec![id(1)]);
    }

    #[test]
    fn never_more_than_max_concurrent_in_flight() {
        let mut c = with(Some(100), |c| c.max_concurrent = 2, 1);
        assert_eq!(c.on_tick(100 * MS), vec![periodic(1)]);
        assert_eq!(c.on_tick(200 * MS), vec![periodic(2)]);
        assert_eq!(c.on_tick(300 * MS), vec![]);
        assert_eq!(c.in_flight(), vec![id(1), id(2)]);
        assert_eq!(complete(&mut c, 310 * MS, 1), vec![notify(1)]);
        assert_eq!(c.on_tick(310 * MS), vec![periodic(3)]);
        assert_eq!(c.in_flight(), vec![id(2), id(3)]);
    }

    #[test]
    fn no_periodic_trigger_without_an_interval() {
        let mut c = with(None, |_| {}, 1);
        assert_eq!(c.next_wake_ns(), None);
        assert_eq!(c.on_tick(0), vec![]);
        assert_eq!(c.on_tick(u64::MAX / 2), vec![]);
        let savepoint = c.request_savepoint(u64::MAX / 2);
        assert_eq!(savepoint, vec![trig(1, CheckpointKind::Savepoint)]);
    }

    #[test]
    fn publish_only_after_every_participant_acked() {
        let mut c = with(Some(100), |_| {}, 3);
        c.on_tick(100 * MS);
        assert_eq!(c.on_ack(101 * MS, 0, id(1)), vec![]);
        assert_eq!(c.on_ack(102 * MS, 2, id(1)), vec![]);
        assert_eq!(
            c.on_ack(103 * MS, 1, id(1)),
            vec![Decision::Publish { id: id(1) }]
        );
        assert_eq!(c.in_flight(), vec![id(1)], "in flight until published");
        assert_eq!(c.last_completed(), None);
    }

    #[test]
    fn notify_complete_only_after_published() {
        let mut c = with(Some(100), |_| {}, 2);
        c.on_tick(100 * MS);
        assert_eq!(
            ack_all(&mut c, 110 * MS, 1),
            vec![Decision::Publish { id: id(1) }]
        );
        assert_eq!(c.on_tick(150 * MS), vec![]);
        assert_eq!(c.on_published(160 * MS, id(1)), vec![notify(1)]);
        assert_eq!(c.last_completed(), Some(id(1)));
        assert_eq!(c.in_flight(), vec![]);
    }

    #[test]
    fn acks_for_unknown_aborted_or_completed_ids_are_ignored() {
        let mut c = with(Some(100), |c| c.tolerable_failures = 5, 1);
        assert_eq!(c.on_ack(MS, 0, id(99)), vec![], "unknown");
        c.on_tick(100 * MS);
        assert_eq!(c.on_published(100 * MS, id(1)), vec![], "not acked yet");
        c.on_decline(110 * MS, 0, id(1), "disk full".into());
        assert_eq!(c.on_ack(111 * MS, 0, id(1)), vec![], "aborted");
        assert_eq!(c.on_tick(200 * MS), vec![periodic(2)]);
        assert_eq!(complete(&mut c, 210 * MS, 2), vec![notify(2)]);
        assert_eq!(c.on_ack(211 * MS, 0, id(2)), vec![], "completed");
        assert_eq!(c.on_published(212 * MS, id(2)), vec![], "published twice");
        assert_eq!(c.on_publish_failed(213 * MS, id(2), "late".into()), vec![]);
        assert_eq!(c.on_decline(214 * MS, 0, id(2), "late".into()), vec![]);
        assert_eq!(c.last_completed(), Some(id(2)));
    }

    #[test]
    fn duplicate_acks_are_ignored() {
        let mut c = with(Some(100), |_| {}, 2);
        c.on_tick(100 * MS);
        assert_eq!(c.on_ack(101 * MS, 0, id(1)), vec![]);
        assert_eq!(
            c.on_ack(102 * MS, 0, id(1)),
            vec![],
            "a repeat is not participant 1"
        );
        assert_eq!(
            c.on_ack(103 * MS, 1, id(1)),
            vec![Decision::Publish { id: id(1) }]
        );
        assert_eq!(c.on_ack(104 * MS, 1, id(1)), vec![], "no second Publish");
    }

    #[test]
    fn expiry_at_trigger_plus_timeout_lists_the_missing_participants() {
        let mut c = with(
            Some(100),
            |c| {
                c.timeout = Duration::from_millis(50);
                c.tolerable_failures = 3;
            },
            3,
        );
        c.on_tick(100 * MS);
        c.on_ack(110 * MS, 1, id(1));
        assert_eq!(c.next_wake_ns(), Some(150 * MS));
        assert_eq!(c.on_tick(150 * MS - 1), vec![]);
        let expired = AbortReason::Expired {
            after: Duration::from_millis(50),
            missing: vec![0, 2],
        };
        assert_eq!(c.on_tick(150 * MS), vec![abort(1, expired)]);
        assert_eq!(c.consecutive_failures(), 1);
        assert_eq!(c.next_wake_ns(), Some(200 * MS));
    }

    #[test]
    fn an_ack_after_the_deadline_finds_the_checkpoint_expired() {
        let mut c = with(
            Some(100),
            |c| {
                c.timeout = Duration::from_millis(50);
                c.tolerable_failures = 3;
            },
            2,
        );
        c.on_tick(100 * MS);
        c.on_ack(110 * MS, 1, id(1));
        let expired = AbortReason::Expired {
            after: Duration::from_millis(60),
            missing: vec![0],
        };
        assert_eq!(c.on_ack(160 * MS, 0, id(1)), vec![abort(1, expired)]);
        assert_eq!(c.in_flight(), vec![]);
    }

    #[test]
    fn a_checkpoint_being_published_does_not_expire() {
        let mut c = with(Some(100), |c| c.timeout = Duration::from_millis(50), 1);
        c.on_tick(100 * MS);
        assert_eq!(
            ack_all(&mut c, 120 * MS, 1),
            vec![Decision::Publish { id: id(1) }]
        );
        assert_eq!(c.next_wake_ns(), None, "nothing timed while publishing");
        assert_eq!(c.on_tick(1_000 * MS), vec![]);
        assert_eq!(c.on_published(1_000 * MS, id(1)), vec![notify(1)]);
    }

    #[test]
    fn a_decline_aborts_at_once() {
        let mut c = with(Some(100), |c| c.tolerable_failures = 3, 2);
        c.on_tick(100 * MS);
        c.on_ack(101 * MS, 0, id(1));
        let d = c.on_decline(102 * MS, 1, id(1), "disk full".into());
        assert_eq!(d, vec![abort(1, declined(1))]);
        assert_eq!(c.in_flight(), vec![]);
        assert_eq!(c.consecutive_failures(), 1);
    }

    #[test]
    fn a_failed_publish_aborts_and_counts() {
        let mut c = with(Some(100), |c| c.tolerable_failures = 3, 1);
        c.on_tick(100 * MS);
        ack_all(&mut c, 110 * MS, 1);
        let reason = AbortReason::PublishFailed {
            reason: "fsync: EIO".into(),
        };
        let d = c.on_publish_failed(120 * MS, id(1), "fsync: EIO".into());
        assert_eq!(d, vec![abort(1, reason)]);
        assert_eq!(c.consecutive_failures(), 1);
        assert_eq!(c.on_published(121 * MS, id(1)), vec![]);
        assert_eq!(c.last_completed(), None);
    }

    #[test]
    fn a_completion_subsumes_every_older_checkpoint_in_flight() {
        let mut c = with(Some(100), |c| c.max_concurrent = 3, 1);
        for n in 1..=3 {
            assert_eq!(c.on_tick(n * 100 * MS), vec![periodic(n)]);
        }
        ack_all(&mut c, 300 * MS, 1);
        assert_eq!(
            ack_all(&mut c, 310 * MS, 2),
            vec![Decision::Publish { id: id(2) }]
        );
        let d = c.on_published(320 * MS, id(2));
        let subsumed = AbortReason::Subsumed { by: id(2) };
        assert_eq!(
            d,
            vec![abort(1, subsumed), notify(2)],
            "1 was acked, not published"
        );
        assert_eq!(c.in_flight(), vec![id(3)]);
        assert_eq!(c.on_published(321 * MS, id(1)), vec![]);
    }

    #[test]
    fn subsumed_checkpoints_do_not_count_as_failures() {
        let mut c = with(Some(100), |c| c.max_concurrent = 2, 1);
        c.on_tick(100 * MS);
        c.on_tick(200 * MS);
        let d = complete(&mut c, 210 * MS, 2);
        let subsumed = AbortReason::Subsumed { by: id(2) };
        assert_eq!(
            d,
            vec![abort(1, subsumed), notify(2)],
            "tolerable 0, yet no FailJob"
        );
        assert_eq!(c.consecutive_failures(), 0);
    }

    #[test]
    fn savepoints_are_neither_subsumed_nor_notified() {
        let mut c = with(Some(100), |c| c.max_concurrent = 3, 1);
        assert_eq!(
            c.request_savepoint(50 * MS),
            vec![trig(1, CheckpointKind::Savepoint)]
        );
        assert_eq!(c.on_tick(100 * MS), vec![periodic(2)]);
        assert_eq!(
            complete(&mut c, 110 * MS, 2),
            vec![notify(2)],
            "savepoint 1 survives"
        );
        assert_eq!(c.in_flight(), vec![id(1)]);
        assert_eq!(
            complete(&mut c, 120 * MS, 1),
            vec![],
            "published, not notified"
        );
        assert_eq!(c.last_completed(), Some(id(2)));
        assert_eq!(
            c.request_savepoint(130 * MS),
            vec![trig(3, CheckpointKind::Savepoint)]
        );
        assert_eq!(complete(&mut c, 140 * MS, 3), vec![]);
        assert_eq!(c.last_completed(), Some(id(3)));
    }

    #[test]
    fn consecutive_failures_count_and_reset_on_completion() {
        let mut c = with(Some(100), |c| c.tolerable_failures = 5, 1);
        for n in 1..=3 {
            c.on_tick(n * 100 * MS);
            c.on_decline(n * 100 * MS + 1, 0, id(n), "disk full".into());
            assert_eq!(c.consecutive_failures(), n as u32);
        }
        c.on_tick(400 * MS);
        complete(&mut c, 410 * MS, 4);
        assert_eq!(c.consecutive_failures(), 0);
    }

    #[test]
    fn fail_job_exactly_when_failures_exceed_tolerable() {
        let mut c = with(Some(100), |c| c.tolerable_failures = 2, 1);
        for n in 1..=2 {
            c.on_tick(n * 100 * MS);
            let d = c.on_decline(n * 100 * MS + 1, 0, id(n), "disk full".into());
            assert_eq!(d, vec![abort(n, declined(0))], "failure {n} is tolerated");
        }
        c.on_tick(300 * MS);
        let d = c.on_decline(301 * MS, 0, id(3), "disk full".into());
        let fail = Decision::FailJob {
            id: id(3),
            consecutive_failures: 3,
            last: declined(0),
        };
        assert_eq!(d, vec![abort(3, declined(0)), fail]);
    }

    #[test]
    fn tolerable_zero_fails_the_job_at_the_first_failure() {
        let mut c = with(Some(100), |c| c.timeout = Duration::from_millis(10), 1);
        c.on_tick(100 * MS);
        let expired = AbortReason::Expired {
            after: Duration::from_millis(10),
            missing: vec![0],
        };
        let fail = Decision::FailJob {
            id: id(1),
            consecutive_failures: 1,
            last: expired.clone(),
        };
        assert_eq!(c.on_tick(110 * MS), vec![abort(1, expired), fail]);
    }

    #[test]
    fn a_failed_job_decides_nothing_more() {
        let mut c = with(Some(100), |c| c.max_concurrent = 2, 1);
        c.on_tick(100 * MS);
        c.on_tick(200 * MS);
        c.on_decline(201 * MS, 0, id(1), "disk full".into());
        assert_eq!(c.in_flight(), vec![]);
        assert_eq!(c.next_wake_ns(), None);
        assert_eq!(c.on_tick(1_000 * MS), vec![]);
        assert_eq!(c.on_ack(1_000 * MS, 0, id(2)), vec![]);
        assert_eq!(c.request_savepoint(1_000 * MS), vec![]);
        assert_eq!(c.request_final(1_000 * MS), vec![]);
    }

    #[test]
    fn a_failure_older_than_the_last_completion_is_not_counted() {
        let mut c = with(Some(100), |c| c.max_concurrent = 2, 1);
        c.on_tick(100 * MS);
        assert_eq!(
            c.request_savepoint(110 * MS),
            vec![trig(2, CheckpointKind::Savepoint)]
        );
        complete(&mut c, 120 * MS, 2);
        let d = c.on_decline(130 * MS, 0, id(1), "disk full".into());
        assert_eq!(
            d,
            vec![abort(1, declined(0))],
            "tolerable 0, yet no FailJob"
        );
        assert_eq!(c.consecutive_failures(), 0);
    }

    #[test]
    fn savepoint_failures_are_not_counted() {
        let mut c = with(Some(100), |_| {}, 1);
        c.request_savepoint(10 * MS);
        let d = c.on_decline(20 * MS, 0, id(1), "disk full".into());
        assert_eq!(d, vec![abort(1, declined(0))]);
        assert_eq!(c.consecutive_failures(), 0);
    }

    #[test]
    fn savepoints_bypass_interval_and_min_pause() {
        let mut c = with(Some(100), |c| c.min_pause = Duration::from_secs(60), 1);
        assert_eq!(
            c.request_savepoint(MS),
            vec![trig(1, CheckpointKind::Savepoint)]
        );
        complete(&mut c, 2 * MS, 1);
        assert_eq!(
            c.request_savepoint(3 * MS),
            vec![trig(2, CheckpointKind::Savepoint)]
        );
    }

    #[test]
    fn savepoints_queue_until_a_slot_frees() {
        let mut c = with(Some(100), |c| c.tolerable_failures = 5, 1);
        c.on_tick(100 * MS);
        assert_eq!(c.request_savepoint(110 * MS), vec![]);
        assert_eq!(c.request_savepoint(111 * MS), vec![]);
        assert_eq!(c.in_flight(), vec![id(1)]);
        let d = c.on_decline(120 * MS, 0, id(1), "disk full".into());
        let savepoint = trig(2, CheckpointKind::Savepoint);
        assert_eq!(d, vec![abort(1, declined(0)), savepoint]);
        assert_eq!(
            complete(&mut c, 130 * MS, 2),
            vec![trig(3, CheckpointKind::Savepoint)]
        );
    }

    #[test]
    fn queued_requests_go_before_a_due_periodic_trigger() {
        let mut c = with(Some(100), |_| {}, 1);
        c.on_tick(100 * MS);
        c.request_savepoint(110 * MS);
        assert_eq!(c.on_tick(200 * MS), vec![]);
        let d = complete(&mut c, 250 * MS, 1);
        assert_eq!(d, vec![notify(1), trig(2, CheckpointKind::Savepoint)]);
        assert_eq!(c.on_tick(250 * MS), vec![], "the savepoint holds the slot");
    }

    #[test]
    fn final_request_triggers_completes_notifies_and_finishes() {
        let mut c = with(Some(100), |_| {}, 2);
        assert_eq!(
            c.request_final(50 * MS),
            vec![trig(1, CheckpointKind::Final)]
        );
        assert_eq!(c.request_final(51 * MS), vec![], "one final at a time");
        let d = complete(&mut c, 60 * MS, 1);
        assert_eq!(d, vec![notify(1), Decision::Finished { id: id(1) }]);
        assert_eq!(c.next_wake_ns(), None);
        assert_eq!(c.on_tick(1_000 * MS), vec![]);
        assert_eq!(c.request_savepoint(1_000 * MS), vec![]);
    }

    #[test]
    fn no_periodic_trigger_after_the_final_request() {
        let mut c = with(Some(100), |c| c.max_concurrent = 2, 1);
        c.on_tick(100 * MS);
        assert_eq!(
            c.request_final(150 * MS),
            vec![trig(2, CheckpointKind::Final)]
        );
        assert_eq!(c.on_tick(200 * MS), vec![]);
        assert_eq!(c.on_tick(300 * MS), vec![]);
        let d = complete(&mut c, 310 * MS, 2);
        let subsumed = AbortReason::Subsumed { by: id(2) };
        let want = vec![
            abort(1, subsumed),
            notify(2),
            Decision::Finished { id: id(2) },
        ];
        assert_eq!(d, want);
    }

    #[test]
    fn a_queued_final_request_waits_for_a_slot() {
        let mut c = with(Some(100), |_| {}, 1);
        c.on_tick(100 * MS);
        assert_eq!(c.request_final(110 * MS), vec![]);
        let d = complete(&mut c, 120 * MS, 1);
        assert_eq!(d, vec![notify(1), trig(2, CheckpointKind::Final)]);
    }

    #[test]
    fn a_failed_final_checkpoint_is_retriggered_on_the_next_tick() {
        let mut c = with(Some(100), |c| c.tolerable_failures = 3, 1);
        c.request_final(10 * MS);
        let d = c.on_decline(20 * MS, 0, id(1), "disk full".into());
        assert_eq!(d, vec![abort(1, declined(0))], "not in the same call");
        assert_eq!(c.next_wake_ns(), Some(20 * MS));
        assert_eq!(c.on_tick(21 * MS), vec![trig(2, CheckpointKind::Final)]);
        let d = complete(&mut c, 30 * MS, 2);
        assert_eq!(d, vec![notify(2), Decision::Finished { id: id(2) }]);
    }

    #[test]
    fn a_final_failure_beyond_tolerable_fails_the_job() {
        let mut c = with(Some(100), |_| {}, 1);
        c.request_final(10 * MS);
        let d = c.on_decline(20 * MS, 0, id(1), "disk full".into());
        let fail = Decision::FailJob {
            id: id(1),
            consecutive_failures: 1,
            last: declined(0),
        };
        assert_eq!(d, vec![abort(1, declined(0)), fail]);
        assert_eq!(c.on_tick(30 * MS), vec![], "no re-trigger");
    }

    #[test]
    fn finished_waits_for_savepoints_in_flight() {
        let mut c = with(Some(100), |c| c.max_concurrent = 2, 1);
        c.request_savepoint(10 * MS);
        assert_eq!(
            c.request_final(20 * MS),
            vec![trig(2, CheckpointKind::Final)]
        );
        assert_eq!(complete(&mut c, 30 * MS, 2), vec![notify(2)]);
        assert_eq!(
            complete(&mut c, 40 * MS, 1),
            vec![Decision::Finished { id: id(2) }]
        );
    }

    #[test]
    fn next_wake_ns_is_the_earliest_trigger_or_expiry() {
        let mut c = with(
            Some(100),
            |c| {
                c.timeout = Duration::from_millis(30);
                c.max_concurrent = 2;
                c.tolerable_failures = 5;
            },
            1,
        );
        assert_eq!(c.next_wake_ns(), Some(100 * MS));
        c.on_tick(100 * MS);
        assert_eq!(
            c.next_wake_ns(),
            Some(130 * MS),
            "expiry before the next trigger"
        );
        c.on_tick(130 * MS);
        assert_eq!(c.next_wake_ns(), Some(200 * MS));
        c.on_tick(200 * MS);
        c.request_savepoint(210 * MS);
        assert_eq!(c.next_wake_ns(), Some(230 * MS), "periodic 3 expires first");
        c.on_tick(230 * MS);
        assert_eq!(c.next_wake_ns(), Some(240 * MS), "then the savepoint");
    }

    #[test]
    fn next_wake_ns_is_none_when_nothing_is_timed() {
        let mut c = with(None, |_| {}, 1);
        assert_eq!(c.next_wake_ns(), None);
        c.request_savepoint(10 * MS);
        assert_eq!(c.next_wake_ns(), Some(10 * MS + 10_000 * MS), "its expiry");
        ack_all(&mut c, 20 * MS, 1);
        assert_eq!(c.next_wake_ns(), None, "publishing does not expire");
    }

    #[test]
    #[should_panic(expected = "participant 2 out of range")]
    fn an_ack_from_an_unknown_participant_panics() {
        let mut c = with(Some(100), |_| {}, 2);
        c.on_ack(0, 2, id(1));
    }

    #[derive(Clone, Debug)]
    enum Event {
        Tick,
        /// Jump to `next_wake_ns` and tick there.
        WakeTick,
        Ack(usize, usize),
        Decline(usize, usize),
        Published(usize),
        PublishFailed(usize),
        Savepoint,
        Final,
    }

    fn event() -> impl Strategy<Value = (u64, Event)> {
        let e = prop_oneof![
            3 => Just(Event::Tick),
            2 => Just(Event::WakeTick),
            8 => (0..3usize, any::<usize>()).prop_map(|(p, i)| Event::Ack(p, i)),
            1 => (0..3usize, any::<usize>()).prop_map(|(p, i)| Event::Decline(p, i)),
            3 => any::<usize>().prop_map(Event::Published),
            1 => any::<usize>().prop_map(Event::PublishFailed),
            1 => Just(Event::Savepoint),
            1 => Just(Event::Final),
        ];
        (0..40 * MS, e)
    }

    fn config() -> impl Strategy<Value = (CoordinatorConfig, usize, u64)> {
        (
            proptest::option::weighted(0.8, 5..50u64),
            5..100u64,
            prop_oneof![Just(0u64), 1..30u64],
            1..=3usize,
            0..=3u32,
            1..=3usize,
            0..1_000u64,
        )
            .prop_map(|(interval, timeout, pause, max, tolerable, parts, first)| {
                let cfg = CoordinatorConfig {
                    interval: interval.map(Duration::from_millis),
                    timeout: Duration::from_millis(timeout),
                    min_pause: Duration::from_millis(pause),
                    max_concurrent: max,
                    tolerable_failures: tolerable,
                };
                (cfg, parts, first)
            })
    }

    /// Picks one of `ids`, or (one time in `ids.len() + 1`) an id never triggered.
    fn pick(ids: &[CheckpointId], i: usize) -> CheckpointId {
        ids.get(i % (ids.len() + 1))
            .copied()
            .unwrap_or(CheckpointId(u64::MAX / 2))
    }

    proptest! {
        /// Random facts in random order keep the coordinator's invariants, and
        /// `next_wake_ns` is exact after every step.
        #[test]
        fn random_event_sequences_keep_the_invariants(
            (cfg, participants, first) in config(),
            events in proptest::collection::vec(event(), 0..150),
        ) {
            let max_concurrent = cfg.max_concurrent;
            let tolerable = cfg.tolerable_failures;
            let mut c = Coordinator::new(cfg, participants, CheckpointId(first), 0);
            let mut now = 0u64;
            let mut acks: BTreeMap<CheckpointId, BTreeSet<usize>> = BTreeMap::new();
            let mut publishing: BTreeSet<CheckpointId> = BTreeSet::new();
            let mut last_trigger: Option<CheckpointId> = None;
            let mut last_notified: Option<CheckpointId> = None;
            let mut kinds: BTreeMap<CheckpointId, CheckpointKind> = BTreeMap::new();
            let mut over = false;
            for (dt, ev) in events {
                now += dt;
                let flight = c.in_flight();
                let waiting: Vec<CheckpointId> = publishing.iter().copied().collect();
                let mut published = None;
                let out = match ev {
                    Event::Tick => c.on_tick(now),
                    Event::WakeTick => {
                        now = now.max(c.next_wake_ns().unwrap_or(now));
                        c.on_tick(now)
                    }
                    Event::Ack(p, i) => {
                        let p = p % participants;
                        let id = pick(&flight, i);
                        acks.entry(id).or_default().insert(p);
                        c.on_ack(now, p, id)
                    }
                    Event::Decline(p, i) => {
                        c.on_decline(now, p % participants, pick(&flight, i), "no".into())
                    }
                    Event::Published(i) => {
                        let id = pick(&waiting, i);
                        published = Some(id);
                        c.on_published(now, id)
                    }
                    Event::PublishFailed(i) => {
                        c.on_publish_failed(now, pick(&waiting, i), "no".into())
                    }
                    Event::Savepoint => c.request_savepoint(now),
                    Event::Final => c.request_final(now),
                };
                if over {
                    prop_assert!(out.is_empty(), "decided {:?} after the job failed or finished", out);
                }
                for d in &out {
                    match d {
                        Decision::Trigger { id, kind } => {
                            prop_assert!(id.0 >= first);
                            prop_assert!(last_trigger.map_or(true, |l| *id > l), "{} after {:?}", id, last_trigger);
                            last_trigger = Some(*id);
                            kinds.insert(*id, *kind);
                        }
                        Decision::Publish { id } => {
                            let acked = acks.get(id).map_or(0, BTreeSet::len);
                            prop_assert_eq!(acked, participants, "{} published early", id);
                            publishing.insert(*id);
                        }
                        Decision::NotifyComplete { id } => {
                            prop_assert_eq!(published, Some(*id), "notified before published");
                            prop_assert!(last_notified.map_or(true, |l| *id > l));
                            prop_assert_ne!(kinds[id], CheckpointKind::Savepoint);
                            last_notified = Some(*id);
                        }
                        Decision::Abort { id, reason } => {
                            prop_assert!(flight.contains(id) || kinds.contains_key(id));
                            if let AbortReason::Subsumed { by } = reason {
                                prop_assert!(by > id);
                            }
                            publishing.remove(id);
                        }
                        Decision::FailJob { consecutive_failures, .. } => {
                            prop_assert_eq!(*consecutive_failures, tolerable + 1);
                            over = true;
                        }
                        Decision::Finished { id } => {
                            prop_assert_eq!(kinds[id], CheckpointKind::Final);
                            prop_assert_eq!(last_notified, Some(*id));
                            over = true;
                        }
                    }
                }
                if let Some(id) = published {
                    publishing.remove(&id);
                }
                publishing.retain(|id| c.in_flight.contains_key(id));
                prop_assert!(c.in_flight().len() <= max_concurrent);
                match c.next_wake_ns() {
                    Some(wake) if wake > now => {
                        prop_assert!(c.clone().on_tick(now).is_empty(), "decided before wake {}", wake);
                        prop_assert!(c.clone().on_tick(wake - 1).is_empty(), "decided before wake {}", wake);
                        prop_assert!(!c.clone().on_tick(wake).is_empty(), "nothing at wake {}", wake);
                    }
                    Some(_) => prop_assert!(!c.clone().on_tick(now).is_empty(), "overdue wake decided nothing"),
                    None => prop_assert!(c.clone().on_tick(now + 1_000_000 * MS).is_empty()),
                }
            }
        }
    }
}
