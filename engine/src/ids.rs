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

/// This process's place in a job run as several processes (`rill run JOB --process i/N`,
/// or `process = "i/N"` in `job.toml`): process `index` of `count`. Process `i` owns the
/// Kafka partitions `p` with `p % N == i` (numbered over all the topics a source reads)
/// and writes its checkpoints under its own prefix, `process-<i>-of-<N>`. A job of one
/// process is `0/1` (the default).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Process {
    /// This process, `0..count`.
    pub index: u32,
    /// How many processes run the job (at least 1).
    pub count: u32,
}

impl Process {
    /// The job as one process.
    pub const SINGLE: Process = Process { index: 0, count: 1 };

    /// Whether the job runs as one process.
    pub fn is_single(self) -> bool {
        self.count == 1
    }

    /// Whether this process owns the item numbered `n` of a set spread over the
    /// processes by residue (a Kafka partition, numbered over all topics read).
    pub fn owns(self, n: usize) -> bool {
        n % self.count as usize == self.index as usize
    }

    /// The name of this process's prefix in the checkpoint store: `process-<i>-of-<N>`.
    pub fn prefix(self) -> String {
        format!("process-{}-of-{}", self.index, self.count)
    }

    /// The prefixes of every process of the job, in order.
    pub fn all_prefixes(self) -> Vec<String> {
        (0..self.count)
            .map(|index| Process { index, ..self }.prefix())
            .collect()
    }
}

impl Default for Process {
    fn default() -> Self {
        Process::SINGLE
    }
}

impl fmt::Display for Process {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl std::str::FromStr for Process {
    type Err = String;

    /// Parses `i/N` (`0 <= i < N`, `N >= 1`); the error says what was wrong.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (i, n) = s
            .trim()
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not of the form i/N (e.g. 0/3)"))?;
        let num = |what: &str, v: &str| {
            v.trim()
                .parse::<u32>()
                .map_err(|_| format!("{s:?}: the {what} {v:?} is not a whole number"))
        };
        let (index, count) = (num("process index", i)?, num("process count", n)?);
        if count == 0 {
            return Err(format!("{s:?}: the process count must be at least 1"));
        }
        if index >= count {
            return Err(format!(
                "{s:?}: the process index must be below the count (0..={})",
                count - 1
            ));
        }
        Ok(Process { index, count })
    }
}

impl TryFrom<String> for Process {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Process> for String {
    fn from(p: Process) -> String {
        p.to_string()
    }
}

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
    fn process_parses_i_of_n_and_names_what_is_wrong() {
        let p: Process = "2/3".parse().unwrap();
        assert_eq!(p, Process { index: 2, count: 3 });
        assert_eq!(p.to_string(), "2/3");
        assert_eq!(p.prefix(), "process-2-of-3");
        assert_eq!(
            p.all_prefixes(),
            ["process-0-of-3", "process-1-of-3", "process-2-of-3"]
        );
        assert!(p.owns(2) && p.owns(5) && !p.owns(3) && !p.owns(0));
        assert!(Process::SINGLE.owns(7) && Process::SINGLE.is_single());
        assert_eq!(" 0 / 1 ".parse::<Process>(), Ok(Process::SINGLE));
        for (bad, says) in [
            ("3/3", "below the count"),
            ("5/2", "below the count"),
            ("0/0", "at least 1"),
            ("1", "of the form i/N"),
            ("a/3", "not a whole number"),
            ("1/x", "not a whole number"),
            ("-1/3", "not a whole number"),
            ("", "of the form i/N"),
        ] {
            let e = bad.parse::<Process>().unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
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
