//! Identifier newtypes shared by every storage module: log positions (`Lsn`), checkpoint
//! numbers, cores, operators, partitions and key-group ranges. Pure values; no IO here.

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! newtype {
    ($(#[$m:meta])* $name:ident($inner:ty), $fmt:literal) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub $inner);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, $fmt, self.0)
            }
        }
    };
}

newtype!(
    /// A byte position in one core's log. Lsns grow monotonically across that core's
    /// segments; a segment file is named after the Lsn of its first byte.
    Lsn(u64),
    "lsn {}"
);
newtype!(
    /// A checkpoint's number (Flink's checkpoint id / epoch). Larger is newer.
    CheckpointId(u64),
    "checkpoint {}"
);
newtype!(
    /// The core (shard) whose log writer wrote a record.
    CoreId(u32),
    "core {}"
);
newtype!(
    /// An operator of the job graph.
    OperatorId(u32),
    "operator {}"
);
newtype!(
    /// One parallel instance of an operator.
    PartitionId(u32),
    "partition {}"
);

impl Lsn {
    /// The Lsn `bytes` further on.
    pub fn advance(self, bytes: u64) -> Lsn {
        Lsn(self.0 + bytes)
    }

    /// `advance` for values read from disk (a segment named near `u64::MAX`): `None`
    /// where it would overflow.
    pub fn checked_advance(self, bytes: u64) -> Option<Lsn> {
        self.0.checked_add(bytes).map(Lsn)
    }
}

/// A half-open range of key groups `[start, end)`, the unit of keyed state that moves on
/// rescale.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct KeyGroupRange {
    /// First key group in the range.
    pub start: u32,
    /// One past the last key group in the range.
    pub end: u32,
}

impl KeyGroupRange {
    /// The range `[start, end)`.
    pub fn new(start: u32, end: u32) -> Self {
        assert!(start <= end, "key group range start {start} > end {end}");
        KeyGroupRange { start, end }
    }

    /// The range holding just `group`.
    pub fn single(group: u32) -> Self {
        KeyGroupRange::new(group, group + 1)
    }
}

impl fmt::Display for KeyGroupRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "key groups {}..{}", self.start, self.end)
    }
}

/// Whose state a record holds: an operator partition and the key groups it covers.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Owner {
    /// The operator.
    pub operator: OperatorId,
    /// The operator's parallel instance.
    pub partition: PartitionId,
    /// The key groups the record covers (empty for non-keyed state).
    pub key_groups: KeyGroupRange,
}

impl Owner {
    /// An owner for `operator`/`partition` covering `key_groups`.
    pub fn new(operator: OperatorId, partition: PartitionId, key_groups: KeyGroupRange) -> Self {
        Owner {
            operator,
            partition,
            key_groups,
        }
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {}",
            self.operator, self.partition, self.key_groups
        )
    }
}
