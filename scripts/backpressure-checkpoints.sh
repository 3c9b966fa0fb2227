#!/usr/bin/env bash
# Checkpoint duration under backpressure, aligned against unaligned: core 1's generator
# floods a ring into core 0, whose sink is deliberately slow; 10 s at 20k events/s with a
# checkpoint every second. Prints duration and alignment p50/max and the channel state of
# each mode from the checkpoint history. Needs 2 CPUs (0 and 1).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p rill-engine --bin rill
rill=target/release/rill
job=$(mktemp -d)
mkdir -p "$job/cores"
: > "$job/cores/0.toml"
: > "$job/cores/1.toml"
for unaligned in false true; do
    rm -rf "$job/checkpoints"
    cat > "$job/job.toml" <<TOML
parallelism = 1
[generator]
rate_eps = 20000
duration_ms = 10000
warmup_ms = 1000
sink_cost_ns = 60000
partitions = 2
[checkpoint]
interval_ms = 1000
unaligned = $unaligned
TOML
    "$rill" run "$job" > /dev/null 2>&1
    python3 - "$job/checkpoints/history.jsonl" "$unaligned" <<'PY'
import json, sys
last = {}
for line in open(sys.argv[1]):
    e = json.loads(line)
    last[e["id"]] = e
done = [e for e in last.values() if e["state"] == "complete" and e["kind"] == "periodic"]
def p50_max(k):
    v = sorted(e[k] for e in done)
    return f"p50 {v[len(v) // 2]:.1f} ms, max {v[-1]:.1f} ms"
chan = sorted(e["channel_records"] for e in done)[len(done) // 2]
print(f"unaligned={sys.argv[2]}: {len(done)} checkpoints; duration {p50_max('duration_ms')}; "
      f"alignment {p50_max('alignment_ms')}; channel records p50 {chan}")
PY
done
