//! The messages of the checkpoint protocol between the coordinator (on the first core) and
//! every core's checkpoint participant, and what a core acks with. Pure data: rings carry
//! them; `core.rs` and `shell.rs` act on them.

use crate::ids::CheckpointId;
use rill_storage::RecordRef;
use serde::{Deserialize, Serialize};

/// Why a checkpoint was triggered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TriggerKind {
    /// By the interval.
    Periodic,
    /// Asked for by `rill savepoint`; never deleted by retention.
    Savepoint,
    /// The last one of a bounded (or stopped) job, after its input is done.
    Final,
}

/// From the coordinator to a core.
#[derive(Debug)]
pub(crate) enum ToCore {
    /// Every source partition on the core records its offset and emits the barrier.
    Trigger {
        /// The checkpoint.
        id: CheckpointId,
        /// Whether it is the final checkpoint of the job (its barrier is always aligned).
        last: bool,
    },
    /// Checkpoint `id` is complete (its manifest is published): sinks commit everything
    /// pre-committed up to it; after the final one, sources end.
    Complete {
        /// The checkpoint.
        id: CheckpointId,
        /// Whether it was the final checkpoint of the job.
        last: bool,
    },
    /// Checkpoint `id` failed: forget it.
    Abort {
        /// The checkpoint.
        id: CheckpointId,
    },
}

/// One source partition's position at a barrier.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceOffset {
    /// The source operator's name.
    pub operator: String,
    /// The partition.
    pub partition: u32,
    /// The offset of the next record it would have emitted.
    pub offset: u64,
    /// The position when one offset is not enough (`AsyncSourcePartition::position`:
    /// opaque bytes, e.g. an offset per Kafka partition). Absent in format version 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<Vec<u8>>,
}

/// One partition's share of a checkpoint, for `rill checkpoints --partitions`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionStats {
    /// What it is: "operator `totals` p1", "sink `csv` p0", "source `read` p0".
    pub name: String,
    /// From the trigger reaching its core to its barrier (start delay + alignment), µs.
    pub barrier_us: u64,
    /// Time spent at the barrier on its state (the synchronous part: freezing its key
    /// groups, and archiving any an older checkpoint had not archived yet), µs.
    pub sync_us: u64,
    /// Time spent archiving its frozen key groups after the barrier, in slices between
    /// rounds of the core's loop (part of the asynchronous part; wall-clock time inside
    /// the slices), µs.
    #[serde(default)]
    pub archive_us: u64,
    /// Bytes of snapshot records it wrote for this checkpoint.
    pub bytes: u64,
    /// Keys in its state.
    pub keys: u64,
}

/// A core's ack: every participant on it did its part and everything is durable.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CoreAck {
    /// The core's index in the job.
    pub core: usize,
    /// The checkpoint.
    pub id: CheckpointId,
    /// Every record the checkpoint needs from this core's log (whole chains).
    pub records: Vec<RecordRef>,
    /// Source offsets.
    pub offsets: Vec<SourceOffset>,
    /// When the trigger reached the core, ns on the job clock.
    pub triggered_ns: u64,
    /// Longest alignment at one of the core's multi-input points, µs.
    pub alignment_us: u64,
    /// Sum of the synchronous parts on the core, µs.
    pub sync_us: u64,
    /// Sum of the archiving after the barrier on the core (wall-clock time inside the
    /// archiving slices, so time the core was descheduled meanwhile counts), µs.
    pub archive_us: u64,
    /// From the last participant's report to durable (the asynchronous part), µs.
    pub async_us: u64,
    /// Bytes written to the log for this checkpoint (the incremental size).
    pub bytes_written: u64,
    /// Bytes of every record the checkpoint references on this core (the full size).
    pub bytes_total: u64,
    /// Records persisted as channel state (unaligned checkpoints).
    pub channel_records: u64,
    /// Per participant.
    pub partitions: Vec<PartitionStats>,
}

/// From a core to the coordinator.
#[derive(Debug)]
pub(crate) enum ToCoordinator {
    /// The core's part of a checkpoint is durable.
    Ack(Box<CoreAck>),
    /// The core cannot complete a checkpoint.
    Decline {
        /// The core.
        core: usize,
        /// The checkpoint.
        id: CheckpointId,
        /// Why, in words a user can act on.
        reason: String,
        /// The cause, when a restart cannot fix it (a full disk, ...).
        unfixable: Option<super::restart::Unfixable>,
    },
    /// Every source partition on the core reached the end of its input (or was stopped).
    SourcesFinished {
        /// The core.
        core: usize,
    },
    /// What the core was still waiting for when an expired checkpoint was aborted.
    Waiting {
        /// The core.
        core: usize,
        /// The checkpoint.
        id: CheckpointId,
        /// Which participants had not reported, which inputs alignment waited on.
        what: String,
    },
}
