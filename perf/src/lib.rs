//! rill-perf: microbenchmarks live in `benches/`; this library holds their shared helpers.
