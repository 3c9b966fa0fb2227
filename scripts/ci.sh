#!/usr/bin/env bash
# What CI runs: formatting, lints, the loom models, the README's test command
# (scripts/test, exactly as a user runs it), and a compile check of the benches.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
    echo "ci: cargo is not installed" >&2
    exit 1
fi
rustup component add rustfmt clippy >/dev/null 2>&1 || true
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== loom models of the ring and the doorbell"
CARGO_TARGET_DIR=target/loom cargo test -p rill-engine --features loom --lib --release ring::loom
echo "== scripts/test (the README's test command: installs redis-server when missing)"
scripts/test
echo "== criterion benches compile (perf/benches; built in the test profile, not run)"
cargo test --workspace --benches --no-run
