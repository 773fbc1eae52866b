#!/usr/bin/env python3
"""Scale (issue 17): the shop pipeline over a log of --events events (100M: about 14 GB of JSON Lines) on this machine.

Each step is a fresh `kappa` process with one cache folder (fresh at the start), timed from spawn to exit, its peak
RSS from wait4 (or, for the watcher, /proc's VmHWM):

1. cold open + ad-hoc query: `kappa query DIR/kappa.toml --sql Q` (parse the log into the store, compute every view,
   checkpoint them, answer Q);
2. re-open + the same query (the store and the checkpoint are used);
3. replay: `kappa replay DIR/kappa.toml` (from offset 0 through the write path, from the store);
4. time travel: `kappa query DIR/kappa.toml revenue_by_day --at N/2` (from the newest checkpoint below N/2);
5. follow appends: `kappa watch --json DIR/kappa.toml`, then --append events appended at 10,000 events/s; the lag of
   every update (file change to views up to date).

    cargo build --release -p kappa_tui
    bench/scale.py --events 100000000            # generates into /tmp/kappa-scale/N once; --keep keeps it
"""

import argparse
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import peers  # noqa: E402

QUERY = "SELECT type, count(*) AS n, coalesce(sum(amount), 0) AS total FROM orders GROUP BY type ORDER BY type"


def vm_hwm(pid: int) -> int:
    try:
        for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def follow(kappa, cache, directory, appended: int):
    """Watches the pipeline, appends `appended` events at 10k/s from a second generated log, returns lags and RSS."""
    extra = directory.parent / f"{directory.name}-extra"
    if not (extra / "orders.jsonl").exists():
        subprocess.run(
            [kappa, "gen", "shop", "--events", str(appended), "--out", extra, "--seed", "7"],
            check=True,
            stderr=subprocess.DEVNULL,
        )
    watch = subprocess.Popen(
        [kappa, "--cache", cache, "watch", "--json", directory / "kappa.toml"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lags = []
    ready = threading.Event()

    def read():
        for line in watch.stdout:
            try:
                update = json.loads(line)
            except ValueError:
                continue
            if update.get("event") == "appended" and update.get("lag_ms") is not None:
                lags.append(update["lag_ms"])

    def notices():
        for line in watch.stderr:
            if line.startswith("watching "):
                ready.set()

    threading.Thread(target=read, daemon=True).start()
    threading.Thread(target=notices, daemon=True).start()
    started = time.perf_counter()
    opened = None
    # `kappa watch` says "watching ..." on stderr once it is loaded; give it as long as an open takes.
    while not ready.wait(1.0):
        if watch.poll() is not None:
            raise SystemExit("kappa watch exited")
    opened = time.perf_counter() - started
    source = open(extra / "orders.jsonl", "rb")
    with open(directory / "orders.jsonl", "ab", buffering=0) as log:
        for _ in range(appended // 1000):
            # Other event ids than the log's (the generator numbers them from 1), so none is dropped as a duplicate.
            lines = b"".join(source.readline() for _ in range(1000))
            log.write(lines.replace(b'"event_id":"evt-', b'"event_id":"app-'))
            time.sleep(0.1)
    time.sleep(5)
    peak = vm_hwm(watch.pid)
    watch.terminate()
    watch.wait(timeout=60)
    return opened, lags, peak


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=100_000_000)
    ap.add_argument("--append", type=int, default=100_000)
    ap.add_argument("--work", type=pathlib.Path, default=pathlib.Path(tempfile.gettempdir()) / "kappa-scale")
    ap.add_argument("--kappa", type=pathlib.Path, default=peers.ROOT / "target" / "release" / "kappa")
    ap.add_argument("--keep", action="store_true", help="keep the generated log and the cache")
    args = ap.parse_args()
    kappa = args.kappa
    directory = args.work / str(args.events)
    if not (directory / ".generated").exists():
        shutil.rmtree(directory, ignore_errors=True)
        print(f"generating {args.events:,} events into {directory}", file=sys.stderr)
        subprocess.run([kappa, "gen", "shop", "--events", str(args.events), "--out", directory], check=True)
        (directory / ".generated").write_text("")
    # The log is appended to below, and truncated back to this size at the end.
    size = (directory / "orders.jsonl").stat().st_size
    cache = args.work / "cache"
    shutil.rmtree(cache, ignore_errors=True)
    rows = []

    def step(what, cmd):
        seconds, rss, out = peers.measured(cmd, what)
        rows.append((what, seconds, rss, out))
        print(f"{what:<32} {seconds:8.1f} s  {rss / 2**20:7.0f} MiB", file=sys.stderr, flush=True)
        return out

    q = ["--cache", cache, "query", directory / "kappa.toml", "--sql", QUERY, "--format", "csv"]
    step("cold open + ad-hoc query", [kappa, *q])
    step("re-open + ad-hoc query", [kappa, *q])
    out = step("replay from offset 0", [kappa, "--cache", cache, "replay", directory / "kappa.toml"])
    replay = out.strip().splitlines()[-1] if out.strip() else ""
    half = args.events // 2
    step(
        f"time travel to {half:,}",
        [kappa, "--cache", cache, "query", directory / "kappa.toml", "revenue_by_day", "--at", str(half), "--format", "csv"],
    )
    try:
        opened, lags, peak = follow(kappa, cache, directory, args.append)
    finally:
        os.truncate(directory / "orders.jsonl", size)
    print(f"\n### Scale: {args.events:,} events ({size / 2**30:.1f} GiB of JSON Lines)\n")
    print(f"Measured by `bench/scale.py --events {args.events}`; {peers.machine()}; Kappa commit {peers.commit()}.\n")
    print("| step | seconds | peak RSS |")
    print("|---|---|---|")
    for what, seconds, rss, _ in rows:
        print(f"| {what} | {seconds:.1f} | {rss / 2**20:,.0f} MiB |")
    lags.sort()
    p = lambda q: lags[min(len(lags) - 1, int(q * (len(lags) - 1)))] if lags else float("nan")  # noqa: E731
    print(
        f"| follow appends ({args.append:,} events at 10,000/s; opened in {opened:.1f} s) | "
        f"lag p50 {p(0.5):.1f} ms, p99 {p(0.99):.1f} ms, max {p(1.0):.1f} ms ({len(lags)} updates) | "
        f"{peak / 2**20:,.0f} MiB |"
    )
    print(f"\nReplay: {replay}")
    if not args.keep:
        shutil.rmtree(cache, ignore_errors=True)


if __name__ == "__main__":
    main()
