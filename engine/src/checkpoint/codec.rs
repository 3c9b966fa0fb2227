//! What may be checkpointed, and how: keyed state entries `(K, V)` archived with rkyv per
//! key group (full snapshots, deltas, and folding a chain back into entries on restore),
//! and batches of records (channel state of unaligned checkpoints). The rkyv bounds are
//! spelled out once, in the blanket impls here, so that the pipeline API only asks for
//! `(K, V): Entry` or `T: Record`.

use rill_storage::{archive_delta, archive_full, ChainView, RecordView};
use rkyv::api::high::{HighDeserializer, HighSerializer, HighValidator};
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor;
use rkyv::ser::allocator::ArenaHandle;
use rkyv::util::AlignedVec;
use rkyv::vec::ArchivedVec;
use rkyv::{Archive, Archived, Deserialize, Serialize};

/// One key's state in a checkpoint: the pair `(K, V)` of a state table. Implemented for
/// every pair whose key is `Ord` and whose key and value rkyv can archive, validate and
/// deserialize (integers, strings, `Vec`s, tuples, `Option`s, and types with
/// `#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]`).
pub trait Entry: Sized {
    /// The key.
    type K;
    /// The value.
    type V;
    /// Sorts `entries` and archives them as a full snapshot.
    fn archive_full(entries: &mut Vec<(Self::K, Self::V)>) -> rill_storage::Result<AlignedVec>;
    /// Sorts and archives a delta: upserted entries and deleted keys.
    fn archive_delta(
        upserts: &mut Vec<(Self::K, Self::V)>,
        deletes: &mut Vec<Self::K>,
    ) -> rill_storage::Result<AlignedVec>;
    /// Validates a chain (full snapshot, then deltas) and returns its live entries.
    fn fold(chain: &[RecordView]) -> rill_storage::Result<Vec<(Self::K, Self::V)>>;
}

impl<K, V> Entry for (K, V)
where
    K: Ord + Archive,
    V: Archive,
    Vec<(K, V)>: for<'a> Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, rancor::Error>>,
    (Vec<(K, V)>, Vec<K>):
        for<'a> Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, rancor::Error>>,
    Archived<K>: Ord + Deserialize<K, HighDeserializer<rancor::Error>>,
    Archived<V>: Deserialize<V, HighDeserializer<rancor::Error>>,
    ArchivedVec<rkyv::tuple::ArchivedTuple2<Archived<K>, Archived<V>>>:
        for<'c> CheckBytes<HighValidator<'c, rancor::Error>>,
    rkyv::tuple::ArchivedTuple2<
        ArchivedVec<rkyv::tuple::ArchivedTuple2<Archived<K>, Archived<V>>>,
        ArchivedVec<Archived<K>>,
    >: for<'c> CheckBytes<HighValidator<'c, rancor::Error>>,
{
    type K = K;
    type V = V;

    fn archive_full(entries: &mut Vec<(K, V)>) -> rill_storage::Result<AlignedVec> {
        archive_full(entries)
    }

    fn archive_delta(
        upserts: &mut Vec<(K, V)>,
        deletes: &mut Vec<K>,
    ) -> rill_storage::Result<AlignedVec> {
        archive_delta(upserts, deletes)
    }

    fn fold(chain: &[RecordView]) -> rill_storage::Result<Vec<(K, V)>> {
        ChainView::<K, V>::open(chain)?.fold()
    }
}

/// A record type that can be persisted (the channel state of unaligned checkpoints).
/// Implemented for every type rkyv can archive, validate and deserialize.
pub trait Record: Sized {
    /// Archives a batch (a `Vec`, since rkyv archives owned vectors).
    #[allow(clippy::ptr_arg)]
    fn encode(batch: &Vec<Self>) -> rill_storage::Result<AlignedVec>;
    /// Validates and deserializes a batch archived by `encode`.
    fn decode(bytes: &[u8]) -> rill_storage::Result<Vec<Self>>;
}

impl<T> Record for T
where
    T: Archive,
    Vec<T>: for<'a> Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, rancor::Error>>,
    <Vec<T> as Archive>::Archived: for<'c> CheckBytes<HighValidator<'c, rancor::Error>>
        + Deserialize<Vec<T>, HighDeserializer<rancor::Error>>,
{
    #[allow(clippy::ptr_arg)]
    fn encode(batch: &Vec<T>) -> rill_storage::Result<AlignedVec> {
        rkyv::to_bytes::<rancor::Error>(batch)
            .map_err(|source| rill_storage::Error::Archive { source })
    }

    fn decode(bytes: &[u8]) -> rill_storage::Result<Vec<T>> {
        // Archives are 16-byte aligned in the log; copy into an aligned buffer when a
        // caller hands in bytes from elsewhere.
        let mut aligned = AlignedVec::<16>::with_capacity(bytes.len());
        aligned.extend_from_slice(bytes);
        rkyv::from_bytes::<Vec<T>, rancor::Error>(&aligned)
            .map_err(|source| rill_storage::Error::Archive { source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_of_records_round_trips() {
        let batch: Vec<(u32, String)> = (0..100).map(|i| (i, format!("r{i}"))).collect();
        let bytes = <(u32, String)>::encode(&batch).unwrap();
        assert_eq!(<(u32, String)>::decode(&bytes).unwrap(), batch);
        assert!(<(u32, String)>::decode(&bytes[..bytes.len() / 2]).is_err());
    }

    #[test]
    fn full_and_delta_archives_validate_as_their_views() {
        let mut full: Vec<(String, u64)> = vec![("b".into(), 2), ("a".into(), 1)];
        let bytes = <(String, u64)>::archive_full(&mut full).unwrap();
        let view = rill_storage::FullView::<String, u64>::from_bytes(&bytes).unwrap();
        assert_eq!(view.len(), 2);
        let mut ups = vec![("c".to_string(), 3u64)];
        let mut dels = vec!["a".to_string()];
        let d = <(String, u64)>::archive_delta(&mut ups, &mut dels).unwrap();
        let dv = rill_storage::DeltaView::<String, u64>::from_bytes(&d).unwrap();
        assert_eq!(dv.upserts().count(), 1);
        assert_eq!(dv.deletes().count(), 1);
    }
}
