//! rill-storage: the checkpoint log and snapshot store.
//!
//! Every core's log writer ([`LogWriter`]) appends framed records (see [`frame`]) to its own
//! segment files under `<dir>/core-<N>/` through io_uring (glommio DMA files, or
//! [`UringFs`] on a core's own polled [`Uring`]), group-commits
//! them and resolves each append only once its record is fdatasync'ed. A checkpoint becomes
//! complete when the coordinator publishes its [`Manifest`] (every record's reference plus
//! opaque metadata such as source offsets) atomically through [`CheckpointStore::publish`].
//! After a crash, [`recover`] truncates torn tails and finds the newest complete checkpoint;
//! its records are memory-mapped and read in place — CRC first, then rkyv's validated
//! access — so a 1 GB snapshot is usable without being copied or deserialized.
//!
//! Keyed state goes in as sorted `(K, V)` entries ([`archive_full`]), or as deltas since the
//! previous checkpoint chained to a base ([`archive_delta`]); [`ChainView`] looks keys up
//! across a chain in place and [`ChainView::fold`] compacts it into a new base. Retention
//! ([`CheckpointStore::retain`]) keeps the newest N complete checkpoints, every savepoint and
//! whatever the checkpoints still in flight may need.
//!
//! [`Remote`] keeps checkpoints in S3-compatible object storage: it uploads the log bytes a
//! manifest needs and the manifest, downloads a checkpoint into an empty directory before
//! [`recover`], and publishes a multi-process job's global manifest create-if-absent.
//!
//! The crate knows nothing of operators: owners are plain ids ([`Owner`]).
//!
//! ```
//! use rill_storage::*;
//!
//! let dir = tempfile::tempdir().unwrap();
//! let root = dir.path().to_path_buf();
//! let owner = Owner::new(OperatorId(1), PartitionId(0), KeyGroupRange::new(0, 64));
//!
//! // On a core: archive state at the barrier (synchronous), append it (asynchronous).
//! let ex = glommio::LocalExecutorBuilder::default().make().unwrap();
//! let records = ex.run(async {
//!     let log = LogWriter::open(&root, CoreId(0), LogConfig::default()).await.unwrap();
//!     let mut state: Vec<(u64, u64)> = (0..1000).map(|k| (k, k * 2)).collect();
//!     let full = archive_full(&mut state).unwrap();
//!     let r1 = log.append_full(CheckpointId(1), owner, &full).await.unwrap();
//!     let mut changed = vec![(7u64, 70u64)];
//!     let mut deleted = vec![8u64];
//!     let delta = archive_delta(&mut changed, &mut deleted).unwrap();
//!     let r2 = log.append_delta(CheckpointId(2), CheckpointId(1), owner, &delta).await.unwrap();
//!     log.close().await.unwrap();
//!     vec![r1, r2] // durable record references, acked to the coordinator
//! });
//!
//! // On the coordinator, once every partition acked: publish, then apply retention.
//! let store = CheckpointStore::new(&root);
//! store.publish(&Manifest::new(CheckpointId(2), records, b"source offsets".to_vec())).unwrap();
//! store.retain(3, &Default::default()).unwrap(); // nothing else is in flight
//!
//! // After a restart: recover, then read the state in place.
//! let recovered = recover(&root).unwrap();
//! let checkpoint = recovered.checkpoint.expect("checkpoint 2 is complete");
//! assert_eq!(checkpoint.id(), CheckpointId(2));
//! assert_eq!(checkpoint.metadata(), b"source offsets");
//! let chain = ChainView::<u64, u64>::open(checkpoint.chain(&owner).unwrap()).unwrap();
//! assert_eq!(chain.get(&7u64).map(|v| v.to_native()), Some(70));
//! assert_eq!(chain.get(&8u64), None);
//! assert_eq!(chain.get(&9u64).map(|v| v.to_native()), Some(18));
//! ```

pub mod checkpoint;
pub mod error;
pub mod frame;
pub mod ids;
pub mod io;
pub mod layout;
pub mod manifest;
mod mmap;
pub mod reader;
pub mod recovery;
pub mod remote;
pub mod retention;
pub mod snapshot;
pub mod testing;
pub mod uring;
pub mod writer;

pub use checkpoint::{Checkpoint, CheckpointInfo, CheckpointStore, Skipped};
pub use error::{ChainProblem, Corruption, Error, IoOp, Result};
pub use frame::{RecordKind, RecordRef, RecordSpec};
pub use ids::{CheckpointId, CoreId, KeyGroupRange, Lsn, OperatorId, Owner, PartitionId};
pub use io::{DmaFs, LogFile, LogFs, StdFs};
pub use manifest::Manifest;
pub use reader::{LogReader, RecordView};
pub use recovery::{recover, Recovered, RecoveryReport};
pub use remote::{GlobalManifest, GlobalOutcome, Remote};
pub use retention::RetentionReport;
pub use snapshot::{archive_delta, archive_full, ChainView, DeltaView, FullView};
pub use uring::{Uring, UringFs, UringSegment};
pub use writer::{LogConfig, LogWriter, WriterStats};
