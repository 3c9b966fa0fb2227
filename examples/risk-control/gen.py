#!/usr/bin/env python3
"""Writes N lines of risk-control input (transactions as JSON lines) to stdout.

Deterministic for a given N, SEED and options. Event time advances by --step-ms per line
and each transaction is up to --max-delay-ms behind that (so the input is out of order by
less than the job's default bound, out_of_orderness_ms = 5000: no transaction is late).
About 1% of the lines are malformed; a few accounts are hot (velocity and volume alerts),
most transactions happen in the account's home country (others raise country-change and
geo alerts), about 2% are large, and a few account ids need CSV quoting.

usage: examples/risk-control/gen.py N [SEED] [--step-ms 20] [--max-delay-ms 4000]
                                       [--accounts 3000]
"""
import argparse
import json
import random
import sys

ap = argparse.ArgumentParser()
ap.add_argument("n", type=int)
ap.add_argument("seed", type=int, nargs="?", default=42)
ap.add_argument("--step-ms", type=int, default=20)
ap.add_argument("--max-delay-ms", type=int, default=4000)
ap.add_argument("--accounts", type=int, default=3000)
args = ap.parse_args()
if args.n < 0 or args.step_ms < 0 or args.max_delay_ms < 0 or args.accounts < 1:
    sys.exit("gen.py: N, --step-ms and --max-delay-ms must be >= 0, --accounts >= 1")

rng = random.Random(args.seed)
HOMES = ["FR", "DE", "ES", "IT", "NL", "US"]
ABROAD = HOMES + ["GB", "BR", "JP"]
ODD = ['acct "x", ltd', "ünï-17", "a,b"]


def fnv1a(s):
    h = 0xCBF29CE484222325
    for b in s.encode():
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def usual_country(account):
    """Where an account usually pays: its simulated home country (as the job's lookup)."""
    return HOMES[(fnv1a(account) // 4) % len(HOMES)]


out = sys.stdout
for i in range(args.n):
    base = 10_000 + i * args.step_ms
    ts = base - rng.randrange(args.max_delay_ms + 1)
    r = rng.random()
    if r < 0.004:
        out.write('{"ts": oops\n')
        continue
    if r < 0.007:
        out.write('{"ts": %d, "account": "a1", "amount_cents": 5}\n' % ts)
        continue
    if r < 0.010:
        out.write('{"ts": -%d, "account": "a1", "amount_cents": 5, "merchant": "m1", '
                  '"country": "FR"}\n' % (ts + 1))
        continue
    a = rng.random()
    if a < 0.06:
        account = "a%d" % rng.randrange(min(8, args.accounts))  # hot accounts
    elif a < 0.062:
        account = rng.choice(ODD)
    else:
        account = "a%d" % rng.randrange(args.accounts)
    country = usual_country(account) if rng.random() < 0.9 else rng.choice(ABROAD)
    if rng.random() < 0.02:
        amount = rng.randrange(200_000, 900_000)
    else:
        amount = rng.randrange(100, 30_000)
    out.write(json.dumps({"ts": ts, "account": account, "amount_cents": amount,
                          "merchant": "m%d" % rng.randrange(500), "country": country},
                         ensure_ascii=False) + "\n")
