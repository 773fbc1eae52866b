#!/usr/bin/env python3
"""Soak: `kappa watch` on the shop pipeline while events are appended at a steady rate.

Appends RATE events/s (in writes every 100 ms) to a shop orders log for MINUTES, with `kappa watch --json` running,
and records each update's lag (file change to views up to date) and the process's resident memory. Prints a Markdown
summary: lag p50/p99/max per window, and RSS against events appended (its slope, in bytes per event).

    cargo build --release -p kappa_tui
    python3 bench/soak.py --minutes 30 --rate 10000 [--raw watch.jsonl]

--raw keeps every line `kappa watch --json` printed, to look at what happened around a slow update.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def percentile(values, p):
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--rate", type=int, default=10_000, help="events per second")
    ap.add_argument("--start", type=int, default=20_000, help="events in the log before the soak")
    ap.add_argument("--window", type=float, default=5, help="minutes per row of the lag table")
    ap.add_argument("--kappa", default="target/release/kappa")
    ap.add_argument("--raw", help="also keep every line `kappa watch --json` printed in this file")
    ap.add_argument("--stderr", help="keep what kappa printed on stderr in this file (discarded by default)")
    args = ap.parse_args()

    total = args.start + int(args.rate * args.minutes * 60)
    work = tempfile.mkdtemp(prefix="kappa-soak-")
    gen = os.path.join(work, "gen")
    live = os.path.join(work, "live")
    print(f"generating {total:,} shop events into {gen} ...", file=sys.stderr)
    subprocess.run([args.kappa, "gen", "shop", "--events", str(total), "--out", gen], check=True,
                   stdout=subprocess.DEVNULL)
    shutil.copytree(gen, live, ignore=shutil.ignore_patterns("orders.jsonl"))
    source = open(os.path.join(gen, "orders.jsonl"), "rb")
    log_path = os.path.join(live, "orders.jsonl")
    with open(log_path, "wb") as log:
        for _ in range(args.start):
            log.write(source.readline())

    watch = subprocess.Popen([args.kappa, "watch", "--json", os.path.join(live, "kappa.toml")],
                             stdout=subprocess.PIPE,
                             stderr=open(args.stderr, "w") if args.stderr else subprocess.DEVNULL, text=True)
    updates = []  # (seconds since start, lag ms, events)
    started = time.monotonic()

    raw = open(args.raw, "w") if args.raw else None

    def read():
        for line in watch.stdout:
            if raw:
                raw.write(line)
            try:
                u = json.loads(line)
            except ValueError:
                continue
            if u.get("source") == "orders" and u.get("event") == "appended" and u.get("lag_ms") is not None:
                updates.append((time.monotonic() - started, u["lag_ms"], u.get("events", 0)))

    threading.Thread(target=read, daemon=True).start()
    time.sleep(2)  # let it load
    started = time.monotonic()
    per_tick = max(1, args.rate // 10)
    appended = 0
    samples = []  # (seconds, events appended, rss KB)
    next_sample = 0.0
    end = args.minutes * 60
    log = open(log_path, "ab", buffering=0)
    tick = 0
    while True:
        now = time.monotonic() - started
        if now >= end:
            break
        chunk = b"".join(source.readline() for _ in range(per_tick))
        log.write(chunk)
        appended += per_tick
        if now >= next_sample:
            samples.append((now, appended, rss_kb(watch.pid)))
            next_sample += 10
        tick += 1
        delay = tick * 0.1 - (time.monotonic() - started)
        if delay > 0:
            time.sleep(delay)
    time.sleep(2)
    samples.append((time.monotonic() - started, appended, rss_kb(watch.pid)))
    watch.terminate()
    watch.wait(timeout=30)

    print(f"## Soak: `kappa watch` at {args.rate:,} events/s for {args.minutes:g} minutes\n")
    print(f"{appended:,} events appended to a log of {args.start:,}; {len(updates):,} updates.\n")
    print("| minutes | updates | events | lag p50 | lag p99 | lag p99.99 | lag max |")
    print("|---|---|---|---|---|---|---|")
    w = args.window * 60
    k = 0
    while k * w < end:
        rows = [u for u in updates if k * w <= u[0] < (k + 1) * w]
        lags = [u[1] for u in rows]
        print(f"| {k * args.window:g}-{(k + 1) * args.window:g} | {len(rows):,} | {sum(u[2] for u in rows):,} "
              f"| {percentile(lags, 50):.1f} ms | {percentile(lags, 99):.1f} ms | {percentile(lags, 99.99):.1f} ms "
              f"| {max(lags, default=float('nan')):.1f} ms |")
        k += 1
    lags = [u[1] for u in updates]
    print(f"| all | {len(updates):,} | {sum(u[2] for u in updates):,} | {percentile(lags, 50):.1f} ms "
          f"| {percentile(lags, 99):.1f} ms | {percentile(lags, 99.99):.1f} ms "
          f"| {max(lags, default=float('nan')):.1f} ms |\n")
    late = sorted((u for u in updates if u[1] > 100), key=lambda u: u[0])
    print(f"{len(late):,} update(s) later than 100 ms" + (": " + ", ".join(
        f"{u[1]:.0f} ms at minute {u[0] / 60:.1f}" for u in late[:20]) if late else "") + ".\n")
    print("| minute | events appended | RSS |")
    print("|---|---|---|")
    shown = samples[:: max(1, len(samples) // 12)]
    if shown[-1] is not samples[-1]:
        shown.append(samples[-1])
    for s in shown:
        print(f"| {s[0] / 60:.1f} | {s[1]:,} | {s[2] / 1024:.0f} MiB |")
    if len(samples) > 2:
        xs = [s[1] for s in samples[1:]]
        ys = [s[2] * 1024 for s in samples[1:]]
        mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
        slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / max(1e-9, sum((x - mx) ** 2 for x in xs))
        print(f"\nRSS slope: {slope:.0f} bytes per appended event (least squares over {len(xs)} samples).")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
