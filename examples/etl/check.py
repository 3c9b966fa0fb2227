#!/usr/bin/env python3
"""Checks an etl job's output against a naive reference computed from its input.

usage: examples/etl/check.py JOB_DIR [--unordered]
With one source partition every user's rows must equal the reference exactly (in input
order); with more, each user's counts must be exactly 1..n and the final totals right.
Also checks that every malformed line is in the dead-letter file with its offset.
"""
import csv
import json
import os
import sys

job = sys.argv[1]
ordered = "--unordered" not in sys.argv
inp = os.path.join(job, "input.jsonl")
rows, bad, state = {}, [], {}
offset = 0
with open(inp, "rb") as f:
    for raw in f:
        line = raw.rstrip(b"\n").rstrip(b"\r")
        try:
            e = json.loads(line)
            ok = isinstance(e, dict) and isinstance(e.get("ts"), int) and \
                isinstance(e.get("user"), str) and isinstance(e.get("amount_cents"), int)
        except ValueError:
            ok = False
        if not ok:
            bad.append(offset)
        elif e["amount_cents"] > 0:
            c, t = state.get(e["user"], (0, 0))
            c, t = c + 1, t + e["amount_cents"]
            state[e["user"]] = (c, t)
            rows.setdefault(e["user"], []).append((c, t))
        offset += len(raw)

def order(name):
    """part-<p>.csv (no checkpoints) or part-<p>-<checkpoint>.csv: by checkpoint, then
    partition, which keeps each partition's and each user's write order (a user may move
    to another partition when the job is restored on another number of cores)."""
    parts = [int(x) for x in name[len("part-"):-len(".csv")].split("-")]
    return (parts[1], parts[0]) if len(parts) == 2 else (0, parts[0])


got = {}
out = os.path.join(job, "out")
for name in sorted((n for n in os.listdir(out) if n.startswith("part-") and n.endswith(".csv")), key=order):
    with open(os.path.join(out, name), newline="") as f:
        for user, count, total in csv.reader(f):
            got.setdefault(user, []).append((int(count), int(total)))

errors = 0
for user, want in rows.items():
    have = got.get(user, [])
    if ordered:
        if have != want:
            errors += 1
    else:
        if sorted(c for c, _ in have) != list(range(1, len(want) + 1)) or \
                max(have)[1] != want[-1][1]:
            errors += 1
extra = set(got) - set(rows)
dead = []
for name in os.listdir(job):
    # dead-letter.jsonl, or dead-letter-<checkpoint>.jsonl with checkpoints
    if name.startswith("dead-letter") and name.endswith(".jsonl"):
        with open(os.path.join(job, name)) as f:
            dead.extend(json.loads(l)["offset"] for l in f)
dead.sort()
print(f"users {len(rows)}, rows {sum(map(len, rows.values()))}, malformed {len(bad)}")
print(f"users wrong: {errors}, unexpected users: {len(extra)}, dead letters match: {dead == bad}")
sys.exit(0 if errors == 0 and not extra and dead == bad else 1)
