#!/usr/bin/env python3
"""Checks a recommendation job's committed output against a naive reference computed
from its input, with the simulated feature store.

usage: examples/recommendation/check.py JOB_DIR [--any-order]

Reads the job's [params] from JOB_DIR/job.toml, recomputes every recommendation from the
input (each user's events in input order, which is what the job sees with one source
partition) and compares exactly: every user's rows `seq,ts,items` in the order the
committed files hold them (with --any-order, sorted by seq: for `[async] mode =
"unordered"`). Also checks that every malformed line is in the dead-letter file, once,
with its byte offset.
"""
import csv
import json
import os
import sys
import tomllib

FNV_OFFSET, FNV_PRIME, MASK = 0xcbf29ce484222325, 0x100000001b3, (1 << 64) - 1
I64 = (-(1 << 63), (1 << 63) - 1)


def fnv1a64(data):
    h = FNV_OFFSET
    for b in data:
        h = ((h ^ b) * FNV_PRIME) & MASK
    return h


def features(item, categories):
    h = fnv1a64(item.encode())
    return "cat-%d" % (h % categories), 1 + (h >> 32) % 1000


def no_duplicate_keys(pairs):
    keys = [k for k, _ in pairs]
    if len(keys) != len(set(keys)):
        raise ValueError("duplicate key")
    return dict(pairs)


def parse(raw):
    """The event of one line, or None when the job must reject it (as its serde parse)."""
    try:
        e = json.loads(raw, object_pairs_hook=no_duplicate_keys)
    except ValueError:  # also UnicodeDecodeError
        return None
    if not isinstance(e, dict):
        return None
    ts, user, item, kind = e.get("ts"), e.get("user"), e.get("item"), e.get("kind")
    if type(ts) is not int or not I64[0] <= ts <= I64[1]:
        return None
    if type(user) is not str or type(item) is not str or kind not in ("click", "view"):
        return None
    if user == "" or item == "" or any(c in item for c in ',;"\n\r'):
        return None
    return ts, user, item, kind


def recommend(history, p):
    """history: [(item, kind)], newest first."""
    feat = {i: features(i, p["categories"]) for i, _ in history}
    interest, f = {}, 1_000_000
    for item, kind in history:
        w = p["click_weight"] if kind == "click" else p["view_weight"]
        cat = feat[item][0]
        interest[cat] = interest.get(cat, 0) + w * f
        f = f * p["decay_permille"] // 1000
    clicked = {i for i, k in history if k == "click"}
    cands = {i for i, _ in history if i not in clicked}
    scored = sorted(cands, key=lambda i: (-interest[feat[i][0]] * feat[i][1], i.encode()))
    return scored[: p["top_n"]]


def order(name):
    """part-<p>.csv (no checkpoints) or part-<p>-<checkpoint>.csv: by checkpoint, then
    partition, which keeps each partition's and each user's write order."""
    parts = [int(x) for x in name[len("part-"):-len(".csv")].split("-")]
    return (parts[1], parts[0]) if len(parts) == 2 else (0, parts[0])


def main():
    job = sys.argv[1]
    any_order = "--any-order" in sys.argv[2:]
    with open(os.path.join(job, "job.toml"), "rb") as f:
        cfg = tomllib.load(f)
    if cfg.get("lookup", {}).get("kind", "simulated") != "simulated":
        sys.exit("check.py: [lookup] is not the simulated feature store; "
                 "this checker recomputes the simulated features only")
    p = {"input": "input.jsonl", "out": "out", "dead_letter": "dead-letter.jsonl",
         "partitions": 1, "history": 10, "top_n": 3, "every": 1, "click_weight": 3,
         "view_weight": 1, "decay_permille": 800, "categories": 8}
    p.update(cfg.get("params", {}))
    if p["partitions"] != 1:
        print("check.py: params.partitions > 1: a user's events may reach the job in "
              "another order than the input's; the comparison may fail", file=sys.stderr)

    want, bad, state = {}, [], {}
    offset = 0
    with open(os.path.join(job, p["input"]), "rb") as f:
        for raw in f:
            line = raw[:-1] if raw.endswith(b"\n") else raw
            e = parse(line)
            if e is None:
                bad.append(offset)
            else:
                ts, user, item, kind = e
                n, hist = state.get(user, (0, []))
                n, hist = n + 1, ([(item, kind)] + hist)[: p["history"]]
                state[user] = (n, hist)
                if n % p["every"] == 0:
                    want.setdefault(user, []).append((n, ts, recommend(hist, p)))
            offset += len(raw)

    got = {}
    out = os.path.join(job, p["out"])
    names = [n for n in os.listdir(out) if n.startswith("part-") and n.endswith(".csv")]
    for name in sorted(names, key=order):
        with open(os.path.join(out, name), newline="", encoding="utf-8") as f:
            for user, seq, ts, items in csv.reader(f):
                got.setdefault(user, []).append(
                    (int(seq), int(ts), items.split(";") if items else []))
    if any_order:
        for rows in got.values():
            rows.sort(key=lambda r: r[0])

    wrong = [u for u in want if got.get(u, []) != want[u]]
    extra = sorted(set(got) - set(want))
    dl = os.path.join(job, p["dead_letter"])
    stem, ext = os.path.splitext(os.path.basename(dl))
    dead = []
    for name in os.listdir(os.path.dirname(dl) or "."):
        # dead-letter.jsonl, or dead-letter-<checkpoint>.jsonl with checkpoints
        if name.startswith(stem) and name.endswith(ext):
            with open(os.path.join(os.path.dirname(dl) or ".", name)) as f:
                dead.extend(json.loads(l)["offset"] for l in f)
    dead.sort()
    rows = sum(map(len, want.values()))
    print(f"users {len(want)}, recommendations {rows}, "
          f"committed {sum(map(len, got.values()))}, malformed {len(bad)}")
    print(f"users wrong: {len(wrong)}, unexpected users: {len(extra)}, "
          f"dead letters match: {dead == bad}")
    for u in wrong[:3]:
        w, g = want[u], got.get(u, [])
        i = next((k for k in range(min(len(w), len(g))) if w[k] != g[k]), min(len(w), len(g)))
        print(f"  {u}: first difference at row {i}: want "
              f"{w[i] if i < len(w) else None}, got {g[i] if i < len(g) else None} "
              f"({len(w)} rows wanted, {len(g)} committed)")
    sys.exit(0 if not wrong and not extra and dead == bad else 1)


main()
