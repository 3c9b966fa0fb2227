//! Deterministic key hashing: key → 64-bit hash → `KeyGroup`. The hash must be the same
//! on every core, in every run and on every machine, because key groups name where keyed
//! state lives in a checkpoint. `std`'s `RandomState` is seeded per process and so is
//! never used here.

use std::hash::{Hash, Hasher};

use crate::ids::KeyGroup;

/// The default number of key groups (the most partitions a keyed operator can have).
pub const DEFAULT_MAX_KEY_GROUPS: u16 = 128;

/// A fixed, seedless 64-bit hasher: FNV-1a over the bytes, finished with the murmur3
/// 64-bit finaliser so that nearby keys spread over all key groups.
#[derive(Clone, Copy, Debug)]
pub struct StableHasher {
    state: u64,
}

impl Default for StableHasher {
    fn default() -> Self {
        Self {
            state: 0xcbf2_9ce4_8422_2325,
        }
    }
}

impl Hasher for StableHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.state ^= u64::from(b);
            self.state = self.state.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    #[inline]
    fn write_u64(&mut self, v: u64) {
        // One multiply-xor round per word instead of eight byte rounds.
        self.state ^= v;
        self.state = self.state.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        self.state ^= self.state >> 29;
    }

    #[inline]
    fn finish(&self) -> u64 {
        let mut h = self.state;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^= h >> 33;
        h
    }
}

/// The stable hash of `key`.
#[inline]
pub fn stable_hash<K: Hash + ?Sized>(key: &K) -> u64 {
    let mut h = StableHasher::default();
    key.hash(&mut h);
    h.finish()
}

/// The key group of `key` among `max_key_groups` groups.
#[inline]
pub fn key_group_of<K: Hash + ?Sized>(key: &K, max_key_groups: u16) -> KeyGroup {
    debug_assert!(max_key_groups >= 1);
    KeyGroup((stable_hash(key) % u64::from(max_key_groups)) as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_pinned_so_checkpoints_stay_readable() {
        // These values are part of the checkpoint format: a key must land in the same
        // key group in every build. Changing them is a format break.
        let pinned = [
            key_group_of("u1", 128).0,
            key_group_of("u2", 128).0,
            key_group_of(&42u64, 128).0,
        ];
        assert_eq!(pinned, [119, 96, 83]);
    }

    #[test]
    fn keys_spread_over_all_groups() {
        let mut counts = [0u32; 128];
        for i in 0..128_000u64 {
            counts[key_group_of(&format!("user-{i}"), 128).0 as usize] += 1;
        }
        let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
        assert!(
            *min > 800 && *max < 1200,
            "uneven spread: min {min}, max {max}"
        );
    }
}
