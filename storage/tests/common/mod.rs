//! Helpers shared by the storage integration tests.
#![allow(dead_code)]

use rill_storage::*;
use std::path::Path;

pub fn owner(i: u32) -> Owner {
    Owner::new(
        OperatorId(7),
        PartitionId(i),
        KeyGroupRange::new(i * 8, i * 8 + 8),
    )
}

pub fn small_cfg() -> LogConfig {
    LogConfig {
        segment_bytes: 64 << 10,
        max_write_bytes: 8 << 10,
    }
}

/// Opens a blocking std-file writer (no executor needed; futures resolve on `block_on`).
pub fn std_writer(root: &Path, core: u32) -> LogWriter<StdFs> {
    LogWriter::open_with(StdFs, root, CoreId(core), small_cfg()).unwrap()
}

pub fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    futures_lite::future::block_on(f)
}
