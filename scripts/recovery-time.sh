#!/usr/bin/env bash
# Recovery time: run the latency job with ~1M keys of state and checkpoints every second,
# SIGKILL it after 26 s, start it again at once and print what the restarted run reports:
# the checkpoint it restored, the keys it loaded, and the time from its start to its
# first output. Usage: scripts/recovery-time.sh [JOB_DIR] (default: a temporary one).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p rill-engine --bin rill
rill=target/release/rill
job=${1:-$(mktemp -d)}
mkdir -p "$job/cores"
for c in $(seq 0 $(( $(nproc) - 1 ))); do : > "$job/cores/$c.toml"; done
rm -rf "$job/checkpoints"
cat > "$job/job.toml" <<TOML
[generator]
rate_eps = 200000
duration_ms = 120000
warmup_ms = 1000
keys = 1000000
[checkpoint]
interval_ms = 1000
TOML
"$rill" run "$job" > /dev/null 2>&1 &
pid=$!
sleep 26
kill -9 "$pid"
wait "$pid" 2> /dev/null || true
# The restarted run resumes at the restored offsets; a shorter schedule ends it soon.
"$rill" run "$job" --set generator.duration_ms=27000 2> /dev/null \
    | grep -E "restored from|restored_keys|first output"
