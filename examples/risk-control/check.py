#!/usr/bin/env python3
"""Checks a risk-control job's committed alerts against a naive reference computed from
its input, independently of the job's code (the semantics are in README.md).

usage: examples/risk-control/check.py JOB_DIR [--profiles FILE]

Reads JOB_DIR/job.toml's [params] (with the job's defaults), the input and the committed
output files (out/part-<p>-<n>.csv, or out/part-<p>.csv without checkpoints), and
compares the alerts as a multiset (row order across files is not part of the result).
--profiles FILE: a JSON object account -> "<tier>,<home>" (what Redis held) instead of
the simulated profiles. Exit 0: equal; 1: different (with examples); 2: the input does
not determine the output (a transaction that may be late) or bad usage.

With one source partition (params.partitions = 1) every alert is checked exactly. With
more, the order in which an account's transactions reach the per-event rules interleaves
the partitions, so country-change alerts are not compared (everything else is).
"""
import argparse
import collections
import csv
import json
import os
import sys
import tomllib

DEFAULTS = {
    "input": "input.jsonl", "partitions": 1, "out": "out",
    "dead_letter": "dead-letter.jsonl", "window_ms": 60000, "out_of_orderness_ms": 5000,
    "watermark_interval_ms": 200, "max_count": 5, "max_sum_cents": 500000,
    "geo_countries": 3, "large_cents": 200000, "country_change_ms": 60000,
}
HOMES = ["FR", "DE", "ES", "IT", "NL", "US"]
U64, I64 = 2**64 - 1, 2**63

ap = argparse.ArgumentParser()
ap.add_argument("job")
ap.add_argument("--profiles")
args = ap.parse_args()
with open(os.path.join(args.job, "job.toml"), "rb") as f:
    given = tomllib.load(f).get("params", {})
unknown = set(given) - set(DEFAULTS)
if unknown:
    sys.exit(f"check.py: unknown [params] {sorted(unknown)}")
P = {**DEFAULTS, **given}
W, BOUND = P["window_ms"], P["out_of_orderness_ms"]


def path(p):
    return p if os.path.isabs(p) else os.path.join(args.job, p)


def fnv1a(s):
    h = 0xCBF29CE484222325
    for b in s.encode():
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


stored = None
if args.profiles:
    with open(args.profiles) as f:
        stored = json.load(f)


def profile(account):
    if stored is not None:
        tier, home = stored[account].split(",", 1)
        return tier, home
    h = fnv1a(account)
    return ["trusted", "standard", "standard", "watch"][h % 4], HOMES[(h // 4) % 6]


def no_duplicates(pairs):
    keys = [k for k, _ in pairs]
    if len(keys) != len(set(keys)):
        raise ValueError("duplicate field")
    return dict(pairs)


def reject_constant(c):
    raise ValueError(c)


def transaction(raw):
    """The transaction on a line, or None when the job's parser rejects it."""
    try:
        e = json.loads(raw.decode("utf-8"), object_pairs_hook=no_duplicates,
                       parse_constant=reject_constant)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(e, dict):
        return None
    def is_int(v, lo, hi):
        return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi
    if not (is_int(e.get("ts"), 0, U64) and is_int(e.get("amount_cents"), -I64, I64 - 1)
            and all(isinstance(e.get(k), str) for k in ("account", "merchant", "country"))):
        return None
    return e


# Read the input: transactions in file order, malformed lines' offsets.
txns, bad, offset = [], [], 0
max_ts, maybe_late = None, []
with open(path(P["input"]), "rb") as f:
    for raw in f:
        line = raw[:-1] if raw.endswith(b"\n") else raw
        line = line[:-1] if line.endswith(b"\r") else line
        e = transaction(line)
        if e is None:
            bad.append(offset)
        else:
            # Late iff every window of ts ended at or before the watermark, and the
            # watermark is at most max(0, max ts seen before - bound - 1).
            end = e["ts"] - e["ts"] % W + W
            if max_ts is not None and end - 1 <= max(0, max_ts - BOUND - 1):
                maybe_late.append(offset)
            max_ts = e["ts"] if max_ts is None else max(max_ts, e["ts"])
            txns.append(e)
        offset += len(raw)
if maybe_late:
    print(f"{len(maybe_late)} transactions are out of order by more than "
          f"out_of_orderness_ms = {BOUND} (first at byte {maybe_late[0]}): whether they are "
          "counted depends on when watermarks were emitted, so the input does not determine "
          "the output; generate one with a smaller gen.py --max-delay-ms")
    sys.exit(2)

# The rules.
alerts = []  # (account, rule, ts, value, detail, country or None)
windows = collections.defaultdict(lambda: [0, 0, set()])
last = {}
for e in txns:
    a, ts, amount, country = e["account"], e["ts"], e["amount_cents"], e["country"]
    w = windows[(a, ts - ts % W)]
    w[0] += 1
    w[1] += amount
    w[2].add(country)
    if amount > P["large_cents"]:
        alerts.append((a, "large", ts, amount, country, country))
    if a in last:
        pts, pc = last[a]
        if pc != country and abs(ts - pts) <= P["country_change_ms"]:
            alerts.append((a, "country-change", ts, abs(ts - pts), f"{pc}>{country}", country))
    last[a] = (ts, country)
for (a, start), (count, total, countries) in windows.items():
    if count > P["max_count"]:
        alerts.append((a, "velocity", start, count, "", None))
    if total > P["max_sum_cents"]:
        alerts.append((a, "volume", start, total, "", None))
    if len(countries) >= P["geo_countries"]:
        alerts.append((a, "geo", start, len(countries), "|".join(sorted(countries)), None))

BASE = {"large": 2, "country-change": 2, "volume": 2, "velocity": 1, "geo": 1}
TIER = {"trusted": -1, "standard": 0, "watch": 1}
want = collections.Counter()
suppressed = 0
for a, rule, ts, value, detail, country in alerts:
    tier, home = profile(a)
    sev = BASE[rule] + TIER[tier] + (1 if country is not None and country != home else 0)
    if sev <= 0:
        suppressed += 1
        continue
    want[(a, rule, str(ts), str(value), detail, tier, home, str(sev))] += 1

# The committed output.
got = collections.Counter()
out = path(P["out"])
for name in sorted(os.listdir(out)):
    if name.startswith("part-") and name.endswith(".csv"):
        with open(os.path.join(out, name), newline="", encoding="utf-8") as f:
            for row in csv.reader(f):
                got[tuple(row)] += 1

if P["partitions"] > 1:
    for c in (want, got):
        for k in [k for k in c if k[1] == "country-change"]:
            del c[k]

dl = path(P["dead_letter"])
dl_dir, dl_name = os.path.split(dl)
stem, ext = os.path.splitext(dl_name)
dead = []
for name in os.listdir(dl_dir or "."):
    # dead-letter.jsonl, or dead-letter-<checkpoint>.jsonl with checkpoints
    if name == dl_name or (name.startswith(stem + "-") and name.endswith(ext)
                           and name[len(stem) + 1:-len(ext)].isdigit()):
        with open(os.path.join(dl_dir, name)) as f:
            dead.extend(json.loads(l)["offset"] for l in f)
dead.sort()

missing, extra = want - got, got - want
by_rule = collections.Counter(k[1] for k in want.elements())
print(f"transactions {len(txns)}, malformed {len(bad)}, windows {len(windows)}")
print(f"alerts expected {sum(want.values())} ({dict(sorted(by_rule.items()))}), "
      f"suppressed {suppressed}, committed {sum(got.values())}")
print(f"missing {sum(missing.values())}, unexpected or duplicated {sum(extra.values())}, "
      f"dead letters match: {dead == bad}")
for k in list(missing)[:5]:
    print("  missing:", ",".join(k))
for k in list(extra)[:5]:
    print("  unexpected:", ",".join(k))
sys.exit(0 if not missing and not extra and dead == bad else 1)
