#!/usr/bin/env python3
"""`kappa replay` against DuckDB, DataFusion (Python) and Polars computing the same views in batch (issue 31).

For each scenario and size, in one run, alternating the contenders, --runs times, medians:

* Kappa: `kappa replay --cache CACHE DIR/kappa.toml` from a warm log store (a first replay builds it and is not
  counted); its own events/s (the replay alone, progress included), and the rate over its first second (from its
  progress lines) to see whether it slows down as it goes.
* Each peer: every view of the pipeline, in the pipeline's order, each materialized and readable by the next, from a
  Parquet copy of the log written by Kappa itself (`kappa query ... --output`: the same columns and types, `_offset`
  included); its rate is the events divided by its in-process seconds (after the imports).

Before a ratio is printed, every view is checked: Kappa's views as the replay left them (`kappa replay --sql`, one
query that fingerprints them all) against each peer's: the row count, and per column the non-null count, the sum of a
number column (floats within 1e-9 relative) and the total length of a text column. A mismatch stops the run.

Scenarios: `shop` (`kappa gen shop`), `nexmark` (`kappa gen nexmark`), `nested` (`kappa gen nexmark --nested`: the
same events nested as Flink's datagen writes them). Where a peer cannot compute a view (Polars: `date_bin`, nested
fields in SQL, ordered `last_value`), its expression API is used; what still cannot is said in the table.

Usage (after `cargo build --release -p kappa_tui`; run with the system python3, the script makes bench/.venv with
duckdb, datafusion, polars and pyarrow if needed and re-runs itself in it):

    python3 bench/replay_peers.py --events 1000000 --runs 3
    python3 bench/replay_peers.py --events 1000000,10000000 --runs 3 --scenarios shop,nexmark,nested
"""

import argparse
import datetime
import json
import math
import os
import pathlib
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib

ROOT = pathlib.Path(__file__).resolve().parent.parent
VENV = ROOT / "bench" / ".venv"
PACKAGES = ["duckdb", "datafusion", "polars", "pyarrow"]
BENCHMARKS = ROOT / "BENCHMARKS.md"
BEGIN, END = "<!-- replay:begin -->", "<!-- replay:end -->"
PEERS = ["DuckDB", "DataFusion", "Polars"]
# scenario: (kappa gen arguments, the log's file, the log's table)
SCENARIOS = {
    "shop": (["shop"], "orders.jsonl", "orders"),
    "nexmark": (["nexmark"], "nexmark.jsonl", "events"),
    "nested": (["nexmark", "--nested"], "nexmark.jsonl", "events"),
}


def ensure_venv():
    """Runs the script in bench/.venv, made and filled first if need be."""
    python = VENV / "bin" / "python"
    if pathlib.Path(sys.prefix).resolve() != VENV.resolve():
        if not python.exists():
            print(f"creating {VENV}", file=sys.stderr)
            subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        os.execv(python, [str(python), str(pathlib.Path(__file__).resolve()), *sys.argv[1:]])
    try:
        import datafusion  # noqa: F401
        import duckdb  # noqa: F401
        import polars  # noqa: F401
        import pyarrow  # noqa: F401
    except ImportError:
        print(f"installing {' '.join(PACKAGES)} into {VENV}", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", *PACKAGES], check=True)
        os.execv(sys.executable, [sys.executable, str(pathlib.Path(__file__).resolve()), *sys.argv[1:]])


# The peers' side, run as `python -c PEER NAME SPEC_JSON`: computes every view from the Parquet copy (and the
# pipeline's other sources) and prints a JSON object: the in-process seconds and each view's fingerprint.
PEER = r'''
import json, re, sys, time
peer, spec = sys.argv[1], json.loads(sys.argv[2])
views, log, table = spec["views"], spec["parquet"], spec["table"]

def fingerprint(arrow_table):
    import pyarrow as pa
    import pyarrow.compute as pc
    out = {"rows": arrow_table.num_rows}
    for i, field in enumerate(arrow_table.schema):
        column = arrow_table.column(i)
        name = f"c{i}"
        out[name + "_n"] = arrow_table.num_rows - column.null_count
        t = field.type
        if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
            s = pc.sum(column.cast(pa.float64())).as_py()
            out[name + "_sum"] = s if s is not None else 0.0
        elif pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
            s = pc.sum(pc.utf8_length(column.cast(pa.string()))).as_py()
            out[name + "_len"] = s if s is not None else 0
    return out

out = {}
if peer == "DuckDB":
    import duckdb
    started = time.perf_counter()
    con = duckdb.connect()
    con.execute("SET enable_progress_bar = false")
    con.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet('{log}')")
    for name, path in spec["snapshots"].items():
        con.execute(f"CREATE VIEW {name} AS SELECT * FROM read_parquet('{path}')")
    for name, sql in views:
        # DuckDB's ordered last and first are arg_max and arg_min (its last_value is a window function only), and
        # its date_bin is time_bucket (10-second buckets line up from either origin).
        sql = re.sub(r"last_value\((\w+) ORDER BY (\w+)\)", r"arg_max(\1, \2)", sql)
        sql = re.sub(r"first_value\((\w+) ORDER BY (\w+)\)", r"arg_min(\1, \2)", sql)
        sql = sql.replace("date_bin(", "time_bucket(")
        con.execute(f"CREATE TABLE {name} AS {sql}")
    seconds = time.perf_counter() - started
    for name, _ in views:
        out[name] = fingerprint(con.execute(f"SELECT * FROM {name}").to_arrow_table())
elif peer == "DataFusion":
    import datafusion
    started = time.perf_counter()
    ctx = datafusion.SessionContext()
    ctx.register_parquet(table, log)
    for name, path in spec["snapshots"].items():
        ctx.register_parquet(name, path)
    results = {}
    for name, sql in views:
        results[name] = ctx.sql(sql).cache()
        ctx.register_view(name, results[name])
    seconds = time.perf_counter() - started
    for name, _ in views:
        out[name] = fingerprint(results[name].to_arrow_table())
elif peer == "Polars":
    import polars as pl
    started = time.perf_counter()
    frames = {table: pl.scan_parquet(log)}
    for name, path in spec["snapshots"].items():
        frames[name] = pl.scan_parquet(path)
    ctx = pl.SQLContext(frames=frames)
    results = {}
    def window(column):
        return pl.col(column).str.strptime(pl.Datetime("ms"), "%Y-%m-%dT%H:%M:%S%.3fZ").dt.truncate("10s")
    for name, sql in views:
        frame = None
        if "date_bin(INTERVAL '10 seconds'" in sql and name == "q8":
            # Polars SQL has no date_bin: people who opened an auction in the window they joined in.
            people = results["person"].lazy().with_columns(window("date_time").alias("window_start"))
            auctions = results["auction"].lazy().with_columns(window("date_time").alias("window_start"))
            frame = people.join(
                auctions, left_on=["id", "window_start"], right_on=["seller", "window_start"]
            ).select(["id", "name", "window_start"])
        elif "date_bin(INTERVAL '10 seconds'" in sql and name == "q7":
            # Polars SQL has no date_bin: 10-second windows in the expression API.
            frame = (
                results["bid"].lazy()
                .with_columns(window("date_time").alias("window_start"))
                .group_by("window_start")
                .agg(pl.col("price").max().alias("highest"), pl.len().cast(pl.Int64).alias("bids"))
            )
        elif "last_value(type ORDER BY _offset)" in sql:
            # No ordered aggregates in Polars SQL: last_value(... ORDER BY _offset) in the expression API.
            frame = (
                frames[table].filter(pl.col("order_id").is_not_null())
                .group_by("order_id")
                .agg(pl.col("type").sort_by("_offset").last().alias("status"), pl.col("ts").max().alias("updated_at"))
            )
        elif '."' in sql or re.search(r"\b(person|auction|bid)\.\w+ AS", sql) and name in ("person", "auction", "bid") and spec["nested"]:
            # Nested fields: struct.field in the expression API.
            kind = {"person": 0, "auction": 1, "bid": 2}[name]
            fields = re.findall(r"(person|auction|bid)\.\"?(\w+)\"? AS (\w+)", sql)
            frame = frames[table].filter(pl.col("event_type") == kind).select(
                [pl.col(s).struct.field(f).alias(a) for s, f, a in fields]
            )
        if frame is None:
            frame = ctx.execute(sql)
        results[name] = frame.collect()
        ctx.register(name, results[name])
    seconds = time.perf_counter() - started
    for name, _ in views:
        out[name] = fingerprint(results[name].to_arrow())
print(json.dumps({"seconds": seconds, "fingerprint": out}))
'''


def same(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        # Sums in another order: equal to the last bits.
        numbers = isinstance(a, (int, float)) and isinstance(b, (int, float))
        return numbers and math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-6)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a == b


def run(cmd, who: str, **kwargs):
    done = subprocess.run(list(map(str, cmd)), capture_output=True, text=True, **kwargs)
    if done.returncode != 0:
        raise SystemExit(f"{who} failed (exit {done.returncode}): {' '.join(map(str, cmd))[:300]}\n{done.stderr[-3000:]}")
    return done


def pipeline_views(directory: pathlib.Path):
    """Every view of the pipeline (name, SQL), in the file's order, and its snapshot sources (name, path)."""
    spec = tomllib.loads((directory / "kappa.toml").read_text())
    views = [(v["name"], v["sql"]) for v in spec.get("view", [])]
    snapshots = {s["name"]: str(directory / s["path"]) for s in spec.get("source", []) if s.get("kind") == "snapshot"}
    return views, snapshots


def prepare(kappa: pathlib.Path, work: pathlib.Path, scenario: str, events: int) -> pathlib.Path:
    """The scenario at `events` events, generated once and reused, with its log as Parquet beside it (written by
    Kappa) and the snapshots as Parquet."""
    gen, log, table = SCENARIOS[scenario]
    directory = work / f"{scenario}-{events}"
    done = directory / ".replay-generated"
    if not (done.exists() and done.read_text().strip() == str(events)):
        print(f"generating {scenario} at {events:,} events into {directory}", file=sys.stderr)
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
        run([kappa, "gen", *gen, "--events", events, "--out", directory], "kappa gen")
        done.write_text(f"{events}\n")
    parquet = directory / f"{table}.parquet"
    if not parquet.exists():
        print(f"writing {parquet} with Kappa", file=sys.stderr)
        # A pipeline of the log alone: the views are not computed for it.
        only = directory / "log-only.toml"
        only.write_text(f'[[source]]\nname = "{table}"\npath = "{log}"\nkind = "log"\n')
        run([kappa, "query", only, "--sql", f"SELECT * FROM {table}", "--output", parquet], "kappa query --output")
    return directory


def fingerprint_sql(views, columns) -> str:
    """One SELECT whose one column per view is a struct: the same figures the peers' fingerprint() computes."""
    parts = []
    for name, _ in views:
        fields = ["'rows', count(*)"]
        for i, (column, kind) in enumerate(columns[name]):
            quoted = '"' + column.replace('"', '""') + '"'
            fields.append(f"'c{i}_n', count({quoted})")
            if kind == "number":
                fields.append(f"'c{i}_sum', coalesce(sum(CAST({quoted} AS DOUBLE)), 0.0)")
            elif kind == "text":
                fields.append(f"'c{i}_len', coalesce(sum(character_length({quoted})), 0)")
        parts.append(f"(SELECT named_struct({', '.join(fields)}) FROM {name}) AS \"{name}\"")
    return "SELECT " + ", ".join(parts)


def view_columns(kappa: pathlib.Path, directory: pathlib.Path, cache: pathlib.Path, views):
    """Each view's columns and whether each is a number or text (from a Parquet file of its rows)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = {}
    with tempfile.TemporaryDirectory() as scratch:
        for name, _ in views:
            path = pathlib.Path(scratch) / f"{name}.parquet"
            run([kappa, "query", "--cache", cache, directory / "kappa.toml", "--sql", f"SELECT * FROM {name} LIMIT 1",
                 "--output", path], "kappa query")
            schema = pq.read_schema(path)
            kinds = []
            for field in schema:
                t = field.type
                if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
                    kinds.append((field.name, "number"))
                elif pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
                    kinds.append((field.name, "text"))
                else:
                    kinds.append((field.name, "other"))
            out[name] = kinds
    return out


PROGRESS = re.compile(r"replay: offset (\d+)/(\d+) \(\d+%\), (\d+) events/s, elapsed ([0-9.]+) s")
SUMMARY = re.compile(r"replayed (\d+) events to offset \d+ in ([0-9.]+) s \((\d+) events/s\)")


def kappa_replay(kappa, directory, cache, sql):
    """One replay: its events/s, the rate over its first second (None when it took less), and the fingerprint."""
    done = run([kappa, "replay", "--cache", cache, directory / "kappa.toml", "--sql", sql, "--format", "json"],
               "kappa replay", stdin=subprocess.DEVNULL)
    summary = SUMMARY.search(done.stderr)
    if not summary:
        raise SystemExit(f"kappa replay printed no summary:\n{done.stderr[-2000:]}")
    first = None
    for line in done.stderr.splitlines():
        m = PROGRESS.search(line)
        if m and float(m.group(4)) >= 1.0:
            first = int(m.group(3))
            break
    rows = json.loads(done.stdout)
    return int(summary.group(3)), first, rows[0]


def peer_run(peer, spec):
    done = run([sys.executable, "-c", PEER, peer, json.dumps(spec)], peer)
    return json.loads(done.stdout.strip().splitlines()[-1])


def check(who, scenario, got, reference):
    for name, value in reference.items():
        mine = got.get(name)
        if not same(mine, value):
            raise SystemExit(
                f"MISMATCH in {scenario}: {who}'s `{name}` differs from Kappa's, so the work compared is not the same.\n"
                f"  {who}: {json.dumps(mine)[:800]}\n  Kappa: {json.dumps(value)[:800]}"
            )


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", default="1000000", help="comma-separated sizes")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--scenarios", default="shop,nexmark,nested")
    parser.add_argument("--kappa", default=str(ROOT / "target" / "release" / "kappa"))
    parser.add_argument("--work", default=str(pathlib.Path(tempfile.gettempdir()) / "kappa-replay-peers"))
    parser.add_argument("--no-write", action="store_true", help="print the tables, leave BENCHMARKS.md as it is")
    args = parser.parse_args()
    ensure_venv()
    import datafusion
    import duckdb
    import polars
    import pyarrow

    kappa = pathlib.Path(args.kappa)
    if not kappa.exists():
        sys.exit(f"build it first: cargo build --release -p kappa_tui ({kappa} is missing)")
    version = run([kappa, "--version"], "kappa").stdout.strip()
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True).stdout.strip()
    work = pathlib.Path(args.work)
    started = datetime.datetime.now(datetime.timezone.utc)
    load = os.getloadavg()[0]
    rows = []
    notes = []
    for events in [int(e) for e in args.events.split(",")]:
        for scenario in args.scenarios.split(","):
            directory = prepare(kappa, work, scenario, events)
            _, _, table = SCENARIOS[scenario]
            views, snapshots = pipeline_views(directory)
            snapshot_parquet = {}
            for name, path in snapshots.items():
                if path.endswith(".parquet"):
                    snapshot_parquet[name] = path
            cache = directory / "cache"
            if not cache.exists():
                print(f"building the log store of {directory}", file=sys.stderr)
                run([kappa, "replay", "--cache", cache, directory / "kappa.toml"], "kappa replay (warm-up)")
            columns = view_columns(kappa, directory, cache, views)
            sql = fingerprint_sql(views, columns)
            spec = {"views": views, "parquet": str(directory / f"{table}.parquet"), "table": table,
                    "snapshots": snapshot_parquet, "nested": scenario == "nested"}
            rates = {who: [] for who in ["Kappa", *PEERS]}
            firsts = []
            failed = {}
            for r in range(args.runs):
                rate, first, reference = kappa_replay(kappa, directory, cache, sql)
                rates["Kappa"].append(rate)
                if first:
                    firsts.append(first)
                print(f"{scenario} {events:,} run {r + 1}: Kappa {rate:,} events/s (first second {first})", file=sys.stderr)
                for peer in PEERS:
                    if peer in failed:
                        continue
                    try:
                        result = peer_run(peer, spec)
                    except SystemExit as e:
                        lines = [l for l in str(e).splitlines() if l.strip()]
                        failed[peer] = next((l for l in reversed(lines) if "Error" in l), lines[-1])[:300]
                        print(f"{peer} cannot compute {scenario}: {failed[peer]}", file=sys.stderr)
                        continue
                    check(peer, scenario, result["fingerprint"], reference)
                    rate = events / result["seconds"]
                    rates[peer].append(rate)
                    print(f"{scenario} {events:,} run {r + 1}: {peer} {rate:,.0f} events/s", file=sys.stderr)
            medians = {who: statistics.median(v) for who, v in rates.items() if v}
            best_peer = max((p for p in PEERS if p in medians), key=lambda p: medians[p])
            ratio = medians["Kappa"] / medians[best_peer]
            first = statistics.median(firsts) if firsts else None
            decay = medians["Kappa"] / first if first else None
            rows.append((scenario, events, medians, best_peer, ratio, first, decay, rates))
            for peer, why in failed.items():
                notes.append(f"{peer} could not compute the {scenario} views at {events:,} events: {why}")
    lines = [
        f"Measured by `bench/replay_peers.py --events {args.events} --runs {args.runs} --scenarios {args.scenarios}` on "
        f"{started:%Y-%m-%d %H:%M} UTC; {os.cpu_count()} cores, load average {load:.1f} at the start. Kappa: {version} "
        f"(commit {commit}{' with local changes' if dirty else ''}); DuckDB {duckdb.__version__}, DataFusion "
        f"{datafusion.__version__} (Python), Polars {polars.__version__}, pyarrow {pyarrow.__version__}.",
        "",
        "| log | events | Kappa replay | DuckDB | DataFusion | Polars | Kappa / fastest peer | whole / first second |",
        "|---|---|---|---|---|---|---|---|",
    ]
    fmt = lambda m, who: f"{m[who]:,.0f}" if who in m else "n/a"  # noqa: E731
    for scenario, events, medians, best, ratio, first, decay, _ in rows:
        lines.append(
            f"| {scenario} | {events:,} | {fmt(medians, 'Kappa')} | {fmt(medians, 'DuckDB')} | {fmt(medians, 'DataFusion')} "
            f"| {fmt(medians, 'Polars')} | **{ratio:.2f}x** ({best}) | {f'{decay:.2f}' if decay else 'n/a (under 1 s)'} |"
        )
    lines += ["", "Events/s, medians of the runs. Runs:", ""]
    for scenario, events, _, _, _, _, _, rates in rows:
        lines.append(f"* {scenario} {events:,}: " + "; ".join(
            f"{who} " + ", ".join(f"{r / 1e6:.2f}M" for r in v) for who, v in rates.items() if v))
    if notes:
        lines += [""] + [f"* {n}" for n in notes]
    section = "\n".join(lines)
    print(section)
    if not args.no_write:
        text = BENCHMARKS.read_text()
        if BEGIN in text and END in text:
            head, rest = text.split(BEGIN, 1)
            _, tail = rest.split(END, 1)
            BENCHMARKS.write_text(f"{head}{BEGIN}\n{section}\n{END}{tail}")
            print(f"wrote the section into {BENCHMARKS}", file=sys.stderr)
        else:
            print(f"{BENCHMARKS} has no {BEGIN} ... {END} markers: not written", file=sys.stderr)


if __name__ == "__main__":
    main()
