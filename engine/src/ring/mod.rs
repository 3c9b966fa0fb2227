//! ring placeholder being written
