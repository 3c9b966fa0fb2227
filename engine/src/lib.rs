//! rill-engine.
#![deny(unsafe_code)]
pub mod ring;
