#!/usr/bin/env python3
"""Writes N lines of etl input to stdout: mostly valid events, some malformed lines,
some non-positive amounts. Deterministic for a given N and seed.

usage: examples/etl/gen.py N [SEED] > input.jsonl
"""
import json
import random
import sys

n = int(sys.argv[1])
rng = random.Random(int(sys.argv[2]) if len(sys.argv) > 2 else 42)
out = sys.stdout
for i in range(n):
    r = rng.random()
    if r < 0.01:
        out.write('{"ts": oops\n')
    elif r < 0.015:
        out.write('{"ts": %d, "user": "u1"}\n' % i)
    else:
        user = "u%d" % rng.randrange(10000)
        amount = rng.randrange(-100, 10000)
        out.write(json.dumps({"ts": i, "user": user, "amount_cents": amount}) + "\n")
