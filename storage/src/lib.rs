//! rill-storage: the checkpoint log (see the crate README once written).
