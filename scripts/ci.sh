#!/usr/bin/env bash
# What CI runs: formatting, lints, then the README's test command.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
    echo "ci: cargo is not installed" >&2
    exit 1
fi
rustup component add rustfmt clippy >/dev/null 2>&1 || true
# The Redis tests (engine/tests/redis.rs) start a real redis-server on loopback.
if ! command -v redis-server >/dev/null 2>&1; then
    echo "== installing redis-server"
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get install -y redis-server || { $SUDO apt-get update && $SUDO apt-get install -y redis-server; }
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== loom models of the ring and the doorbell"
RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test -p rill-engine --lib --release ring::loom
echo "== cargo test --workspace"
cargo test --workspace
echo "== criterion benches compile (perf/benches; built in the test profile, not run)"
cargo test --workspace --benches --no-run
