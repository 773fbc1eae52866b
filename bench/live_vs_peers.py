#!/usr/bin/env python3
"""The write path against the peers' read path, and live lag.

1. Appending 1,000 events to a shop log of --events events: the time Kappa takes to bring each incremental view up to
   date (measured inside the engine and reported by `kappa watch --json`), against DuckDB, DataFusion (Python) and
   Polars computing the same view from Parquet, alternating, --runs times in the same run. Medians and ratios.
2. With --lag-seconds S: a writer appends --rate events/s (in slices every 10 ms) for S seconds while `kappa watch`
   follows the file; the lag from each file change to the views being up to date, as p50/p99/max.

Usage (after `cargo build --release -p kappa_tui` and `python3 -m venv bench/.venv && bench/.venv/bin/pip install
duckdb datafusion polars`):

    bench/.venv/bin/python bench/live_vs_peers.py --events 1000000 --runs 7 --lag-seconds 60
"""

import argparse
import json
import os
import pathlib
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tomllib

ROOT = pathlib.Path(__file__).resolve().parent.parent
KAPPA = ROOT / "target" / "release" / "kappa"
VIEWS = ["revenue_by_day", "customer_orders", "top_products"]
APPEND = 1000
SPARE = 100_000


def generate(directory: pathlib.Path, events: int) -> list[str]:
    """The shop at `events` events, and spare lines after them to append."""
    subprocess.run(
        [KAPPA, "gen", "shop", "--events", str(events + SPARE), "--out", directory],
        check=True,
        stderr=subprocess.DEVNULL,
    )
    log = directory / "orders.jsonl"
    lines = log.read_text().splitlines()
    log.write_text("\n".join(lines[:events]) + "\n")
    return lines[events:]


class Spare:
    """Lines to append, with event ids made unique on every round through them."""

    def __init__(self, lines):
        self.lines = lines
        self.next = 0
        self.round = 0

    def take(self, n: int) -> str:
        if self.next + n > len(self.lines):
            self.next = 0
            self.round += 1
        chunk = self.lines[self.next : self.next + n]
        self.next += n
        prefix = f'"event_id":"r{self.round}-'
        return "".join(line.replace('"event_id":"', prefix, 1) + "\n" for line in chunk)


def to_parquet(directory: pathlib.Path):
    import duckdb

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    # DuckDB reads `ts` as a timestamp; the log has it as ISO 8601 text, and so does the Parquet copy.
    con.execute(
        f"COPY (SELECT * REPLACE (strftime(ts, '%Y-%m-%dT%H:%M:%S.%gZ') AS ts) "
        f"FROM read_json_auto('{directory / 'orders.jsonl'}', format='newline_delimited')) "
        f"TO '{directory / 'orders.parquet'}' (FORMAT PARQUET)"
    )


def view_sql(directory: pathlib.Path) -> dict:
    pipeline = tomllib.loads((directory / "kappa.toml").read_text())
    return {v["name"]: v["sql"] for v in pipeline["view"] if v["name"] in VIEWS}


def peers(directory: pathlib.Path):
    import datafusion
    import duckdb
    import polars as pl

    orders = str(directory / "orders.parquet")
    products = str(directory / "products.parquet")

    def duck(sql):
        con = duckdb.connect()
        con.execute(f"CREATE VIEW orders AS SELECT * FROM read_parquet('{orders}')")
        con.execute(f"CREATE VIEW products AS SELECT * FROM read_parquet('{products}')")
        started = time.perf_counter()
        con.execute(sql).fetchall()
        return time.perf_counter() - started

    def fusion(sql):
        ctx = datafusion.SessionContext()
        ctx.register_parquet("orders", orders)
        ctx.register_parquet("products", products)
        started = time.perf_counter()
        ctx.sql(sql).collect()
        return time.perf_counter() - started

    def polars(sql):
        ctx = pl.SQLContext(orders=pl.scan_parquet(orders), products=pl.scan_parquet(products))
        started = time.perf_counter()
        ctx.execute(sql).collect()
        return time.perf_counter() - started

    return {"DuckDB": duck, "DataFusion": fusion, "Polars": polars}


class Watch:
    """`kappa watch --json`, its updates on a queue."""

    def __init__(self, pipeline: pathlib.Path):
        self.process = subprocess.Popen(
            [KAPPA, "watch", "--json", pipeline],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        first = self.process.stderr.readline()
        assert first.startswith("watching"), first
        self.updates = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.process.stdout:
            self.updates.put(json.loads(line))

    def appended(self, timeout=60):
        while True:
            update = self.updates.get(timeout=timeout)
            if update["event"] == "appended":
                return update

    def drain(self):
        drained = []
        while True:
            try:
                drained.append(self.updates.get_nowait())
            except queue.Empty:
                return drained

    def stop(self):
        self.process.terminate()
        self.process.wait()


def append(path: pathlib.Path, text: str):
    with open(path, "a") as f:
        f.write(text)


def median_ms(values):
    return statistics.median(values) * 1000


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--lag-seconds", type=float, default=0)
    parser.add_argument("--rate", type=int, default=10_000)
    args = parser.parse_args()
    if not KAPPA.exists():
        sys.exit(f"build it first: cargo build --release -p kappa_tui ({KAPPA} is missing)")

    with tempfile.TemporaryDirectory() as tmp:
        directory = pathlib.Path(tmp)
        spare = Spare(generate(directory, args.events))
        to_parquet(directory)
        sqls = view_sql(directory)
        runners = peers(directory)
        watch = Watch(directory / "kappa.toml")
        kappa = {v: [] for v in VIEWS}
        peer_times = {name: {v: [] for v in VIEWS} for name in runners}
        lags = []
        for _ in range(args.runs):
            append(directory / "orders.jsonl", spare.take(APPEND))
            update = watch.appended()
            assert update["events"] == APPEND, update
            lags.append(update["lag_ms"])
            for change in update["views"]:
                if change["view"] in kappa:
                    kappa[change["view"]].append(change["secs"])
            for name, run in runners.items():
                for view in VIEWS:
                    peer_times[name][view].append(run(sqls[view]))
            time.sleep(1.0)  # the background recompute of the other views finishes
            watch.drain()

        print(f"### Appending {APPEND} events to a shop log of {args.events:,} events ({args.runs} runs, medians)\n")
        print("| view | Kappa incremental | DuckDB | DataFusion | Polars | fastest peer / Kappa |")
        print("|---|---|---|---|---|---|")
        for view in VIEWS:
            k = median_ms(kappa[view])
            p = {name: median_ms(peer_times[name][view]) for name in runners}
            fastest = min(p.values())
            print(
                f"| {view} | {k:.2f} ms | {p['DuckDB']:.1f} ms | {p['DataFusion']:.1f} ms | {p['Polars']:.1f} ms "
                f"| {fastest / k:.0f}x |"
            )
        print(f"\nlag from the append to the views updated: median {statistics.median(lags):.1f} ms\n")

        if args.lag_seconds > 0:
            watch.drain()
            per_slice = max(1, args.rate // 100)
            stop = time.monotonic() + args.lag_seconds
            written = 0
            next_slice = time.monotonic()
            while time.monotonic() < stop:
                append(directory / "orders.jsonl", spare.take(per_slice))
                written += per_slice
                next_slice += 0.01
                time.sleep(max(0.0, next_slice - time.monotonic()))
            time.sleep(2.0)
            updates = [u for u in watch.drain() if u["event"] == "appended"]
            lag = sorted(u["lag_ms"] for u in updates if u["lag_ms"] is not None)
            seen = sum(u["events"] for u in updates)
            p99 = lag[min(len(lag) - 1, int(len(lag) * 0.99))]
            print(
                f"### A writer at {args.rate:,} events/s for {args.lag_seconds:.0f} s, on a log of {args.events:,}\n\n"
                f"events written {written:,}, seen {seen:,}, in {len(updates)} updates; lag from the file change to "
                f"the views updated: p50 {statistics.median(lag):.1f} ms, p99 {p99:.1f} ms, max {lag[-1]:.1f} ms\n"
            )
        watch.stop()


if __name__ == "__main__":
    main()
