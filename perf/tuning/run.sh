#!/bin/bash
# The runs recorded in perf/TUNING.md (about 2.5 minutes on 2 cores). Outputs go to
# $OUT (default /tmp/rill-tuning); the job directories tuned are copies under /tmp.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${OUT:-/tmp/rill-tuning}; rm -rf "$out"; mkdir -p "$out"

# 1. keyed-async, template layout: capacity 10 at 2 ms, 20000 events/s offered.
rm -rf /tmp/tune-ka && cp -r bench/scenarios/keyed-async /tmp/tune-ka
sed -i 's/^capacity = 100 /capacity = 10  /; s/^delay_us = 1000/delay_us = 2000/' /tmp/tune-ka/job.toml
for i in 1 2; do
  { uptime; cargo run -q --release -p rill-perf -- tune /tmp/tune-ka --rate 20000 --duration 3 --warmup 1 -q --json $out/ka-$i.json; } > $out/ka-$i.txt 2>&1
done
cp /tmp/tune-ka/core.toml $out/ka-core.toml

# 2. latency, template layout, checkpoints every 50 ms from --set, a 2% overhead target.
rm -rf /tmp/tune-lat && cp -r bench/scenarios/latency /tmp/tune-lat
{ uptime; cargo run -q --release -p rill-perf -- tune /tmp/tune-lat --set checkpoint.interval_ms=50 --overhead 0.02 --duration 3 -q --json $out/lat-1.json; } > $out/lat-1.txt 2>&1
# Round 2: job.toml has the [checkpoint] table now; no --set.
{ uptime; cargo run -q --release -p rill-perf -- tune /tmp/tune-lat --overhead 0.02 --duration 3 -q --json $out/lat-2.json; } > $out/lat-2.txt 2>&1
cp /tmp/tune-lat/job.toml $out/lat-job.toml

# 3. keyed-async as a job directory with cores/<cpu>.toml and [checkpoint].
rm -rf /tmp/tune-kaf && mkdir -p /tmp/tune-kaf/cores
cp perf/tuning/keyed-async-fixed/job.toml /tmp/tune-kaf/job.toml
cp perf/tuning/keyed-async-fixed/cores/*.toml /tmp/tune-kaf/cores/
for i in 1 2; do
  { uptime; cargo run -q --release -p rill-perf -- tune /tmp/tune-kaf -q --json $out/kaf-$i.json; } > $out/kaf-$i.txt 2>&1
done
for f in job.toml cores/0.toml cores/1.toml; do echo "== $f"; cat /tmp/tune-kaf/$f; done > $out/kaf-files.txt

# 4. etl (file source) with the enrichment lookup and checkpoints, from --set; dry run.
{ uptime; cargo run -q --release -p rill-perf -- tune bench/scenarios/etl --dry-run -q --set enrich.segments=4 --set async.capacity=8 --set checkpoint.interval_ms=200 --json $out/etl.json; } > $out/etl.txt 2>&1
