//! Test support: a simulated disk implementing [`LogFs`] that keeps, per file, what was
//! written (page cache) apart from what was fdatasync'ed (durable), injects write/sync
//! failures, short and torn writes on chosen operations, and on `crash` writes to the real
//! directory what a power cut could leave (durable bytes plus an arbitrary, seeded subset of
//! unsynced 512-byte sectors). Used by this crate's tests and usable by the engine's.

use crate::io::{LogFile, LogFs};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// Which operations fail, counted from 0 per operation type over the disk's lifetime.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FaultPlan {
    /// This write fails with EIO and writes nothing.
    pub fail_write: Option<u64>,
    /// This write writes only its first half and reports that (a short write).
    pub short_write: Option<u64>,
    /// This write writes its first half, then fails with EIO (a torn write).
    pub torn_write: Option<u64>,
    /// This fdatasync fails with EIO (and, as on Linux, the dirty data may be lost).
    pub fail_sync: Option<u64>,
    /// This segment creation fails with ENOSPC.
    pub fail_create: Option<u64>,
}

#[derive(Default)]
struct SimFileState {
    durable: Vec<u8>,
    cache: Vec<u8>,
}

#[derive(Default)]
struct SimState {
    files: BTreeMap<PathBuf, SimFileState>,
    plan: FaultPlan,
    writes: u64,
    syncs: u64,
    creates: u64,
}

/// A simulated disk (cheap to clone; clones share state). Single-threaded, like a core.
#[derive(Clone, Default)]
pub struct SimDisk {
    state: Rc<RefCell<SimState>>,
}

/// A file on a [`SimDisk`].
pub struct SimFile {
    disk: SimDisk,
    path: PathBuf,
}

fn eio() -> io::Error {
    io::Error::from_raw_os_error(libc::EIO)
}

impl SimDisk {
    /// A disk that fails as `plan` says.
    pub fn new(plan: FaultPlan) -> Self {
        let disk = SimDisk::default();
        disk.state.borrow_mut().plan = plan;
        disk
    }

    /// Number of writes and syncs issued so far.
    pub fn counts(&self) -> (u64, u64) {
        let s = self.state.borrow();
        (s.writes, s.syncs)
    }

    /// Writes every file to the real filesystem as a crash would leave it: durable bytes,
    /// plus, for each unsynced 512-byte sector, the new contents with probability 1/2
    /// (decided by `seed`). `seed = None` keeps exactly the durable bytes.
    pub fn crash(&self, seed: Option<u64>) -> io::Result<()> {
        let s = self.state.borrow();
        let mut x = seed.unwrap_or(0) | 1;
        let mut coin = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x & 1 == 1
        };
        for (path, f) in &s.files {
            let mut out = f.durable.clone();
            if seed.is_some() {
                out.resize(out.len().max(f.cache.len()), 0);
                for (i, sector) in f.cache.chunks(512).enumerate() {
                    let at = i * 512;
                    if out[at..at + sector.len()] != *sector && coin() {
                        out[at..at + sector.len()].copy_from_slice(sector);
                    }
                }
            }
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(path, &out)?;
        }
        Ok(())
    }
}

impl LogFs for SimDisk {
    type File = SimFile;

    async fn create_segment(&self, path: &Path, capacity: u64) -> io::Result<SimFile> {
        let mut s = self.state.borrow_mut();
        let n = s.creates;
        s.creates += 1;
        if s.plan.fail_create == Some(n) {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        if s.files.contains_key(path) || path.exists() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "segment exists",
            ));
        }
        let zeros = vec![0u8; capacity as usize];
        s.files.insert(
            path.to_path_buf(),
            SimFileState {
                durable: zeros.clone(),
                cache: zeros,
            },
        );
        Ok(SimFile {
            disk: self.clone(),
            path: path.to_path_buf(),
        })
    }
}

impl LogFile for SimFile {
    async fn write_at(&self, data: &[u8], pos: u64) -> io::Result<usize> {
        let mut s = self.disk.state.borrow_mut();
        let n = s.writes;
        s.writes += 1;
        let plan = s.plan.clone();
        let (len, fail) = if plan.fail_write == Some(n) {
            (0, true)
        } else if plan.short_write == Some(n) {
            (data.len() / 2, false)
        } else if plan.torn_write == Some(n) {
            (data.len() / 2, true)
        } else {
            (data.len(), false)
        };
        let f = s
            .files
            .get_mut(&self.path)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        let end = pos as usize + len;
        if f.cache.len() < end {
            f.cache.resize(end, 0);
        }
        f.cache[pos as usize..end].copy_from_slice(&data[..len]);
        if fail {
            Err(eio())
        } else {
            Ok(len)
        }
    }

    async fn sync_data(&self) -> io::Result<()> {
        let mut s = self.disk.state.borrow_mut();
        let n = s.syncs;
        s.syncs += 1;
        let fail = s.plan.fail_sync == Some(n);
        let f = s
            .files
            .get_mut(&self.path)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        if fail {
            // Linux may drop the dirty pages of a failed fsync: they never become durable.
            f.cache = f.durable.clone();
            return Err(eio());
        }
        f.durable = f.cache.clone();
        Ok(())
    }

    async fn close(self) -> io::Result<()> {
        Ok(())
    }
}

/// How many operator partitions the crash workload writes state for.
pub const MODEL_OWNERS: u32 = 4;

/// Owner `i` of the crash workload: operator 1, partition `i`, key groups `32i..32i+32`.
pub fn model_owner(i: u32) -> crate::Owner {
    crate::Owner::new(
        crate::OperatorId(1),
        crate::PartitionId(i),
        crate::KeyGroupRange::new(i * 32, i * 32 + 32),
    )
}

/// A deterministic workload for crash tests: the changes checkpoint `n` (from 1) makes to
/// owner `owner`'s `u64 -> u64` map, as (upserts, deletes), disjoint. Replaying 1..=n from an
/// empty map gives the state checkpoint n must restore.
pub fn model_changes(owner: u32, n: u64) -> (Vec<(u64, u64)>, Vec<u64>) {
    let mut x = (owner as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ n.wrapping_mul(0xD1B5_4A32_D192_ED03);
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut ups = BTreeMap::new();
    for _ in 0..64 {
        let k = next() % 512;
        ups.insert(k, next());
    }
    let mut deletes = Vec::new();
    for _ in 0..8 {
        let k = next() % 512;
        if !ups.contains_key(&k) && !deletes.contains(&k) {
            deletes.push(k);
        }
    }
    (ups.into_iter().collect(), deletes)
}

/// The state of `owner` after checkpoints `1..=n` of [`model_changes`].
pub fn model_state(owner: u32, n: u64) -> BTreeMap<u64, u64> {
    let mut m = BTreeMap::new();
    for i in 1..=n {
        let (ups, dels) = model_changes(owner, i);
        for k in dels {
            m.remove(&k);
        }
        m.extend(ups);
    }
    m
}
