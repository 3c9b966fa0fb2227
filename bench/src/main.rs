//! The `rill-bench` command; see the crate docs of `rill_bench` and bench/README.md.
fn main() {}
