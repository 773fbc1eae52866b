#!/usr/bin/env python3
"""The write path against the peers' read path, and live lag.

1. Appending 1,000 events to a log of --events events (the shop, or Nexmark with --scenario nexmark): the time Kappa
   takes to bring each incremental view up to date (measured inside the engine and reported by `kappa watch --json`),
   against DuckDB, DataFusion (Python) and Polars computing the same view from Parquet, alternating, --runs times in
   the same run. Medians and ratios. A view over other views is computed by the peers from the log, through the same
   views (registered as SQL views); where a peer lacks a function (Polars: `date_bin`, `last_value ... ORDER BY`), an
   equivalent is used or the peer is left out of that row.
2. With --lag-seconds S: a writer appends --rate events/s (in slices every 10 ms) for S seconds while `kappa watch`
   follows the file; the lag from each file change to the views being up to date, as p50/p99/max.

Usage (after `cargo build --release -p kappa_tui` and `python3 -m venv bench/.venv && bench/.venv/bin/pip install
duckdb datafusion polars`):

    bench/.venv/bin/python bench/live_vs_peers.py --events 1000000 --runs 7 --lag-seconds 60
    bench/.venv/bin/python bench/live_vs_peers.py --scenario nexmark --events 1000000 --runs 7
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
SCENARIOS = {
    # The views measured, the log's file (without .jsonl) and its table.
    "shop": (["revenue_by_day", "customer_orders", "top_products", "order_status", "status_counts"], "orders", "orders"),
    "nexmark": (["q3", "q4", "q7", "q8"], "nexmark", "events"),
}
# DuckDB has no `last_value(... ORDER BY ...)` aggregate: `arg_max` is the same.
DUCK_ORDER_STATUS = """
SELECT order_id, arg_max(type, _offset) AS status, max(ts) AS updated_at
FROM orders WHERE order_id IS NOT NULL GROUP BY order_id
"""
APPEND = 1000
SPARE = 100_000


def generate(directory: pathlib.Path, scenario: str, events: int) -> list[str]:
    """The scenario at `events` events, and spare lines after them to append."""
    subprocess.run(
        [KAPPA, "gen", scenario, "--events", str(events + SPARE), "--out", directory],
        check=True,
        stderr=subprocess.DEVNULL,
    )
    log = directory / f"{SCENARIOS[scenario][1]}.jsonl"
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


def to_parquet(directory: pathlib.Path, log: str):
    import duckdb

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    # DuckDB reads `ts` as a timestamp; the shop's log has it as ISO 8601 text, and so does the Parquet copy. Kappa's
    # `_offset` (the record's position in the log) is added, for the views that order by it.
    source = f"read_json_auto('{directory / (log + '.jsonl')}', format='newline_delimited')"
    replace = "REPLACE (strftime(ts, '%Y-%m-%dT%H:%M:%S.%gZ') AS ts)" if log == "orders" else ""
    con.execute(
        f"COPY (SELECT * {replace}, row_number() OVER () - 1 AS _offset FROM {source}) "
        f"TO '{directory / (log + '.parquet')}' (FORMAT PARQUET)"
    )


def pipeline_views(directory: pathlib.Path) -> list:
    """The pipeline's views, in order: (name, SQL)."""
    pipeline = tomllib.loads((directory / "kappa.toml").read_text())
    return [(v["name"], v["sql"]) for v in pipeline["view"] if v.get("mode") != "on_read"]


def duck_sql(name: str, sql: str) -> str:
    if name == "order_status":
        return DUCK_ORDER_STATUS
    # DuckDB's `time_bucket` is `date_bin` (10-second buckets line up from either origin).
    return sql.replace("date_bin(", "time_bucket(")


def peers(directory: pathlib.Path, log: str, table: str):
    """Each peer: a function that computes a view from the Parquet copy of the log, through the views it reads."""
    import datafusion
    import duckdb
    import polars as pl

    data = str(directory / f"{log}.parquet")
    products = directory / "products.parquet"
    views = pipeline_views(directory)

    def duck(view):
        con = duckdb.connect()
        con.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet('{data}')")
        if products.exists():
            con.execute(f"CREATE VIEW products AS SELECT * FROM read_parquet('{products}')")
        for name, sql in views:
            if name == view:
                break
            con.execute(f"CREATE VIEW {name} AS {duck_sql(name, sql)}")
        sql = duck_sql(view, dict(views)[view])
        started = time.perf_counter()
        con.execute(sql).fetchall()
        return time.perf_counter() - started

    def fusion(view):
        ctx = datafusion.SessionContext()
        ctx.register_parquet(table, data)
        if products.exists():
            ctx.register_parquet("products", str(products))
        for name, sql in views:
            if name == view:
                break
            ctx.register_view(name, ctx.sql(sql))
        started = time.perf_counter()
        ctx.sql(dict(views)[view]).collect()
        return time.perf_counter() - started

    def polars(view):
        frames = {table: pl.scan_parquet(data)}
        if products.exists():
            frames["products"] = pl.scan_parquet(products)
        ctx = pl.SQLContext(frames)
        for name, sql in views:
            if name == view:
                break
            if name == "order_status":
                frame = (
                    frames[table]
                    .filter(pl.col("order_id").is_not_null())
                    .group_by("order_id")
                    .agg(pl.col("type").sort_by("_offset").last().alias("status"), pl.col("ts").max().alias("updated_at"))
                )
            else:
                frame = ctx.execute(sql, eager=False)
            ctx.register(name, frame)
        sql = dict(views)[view]
        if "date_bin(" in sql:
            return None
        started = time.perf_counter()
        if view == "order_status":
            (
                frames[table]
                .filter(pl.col("order_id").is_not_null())
                .group_by("order_id")
                .agg(pl.col("type").sort_by("_offset").last().alias("status"), pl.col("ts").max().alias("updated_at"))
                .collect()
            )
        else:
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
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), default="shop")
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--lag-seconds", type=float, default=0)
    parser.add_argument("--rate", type=int, default=10_000)
    args = parser.parse_args()
    if not KAPPA.exists():
        sys.exit(f"build it first: cargo build --release -p kappa_tui ({KAPPA} is missing)")

    views, log, table = SCENARIOS[args.scenario]
    with tempfile.TemporaryDirectory() as tmp:
        directory = pathlib.Path(tmp)
        spare = Spare(generate(directory, args.scenario, args.events))
        to_parquet(directory, log)
        runners = peers(directory, log, table)
        watch = Watch(directory / "kappa.toml")
        kappa = {v: [] for v in views}
        kinds = {}
        peer_times = {name: {v: [] for v in views} for name in runners}
        lags = []
        for _ in range(args.runs):
            append(directory / f"{log}.jsonl", spare.take(APPEND))
            update = watch.appended()
            assert update["events"] == APPEND, update
            lags.append(update["lag_ms"])
            for change in update["views"]:
                if change["view"] in kappa:
                    kappa[change["view"]].append(change["secs"])
                    kinds[change["view"]] = change["kind"]
            for name, run in runners.items():
                for view in views:
                    took = run(view)
                    if took is not None:
                        peer_times[name][view].append(took)
            time.sleep(1.0)  # the background recompute of the other views finishes
            watch.drain()

        print(
            f"### Appending {APPEND} events to a {args.scenario} log of {args.events:,} events ({args.runs} runs, "
            "medians)\n"
        )
        print("| view | kind | Kappa incremental | DuckDB | DataFusion | Polars | fastest peer / Kappa |")
        print("|---|---|---|---|---|---|---|")
        for view in views:
            if not kappa[view]:
                print(f"| {view} | - | not updated by the appends | | | | |")
                continue
            k = median_ms(kappa[view])
            p = {name: median_ms(peer_times[name][view]) if peer_times[name][view] else None for name in runners}
            fastest = min(v for v in p.values() if v is not None)
            cells = " | ".join("-" if p[n] is None else f"{p[n]:.1f} ms" for n in ["DuckDB", "DataFusion", "Polars"])
            print(f"| {view} | {kinds.get(view, '?')} | {k:.2f} ms | {cells} | {fastest / k:.0f}x |")
        print(f"\nlag from the append to the views updated: median {statistics.median(lags):.1f} ms\n")

        if args.lag_seconds > 0:
            watch.drain()
            per_slice = max(1, args.rate // 100)
            stop = time.monotonic() + args.lag_seconds
            written = 0
            next_slice = time.monotonic()
            while time.monotonic() < stop:
                append(directory / f"{log}.jsonl", spare.take(per_slice))
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
