#!/usr/bin/env python3
"""Writes N lines of recommendation input to stdout: click/view events of users who each
lean towards a favourite category, and about 1% malformed lines of several kinds.
Deterministic for a given N, seed and options.

usage: examples/recommendation/gen.py N [SEED] [--users U] [--items I] [--categories C]

C should match the job's params.categories (default 8): a user's favourite category is
one of the simulated feature store's (the category of an item is fnv1a64(item) mod C).
"""
import argparse
import json
import random
import sys

FNV_OFFSET, FNV_PRIME, MASK = 0xcbf29ce484222325, 0x100000001b3, (1 << 64) - 1


def fnv1a64(data):
    h = FNV_OFFSET
    for b in data:
        h = ((h ^ b) * FNV_PRIME) & MASK
    return h


ap = argparse.ArgumentParser()
ap.add_argument("n", type=int)
ap.add_argument("seed", type=int, nargs="?", default=42)
ap.add_argument("--users", type=int, default=2000)
ap.add_argument("--items", type=int, default=5000)
ap.add_argument("--categories", type=int, default=8)
a = ap.parse_args()
if a.n < 0 or a.users < 1 or a.items < 1 or a.categories < 1:
    sys.exit("gen.py: N must be 0 or more; --users, --items, --categories 1 or more")

rng = random.Random(a.seed)
by_cat = {}
for i in range(a.items):
    item = "i%d" % i
    by_cat.setdefault(fnv1a64(item.encode()) % a.categories, []).append(item)
cats = sorted(by_cat)
favourite = [rng.choice(cats) for _ in range(a.users)]
out = sys.stdout
ts = 1_700_000_000_000
for i in range(a.n):
    ts += rng.randrange(0, 20)
    # A few users are much more active than most.
    u = min(int(a.users * rng.random() ** 2), a.users - 1)
    if rng.random() < 0.7:
        item = rng.choice(by_cat[favourite[u]])
    else:
        item = "i%d" % rng.randrange(a.items)
    kind = "click" if rng.random() < 0.25 else "view"
    r = rng.random()
    if r < 0.003:
        out.write('{"ts": %d, "user": broken\n' % ts)
    elif r < 0.005:
        out.write('{"ts": %d, "user": "u%d", "item": "%s"}\n' % (ts, u, item))
    elif r < 0.007:
        out.write('{"ts": %d, "user": "u%d", "item": "%s", "kind": "purchase"}\n' % (ts, u, item))
    elif r < 0.008:
        out.write('{"ts": "%d", "user": "u%d", "item": "%s", "kind": "view"}\n' % (ts, u, item))
    elif r < 0.009:
        out.write('{"ts": %d, "user": "u%d", "item": "%s;x", "kind": "view"}\n' % (ts, u, item))
    elif r < 0.010:
        out.write("\n")
    else:
        out.write(json.dumps({"ts": ts, "user": "u%d" % u, "item": item, "kind": kind}) + "\n")
