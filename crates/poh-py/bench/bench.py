#!/usr/bin/env python3
"""The prototype's workload from Python, against the prototype's model and against ours,
in one run.

    python crates/poh-py/bench/bench.py --n 10000 --size 1024 [--repeat 3] [--layout files|segments]
        [--dir /tmp] [--markdown out.md]

Runs each side in its own subprocess (both packages are called ``poh_storage``): the
prototype's model from ``../shared/seedref`` (or ``$POH_SEEDREF``; needs aiofiles and
aiosqlite) and the installed ``poh_storage``/``poh_ttl`` (ours), whose stores have the
layout --layout names (``files``, the prototype's, by default; ``segments`` packs payloads
into append-only segment files). Each side gets a fresh store of N txs of SIZE random
bytes, every 10th older than the TTL, and times:

  save (one at a time)   N x ``await save_tx`` in a loop, as the prototype's own benchmark
  save (concurrent)      N x ``save_tx`` with CONCURRENCY in flight (``asyncio.gather``)
  list                   ``list_txs()``; ops = ids returned
  load (one at a time)   N x ``await load_tx`` (hash verified) in a loop
  load (concurrent)      the same with CONCURRENCY in flight
  ttl scan, none expired ``TTLManager(huge ttl).scan_once()``; ops = txs in the store
  ttl scan, 10% expired  ``TTLManager(ttl).scan_once()``; ops = txs in the store
  recover                ``recover()``; ops = txs checked

Ours is durable (each acknowledged save is fsynced and committed); the prototype's is not
(no fsync of payloads). Each phase is preceded by an untimed ``os.sync()``.

Figures on a shared machine swing by 2-4x from run to run, so the two sides run REPEAT
times, alternating which goes first, and the table gives each side's median per phase
(the ratio column divides the medians; the per-round ratios follow it). No file is
deleted between sides or rounds (every store, and each side's warm-up store, is removed
at the end): ext4 is slow to create files for a minute after many were deleted, which
would penalise whichever side runs after a deletion. Prints one JSON line per phase per
side per round, then the table (also written as Markdown with --markdown).
"""
import argparse
import asyncio
import json
import os
import pathlib
import random
import shutil
import statistics
import subprocess
import sys
import time
import uuid

TTL = 3600
HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parents[2]

PHASES = [
    ("save_seq", "save (one at a time)"),
    ("save_conc", "save (concurrent)"),
    ("list", "list_txs"),
    ("load_seq", "load_tx (one at a time)"),
    ("load_conc", "load_tx (concurrent)"),
    ("ttl_none", "TTL scan, none expired"),
    ("ttl_10pct", "TTL scan, 10% expired"),
    ("recover", "recover"),
]


def seedref_dir() -> pathlib.Path:
    env = os.environ.get("POH_SEEDREF")
    return pathlib.Path(env) if env else REPO.parent / "shared" / "seedref"


# ------------------------------------------------------------------------------------
# One side (runs in a subprocess)

async def gather_chunks(coros_fn, n, width):
    """``width`` callers, each awaiting one call after another (like request handlers):
    ``width`` calls are in flight at any moment."""
    async def caller(k):
        for i in range(k, n, width):
            await coros_fn(i)
    await asyncio.gather(*(caller(k) for k in range(min(width, n))))


async def side(root: pathlib.Path, n: int, size: int, width: int, warmup_s: float,
               layout: str = "") -> None:
    from poh_storage import StorageManager, Tx
    from poh_ttl import TTLManager

    # Only ours takes a layout (the prototype's create() has no such argument).
    opts = {"layout": layout} if layout else {}

    def emit(phase, secs, ops, **extra):
        print(json.dumps({"phase": phase, "secs": secs, "ops": ops,
                          "ops_per_s": ops / secs if secs > 0 else None, **extra}), flush=True)

    def sync():
        os.sync()

    rnd = random.Random(12345)
    now = time.time()

    def make(i, prefix):
        ts = now - TTL - 60 - rnd.uniform(0, TTL) if i % 10 == 0 else now - rnd.uniform(0, TTL / 2)
        return Tx(f"{prefix}{uuid.UUID(int=rnd.getrandbits(128), version=4).hex}",
                  f"holder{i % 97}", ts, os.urandom(size))

    if warmup_s > 0:  # the first seconds of I/O after an idle spell run slow here
        w = await StorageManager.create(str(root / "warm"), str(root / "warm" / "poh.db"), **opts)
        t0, i = time.perf_counter(), 0
        while time.perf_counter() - t0 < warmup_s:
            await w.save_tx(Tx(f"w{i}", "h", now, os.urandom(size)))
            i += 1
        await w.close()  # kept until the driver removes everything: see the docstring

    base = root / "data"
    m = await StorageManager.create(str(base), str(base / "poh.db"), **opts)
    try:
        if layout:
            assert m.layout == layout, (m.layout, layout)
        half = n // 2
        seq = [make(i, "s") for i in range(half)]
        conc = [make(i, "c") for i in range(n - half)]

        sync()
        t0 = time.perf_counter()
        for tx in seq:
            await m.save_tx(tx)
        emit("save_seq", time.perf_counter() - t0, len(seq))

        sync()
        t0 = time.perf_counter()
        await gather_chunks(lambda i: m.save_tx(conc[i]), len(conc), width)
        emit("save_conc", time.perf_counter() - t0, len(conc), in_flight=width)

        sync()
        t0 = time.perf_counter()
        ids = await m.list_txs()
        emit("list", time.perf_counter() - t0, len(ids))
        assert len(ids) == n, (len(ids), n)

        t0 = time.perf_counter()
        for tx_id in ids:
            tx = await m.load_tx(tx_id)
            assert tx is not None and len(tx.payload) == size
        emit("load_seq", time.perf_counter() - t0, len(ids))

        async def load_one(i):
            tx = await m.load_tx(ids[i])
            assert tx is not None and len(tx.payload) == size
        t0 = time.perf_counter()
        await gather_chunks(load_one, len(ids), width)
        emit("load_conc", time.perf_counter() - t0, len(ids), in_flight=width)

        sync()
        t0 = time.perf_counter()
        gone = await TTLManager(m, 10 ** 12).scan_once()
        emit("ttl_none", time.perf_counter() - t0, len(ids))
        assert gone == []

        sync()
        t0 = time.perf_counter()
        gone = await TTLManager(m, TTL).scan_once()
        emit("ttl_10pct", time.perf_counter() - t0, len(ids), expired=len(gone))

        sync()
        left = len(ids) - len(gone)
        t0 = time.perf_counter()
        valid = await m.recover()
        emit("recover", time.perf_counter() - t0, left)
        assert len(valid) == left, (len(valid), left)
    finally:
        await m.close()


# ------------------------------------------------------------------------------------
# The driver

def run_side(name: str, args, env, top: pathlib.Path, round_no: int) -> dict:
    root = top / f"{name}_{round_no}"
    root.mkdir(parents=True)
    cmd = [sys.executable, __file__, "--side", str(root), "--n", str(args.n), "--size", str(args.size),
           "--concurrency", str(args.concurrency), "--warmup-s", str(args.warmup_s)]
    if name == "ours":
        cmd += ["--layout", args.layout or "files"]
    print(f"# {name}, round {round_no}: {' '.join(cmd)}", file=sys.stderr, flush=True)
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"{name} failed:\n{out.stderr}")
    results = {}
    for line in out.stdout.splitlines():
        r = json.loads(line)
        results[r["phase"]] = r
        print(json.dumps({"side": name, "round": round_no, **r}), flush=True)
    return results


def median_rates(runs: list) -> dict:
    """Per phase, the median of the rounds' ops/s (and of their seconds)."""
    out = {}
    for key, _ in PHASES:
        rs = [r[key] for r in runs if key in r and r[key].get("ops_per_s")]
        if rs:
            out[key] = {"ops_per_s": statistics.median(r["ops_per_s"] for r in rs),
                        "secs": statistics.median(r["secs"] for r in rs)}
    return out


def fmt_rate(r) -> str:
    if r is None or r.get("ops_per_s") is None:
        return "—"
    v = r["ops_per_s"]
    return f"{v:,.0f}/s" if v >= 100 else f"{v:,.1f}/s"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--dir", default="/tmp")
    ap.add_argument("--concurrency", type=int, default=512, help="calls in flight in the concurrent phases")
    ap.add_argument("--warmup-s", type=float, default=3.0)
    ap.add_argument("--repeat", type=int, default=3,
                    help="rounds of both sides, alternating which runs first; the table gives medians")
    ap.add_argument("--layout", choices=("files", "segments"), default=None,
                    help="layout of our stores (default files; the prototype's is always its "
                         "own flat files)")
    ap.add_argument("--markdown", help="also write the table to this file")
    ap.add_argument("--side", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.side:
        asyncio.run(side(pathlib.Path(args.side), args.n, args.size, args.concurrency, args.warmup_s,
                         args.layout or ""))
        return

    seed = seedref_dir()
    if not (seed / "poh_storage" / "storage.py").is_file():
        sys.exit(f"the prototype's model is not at {seed} (set POH_SEEDREF)")
    proto_env = dict(os.environ, PYTHONPATH=str(seed))
    ours_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    top = pathlib.Path(args.dir) / f"poh_py_bench_{args.n}_{os.getpid()}"
    shutil.rmtree(top, ignore_errors=True)
    proto_runs, ours_runs = [], []
    try:
        for k in range(1, max(1, args.repeat) + 1):
            sides = [("prototype", proto_env, proto_runs), ("ours", ours_env, ours_runs)]
            if k % 2 == 0:
                sides.reverse()
            for name, env, runs in sides:
                runs.append(run_side(name, args, env, top, k))
    finally:
        shutil.rmtree(top, ignore_errors=True)
    proto, ours = median_rates(proto_runs), median_rates(ours_runs)

    def ratio(o, p, key, base=None):
        base = base or key
        if key in o and base in p:
            return o[key]["ops_per_s"] / p[base]["ops_per_s"]
        return None

    rounds = len(proto_runs)
    lines = [
        f"N = {args.n:,} txs of {args.size} bytes; ours on the {args.layout or 'files'} layout; "
        f"concurrent phases keep {args.concurrency} calls in flight; "
        f"median of {rounds} round(s), alternating which side runs first.",
        "",
        "| phase | prototype's model | poh_storage (ours) | ours / prototype | per round |",
        "|---|---:|---:|---:|---|",
    ]
    for key, label in PHASES:
        p, o = proto.get(key), ours.get(key)
        r = ratio(ours, proto, key)
        cell = "—" if r is None else f"{r:,.1f}x"
        if key.startswith("ttl") and p and o:
            cell += f" ({p['secs'] * 1000:,.1f} ms vs {o['secs'] * 1000:,.2f} ms)"
        per_round = ", ".join(
            f"{ratio(orun, prun, key):,.1f}x" for prun, orun in zip(proto_runs, ours_runs)
            if ratio(orun, prun, key) is not None)
        lines.append(f"| {label} | {fmt_rate(p)} | {fmt_rate(o)} | {cell} | {per_round} |")
    lines += [
        "",
        f"Targets (medians): concurrent durable save_tx ≥ 10x the prototype's concurrent save: "
        f"{ratio(ours, proto, 'save_conc'):,.1f}x "
        f"({ratio(ours, proto, 'save_conc', 'save_seq'):,.1f}x its one-at-a-time save); "
        f"load_tx ≥ 20x: {ratio(ours, proto, 'load_seq'):,.1f}x one at a time, "
        f"{ratio(ours, proto, 'load_conc'):,.1f}x concurrent.",
    ]
    table = "\n".join(lines)
    print(table)
    if args.markdown:
        pathlib.Path(args.markdown).write_text(table + "\n")


if __name__ == "__main__":
    main()
