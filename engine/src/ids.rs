//! Identifier newtypes shared across the engine: which core, which partition, which
//! operator, which key group, which checkpoint. Owns nothing else; bare integers never
//! cross module boundaries for these meanings.

use std::fmt;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $inner:ty, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        pub struct $name(pub $inner);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "{}"), self.0)
            }
        }
    };
}

id_type!(
    /// A CPU the job pins an executor to, as named by its `cores/<cpu>.toml` file.
    CoreId, usize, "cpu"
);
id_type!(
    /// One parallel instance of an operator, `0..parallelism`.
    PartitionId, u32, "p"
);
id_type!(
    /// An operator (a node of the job graph), numbered in the order it was added.
    OperatorId, u32, "op"
);
/// The unit of keyed state that moves between cores on rescale.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
pub struct KeyGroup(pub u16);

impl fmt::Display for KeyGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "kg{}", self.0)
    }
}
id_type!(
    /// A checkpoint's number (its epoch).
    CheckpointId, u64, "chk-"
);

impl PartitionId {
    /// The index of this partition as a `usize`, for indexing per-partition tables.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl KeyGroup {
    /// The partition that owns this key group when an operator has `parallelism`
    /// partitions and the job has `max_key_groups` key groups: contiguous ranges, as
    /// Flink assigns them (`kg * parallelism / max_key_groups`).
    pub fn partition(self, parallelism: u32, max_key_groups: u16) -> PartitionId {
        debug_assert!(parallelism >= 1 && parallelism <= u32::from(max_key_groups));
        PartitionId((u32::from(self.0) * parallelism) / u32::from(max_key_groups))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_group_ranges_are_contiguous_and_cover_every_partition() {
        for parallelism in 1..=16u32 {
            let owners: Vec<u32> = (0..128u16)
                .map(|kg| KeyGroup(kg).partition(parallelism, 128).0)
                .collect();
            assert!(
                owners.windows(2).all(|w| w[0] <= w[1]),
                "ranges are contiguous"
            );
            assert_eq!(owners[0], 0);
            assert_eq!(*owners.last().unwrap(), parallelism - 1);
            for p in 0..parallelism {
                assert!(
                    owners.contains(&p),
                    "partition {p} of {parallelism} owns a group"
                );
            }
        }
    }

    #[test]
    fn ids_display_with_their_prefix() {
        assert_eq!(CoreId(3).to_string(), "cpu3");
        assert_eq!(PartitionId(1).to_string(), "p1");
        assert_eq!(KeyGroup(7).to_string(), "kg7");
        assert_eq!(CheckpointId(12).to_string(), "chk-12");
    }
}
