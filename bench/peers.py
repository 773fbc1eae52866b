#!/usr/bin/env python3
"""Kappa against DuckDB, DataFusion (Python) and Polars: cold open, re-open, replay and memory (issue 8).

On the shop log generated at each --events size (`kappa gen shop`), alternating Kappa and each peer, --runs times,
medians:

* P1 cold open: from process start to result, open the JSONL log and compute revenue_by_day, customer_orders and
  top_products. Every contender is a fresh process: `kappa query DIR/kappa.toml --sql ...` (one process opens the
  pipeline and answers for the three views), and `python -c ...` for each peer, which loads orders.jsonl into memory
  once (with the log's schema given), products from products.parquet, and materializes the three views.
* P1 re-open: the same again. Kappa gets the `--cache` folder its cold run filled (when the binary has `--cache`);
  the peers have no cache, so their re-open is a second cold open.
* Replay: `kappa replay DIR/kappa.toml` (warm cache) reports events/s; the peers' figure is the events divided by
  their in-process time (imports excluded) to compute all six shop views from orders.parquet.
* Memory: the peak RSS of each cold-open process (wait4's ru_maxrss), against the Arrow size of the data
  (pyarrow.json's read of orders.jsonl plus products.parquet, `Table.nbytes`).

Every contender's results are checked against Kappa's (the three views, and all six for replay): full rows of the
small views, row counts and column sums of the others. A mismatch stops the run.

--with-live and --with-diff also run bench/live_vs_peers.py and bench/diff_vs_duckdb.py at each size and include
their tables. The Markdown goes to stdout and into BENCHMARKS.md between `<!-- peers:begin -->` and
`<!-- peers:end -->` (unless --no-write); each run's numbers go to stderr as they come.

Usage (after `cargo build --release -p kappa_tui`; run with the system python3, the script makes bench/.venv with
duckdb, datafusion, polars and pyarrow if needed and re-runs itself in it):

    bench/peers.py --events 1000000,10000000 --runs 5
    bench/peers.py --events 200000 --runs 2 --no-write
    bench/peers.py --events 1000000 --runs 5 --with-live --with-diff
"""

import argparse
import datetime
import json
import math
import os
import pathlib
import re
import shlex
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
BEGIN, END = "<!-- peers:begin -->", "<!-- peers:end -->"
HEADING = "## Peers: cold open, re-open, replay, memory (issue 8)"

PEERS = ["DuckDB", "DataFusion", "Polars"]
CONTENDERS = ["Kappa", *PEERS]
P1_VIEWS = ["revenue_by_day", "customer_orders", "top_products"]
# The shop log's fields and their types, as Kappa infers them (`kappa sources`); the peers are given them.
SCHEMA = [
    ("event_id", "string"),
    ("ts", "string"),
    ("type", "string"),
    ("customer_id", "int64"),
    ("product_id", "int64"),
    ("order_id", "int64"),
    ("qty", "int64"),
    ("amount", "float64"),
]
# What is compared between contenders, per view: every row of the small views (as a multiset), the row count and
# the column sums of the large ones.
FINGERPRINT = {
    "revenue_by_day": ("rows", ["day", "payments", "revenue"]),
    "order_status": ("sums", ["order_id"]),
    "top_products": ("rows", ["product_id", "name", "category", "units", "revenue"]),
    "customer_orders": ("sums", ["orders", "spent"]),
    "status_counts": ("rows", ["status", "orders"]),
    "loyal_customers": ("sums", ["orders", "spent"]),
}
GOALS = "cold open ≤ 1.0x the fastest peer, re-open ≤ 0.1x, replay ≥ 5M events/s, peak RSS ≤ 1.5x the Arrow size"


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


# The peers' side, run as `python -c PEER NAME MODE SPEC_JSON`. MODE "open": load orders.jsonl into memory, compute
# and materialize SPEC's views (P1). MODE "replay": compute and materialize them from orders.parquet. Prints a JSON
# object: the in-process seconds (after the imports, before the fingerprint) and the fingerprint of every view.
PEER = r'''
import json, re, sys, time
peer, mode, spec = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
views, shape = spec["views"], spec["fingerprint"]

def fingerprint(name, count, sums, rows):
    kind, columns = shape[name]
    if kind == "rows":
        return [dict(zip(columns, row)) for row in rows]
    return {"rows": count, **dict(zip(columns, sums))}

out = {}
if peer == "DuckDB":
    import duckdb
    started = time.perf_counter()
    con = duckdb.connect()
    con.execute("SET enable_progress_bar = false")  # it prints to stdout on long queries (10M events)
    types = {"string": "VARCHAR", "int64": "BIGINT", "float64": "DOUBLE"}
    if mode == "open":
        columns = "{" + ", ".join(f"'{c}': '{types[t]}'" for c, t in spec["schema"]) + "}"
        con.execute(f"CREATE TABLE orders AS SELECT * FROM read_json('{spec['jsonl']}', "
                    f"format = 'newline_delimited', columns = {columns})")
        con.execute(f"CREATE TABLE products AS SELECT * FROM read_parquet('{spec['products']}')")
    else:
        con.execute(f"CREATE VIEW orders AS SELECT * FROM read_parquet('{spec['parquet']}')")
        con.execute(f"CREATE VIEW products AS SELECT * FROM read_parquet('{spec['products']}')")
    for name, sql in views:
        # DuckDB's ordered last is arg_max (its last_value is a window function only).
        sql = re.sub(r"last_value\((\w+) ORDER BY (\w+)\)", r"arg_max(\1, \2)", sql)
        con.execute(f"CREATE TABLE {name} AS {sql}")
    seconds = time.perf_counter() - started
    for name, _ in views:
        kind, columns = shape[name]
        if kind == "rows":
            rows = con.execute(f"SELECT {', '.join(columns)} FROM {name}").fetchall()
            out[name] = fingerprint(name, None, None, rows)
        else:
            row = con.execute(f"SELECT count(*), {', '.join(f'sum({c})' for c in columns)} FROM {name}").fetchone()
            out[name] = fingerprint(name, row[0], row[1:], None)
elif peer == "DataFusion":
    import datafusion
    import pyarrow as pa
    import pyarrow.compute as pc
    started = time.perf_counter()
    ctx = datafusion.SessionContext()
    if mode == "open":
        schema = pa.schema([(c, getattr(pa, t)()) for c, t in spec["schema"]])
        orders = ctx.read_json(spec["jsonl"], schema=schema, file_extension=".jsonl")
        ctx.register_view("orders", orders.cache())
        ctx.register_view("products", ctx.read_parquet(spec["products"]).cache())
    else:
        ctx.register_parquet("orders", spec["parquet"])
        ctx.register_parquet("products", spec["products"])
    results = {}
    for name, sql in views:
        results[name] = ctx.sql(sql).cache()
        ctx.register_view(name, results[name])
    seconds = time.perf_counter() - started
    for name, _ in views:
        kind, columns = shape[name]
        table = results[name].to_arrow_table()
        if kind == "rows":
            out[name] = fingerprint(name, None, None, zip(*(table.column(c).to_pylist() for c in columns)))
        else:
            out[name] = fingerprint(name, table.num_rows, [pc.sum(table.column(c)).as_py() for c in columns], None)
elif peer == "Polars":
    import polars as pl
    started = time.perf_counter()
    types = {"string": pl.String, "int64": pl.Int64, "float64": pl.Float64}
    if mode == "open":
        orders = pl.read_ndjson(spec["jsonl"], schema={c: types[t] for c, t in spec["schema"]}).lazy()
        products = pl.read_parquet(spec["products"]).lazy()
    else:
        orders = pl.scan_parquet(spec["parquet"])
        products = pl.scan_parquet(spec["products"])
    ctx = pl.SQLContext(orders=orders, products=products)
    results = {}
    for name, sql in views:
        if name == "order_status":
            # Polars SQL has no ordered aggregates: last_value(type ORDER BY _offset) in the expression API.
            frame = (
                orders.filter(pl.col("order_id").is_not_null())
                .group_by("order_id")
                .agg(pl.col("type").sort_by("_offset").last().alias("status"), pl.col("ts").max().alias("updated_at"))
            )
        else:
            frame = ctx.execute(sql)
        results[name] = frame.collect()
        ctx.register(name, results[name])
    seconds = time.perf_counter() - started
    for name, _ in views:
        kind, columns = shape[name]
        frame = results[name]
        if kind == "rows":
            out[name] = fingerprint(name, None, None, frame.select(columns).rows())
        else:
            out[name] = fingerprint(name, frame.height, [frame[c].sum() for c in columns], None)
print(json.dumps({"seconds": seconds, "fingerprint": out}))
'''


def kappa_fingerprint_sql(views) -> str:
    """One SELECT with one column per view, as Kappa's `--format json` prints it: an array of row objects for the
    small views, an object of the row count and column sums for the others."""
    columns = []
    for name in views:
        kind, fields = FINGERPRINT[name]
        if kind == "rows":
            struct = ", ".join(f"'{f}', {f}" for f in fields)
            columns.append(f"(SELECT array_agg(named_struct({struct})) FROM {name}) AS {name}")
        else:
            struct = ", ".join(["'rows', count(*)", *(f"'{f}', sum({f})" for f in fields)])
            columns.append(f"(SELECT named_struct({struct}) FROM {name}) AS {name}")
    return "SELECT " + ", ".join(columns)


def same(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        # Sums in another order: equal to the last bits, and a rounded sum may fall on the other side of a cent.
        numbers = isinstance(a, (int, float)) and isinstance(b, (int, float))
        return numbers and math.isclose(a, b, rel_tol=1e-9, abs_tol=0.0100001)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def canonical(fingerprint: dict) -> dict:
    """Rows of the small views sorted (compared as multisets); an empty array_agg (NULL) is no rows."""
    out = {}
    for name, value in fingerprint.items():
        kind, columns = FINGERPRINT[name]
        if kind == "rows":
            value = sorted(value or [], key=lambda row: json.dumps([row.get(c) for c in columns], default=str))
        out[name] = value
    return out


def check(who: str, what: str, got: dict, reference: dict):
    got = canonical(got)
    for name in got:
        if not same(got[name], reference[name]):
            show = lambda v: json.dumps(v, default=str)[:600]  # noqa: E731
            raise SystemExit(
                f"MISMATCH: {who}'s {name} ({what}) differs from Kappa's, so the work compared is not the same.\n"
                f"  {who}: {show(got[name])}\n  Kappa: {show(reference[name])}"
            )


# Spawns argv[2:] and writes its wall time and peak RSS to the file argv[1]. A process's peak RSS (ru_maxrss)
# starts from the RSS of the process it was exec'd from (Linux carries the old memory's high-water mark across
# exec, and Python spawns with vfork), so the contenders are spawned from this small interpreter (`python -S`, no
# imports beyond os, sys and time), not from the benchmark's own, which holds pyarrow and the peers' libraries.
LAUNCH = r"""
import os, sys, time
started = time.perf_counter()
pid = os.posix_spawnp(sys.argv[2], sys.argv[2:], os.environ)
_, status, usage = os.wait4(pid, 0)
seconds = time.perf_counter() - started
with open(sys.argv[1], "w") as f:
    f.write(f"{seconds} {usage.ru_maxrss} {os.waitstatus_to_exitcode(status)}")
"""


def measured(cmd, who: str):
    """Runs cmd to completion: wall seconds from just before the spawn to its exit, peak RSS in bytes, stdout."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, tempfile.NamedTemporaryFile("r") as report:
        launch = [sys.executable, "-S", "-c", LAUNCH, report.name, *map(str, cmd)]
        subprocess.run(launch, stdout=out, stderr=err, check=True)
        seconds, maxrss, code = report.read().split()
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if int(code) != 0:
        raise SystemExit(f"{who} failed (exit {code}): {shlex.join(map(str, cmd))[:300]}\n{stderr[-3000:]}")
    return float(seconds), int(maxrss) * 1024, stdout


class Kappa:
    def __init__(self, binary: pathlib.Path):
        self.binary = binary
        if not binary.exists():
            sys.exit(f"build it first: cargo build --release -p kappa_tui ({binary} is missing)")
        sub = subprocess.run([binary, "query", "--help"], capture_output=True, text=True).stdout
        top = subprocess.run([binary, "--help"], capture_output=True, text=True).stdout
        # `--cache DIR` (the parsed log's cache): after the subcommand if it shows in its help (a global option),
        # before it if only the top level has it, not at all if this build has none.
        self.cache = "sub" if "--cache" in sub else "top" if "--cache" in top else None
        self.version = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout.strip()

    def cmd(self, subcommand: str, args, cache):
        if self.cache is None or cache is None:
            return [self.binary, subcommand, *args]
        if self.cache == "top":
            return [self.binary, "--cache", cache, subcommand, *args]
        return [self.binary, subcommand, "--cache", cache, *args]


def prepare(kappa: Kappa, work: pathlib.Path, events: int) -> pathlib.Path:
    """The shop at `events` events in work/<events>, generated once and reused, with orders.parquet beside it."""
    directory = work / str(events)
    done = directory / ".peers-generated"
    if done.exists() and done.read_text().strip() == str(events):
        print(f"reusing {directory}", file=sys.stderr)
    else:
        print(f"generating {events:,} events into {directory}", file=sys.stderr)
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
        subprocess.run([kappa.binary, "gen", "shop", "--events", str(events), "--out", directory], check=True)
        done.write_text(f"{events}\n")
    parquet = directory / "orders.parquet"
    if not parquet.exists():
        import duckdb

        print(f"converting {directory / 'orders.jsonl'} to Parquet", file=sys.stderr)
        types = {"string": "VARCHAR", "int64": "BIGINT", "float64": "DOUBLE"}
        columns = "{" + ", ".join(f"'{c}': '{types[t]}'" for c, t in SCHEMA) + "}"
        partial = directory / "orders.parquet.partial"
        # `_offset` (Kappa's record offset, used by order_status) is the line's number from 0; `ts` stays text.
        duckdb.connect().execute(
            f"COPY (SELECT ordinality - 1 AS _offset, * EXCLUDE (ordinality) "
            f"FROM read_json('{directory / 'orders.jsonl'}', format = 'newline_delimited', columns = {columns}) "
            f"WITH ORDINALITY) TO '{partial}' (FORMAT PARQUET)"
        )
        partial.rename(parquet)
    return directory


def arrow_size(directory: pathlib.Path) -> int:
    import pyarrow as pa
    import pyarrow.json as pj
    import pyarrow.parquet as pq

    schema = pa.schema([(c, getattr(pa, t)()) for c, t in SCHEMA])
    orders = pj.read_json(
        directory / "orders.jsonl",
        parse_options=pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="error"),
    )
    size = orders.nbytes + pq.read_table(directory / "products.parquet").nbytes
    del orders
    return size


def mib(n) -> float:
    return n / 2**20


def progress(events, run, runs, what, who, text):
    print(f"[{events:,} run {run}/{runs}] {what:<9} {who:<10} {text}", file=sys.stderr, flush=True)


def bench_size(kappa: Kappa, work: pathlib.Path, events: int, runs: int) -> dict:
    directory = prepare(kappa, work, events)
    pipeline = directory / "kappa.toml"
    views = [(v["name"], v["sql"]) for v in tomllib.loads(pipeline.read_text())["view"]]
    if sorted(name for name, _ in views) != sorted(FINGERPRINT):
        raise SystemExit(f"{pipeline}: expected the views {sorted(FINGERPRINT)}, found {[n for n, _ in views]}")
    p1_views = [(n, s) for n, s in views if n in P1_VIEWS]
    python = sys.executable
    base = {
        "schema": SCHEMA,
        "fingerprint": FINGERPRINT,
        "jsonl": str(directory / "orders.jsonl"),
        "parquet": str(directory / "orders.parquet"),
        "products": str(directory / "products.parquet"),
    }
    open_spec = json.dumps({**base, "views": p1_views})
    replay_spec = json.dumps({**base, "views": views})
    p1_sql = kappa_fingerprint_sql(P1_VIEWS)

    size = {
        "events": events,
        "jsonl_bytes": (directory / "orders.jsonl").stat().st_size,
        "parquet_bytes": (directory / "orders.parquet").stat().st_size,
    }
    print("measuring the Arrow size (pyarrow.json)", file=sys.stderr)
    size["arrow_bytes"] = arrow_size(directory)

    # The reference: Kappa's six views, untimed (this also warms the OS page cache for everyone).
    with tempfile.TemporaryDirectory(dir=work) as cache:
        _, _, out = measured(
            kappa.cmd("query", [pipeline, "--format", "json", "--sql", kappa_fingerprint_sql(FINGERPRINT)], cache),
            "kappa query (reference)",
        )
    reference = canonical(json.loads(out)[0])
    print(
        "reference (Kappa): "
        + ", ".join(
            f"{n} {len(v) if isinstance(v, list) else v['rows']:,} rows" for n, v in reference.items()
        ),
        file=sys.stderr,
    )

    cold = {c: [] for c in CONTENDERS}
    reopen = {c: [] for c in CONTENDERS}
    rss = {c: [] for c in CONTENDERS}
    rss_reopen = {c: [] for c in CONTENDERS}
    replay_rate = {c: [] for c in CONTENDERS}
    replay_secs = {c: [] for c in CONTENDERS}
    kappa_replay_process = []
    for run in range(1, runs + 1):
        cache = tempfile.mkdtemp(prefix="cache-", dir=work)  # fresh and empty: the cold open fills it
        try:
            for phase, times, peaks in (("P1 cold", cold, rss), ("P1 reopen", reopen, rss_reopen)):
                for who in CONTENDERS:
                    if who == "Kappa":
                        cmd = kappa.cmd("query", [pipeline, "--format", "json", "--sql", p1_sql], cache)
                    else:
                        cmd = [python, "-c", PEER, who, "open", open_spec]
                    seconds, peak, out = measured(cmd, f"{who} ({phase})")
                    result = json.loads(out)
                    check(who, phase, result[0] if who == "Kappa" else result["fingerprint"], reference)
                    times[who].append(seconds)
                    peaks[who].append(peak)
                    progress(events, run, runs, phase, who, f"{seconds:7.3f} s  peak RSS {mib(peak):7.1f} MiB")
            seconds, _, out = measured(kappa.cmd("replay", [pipeline], cache), "kappa replay")
            found = re.search(r"replayed (\d+) events to offset \d+ in ([\d.]+) s \((\d+) events/s\)", out)
            if not found or int(found[1]) != events:
                raise SystemExit(f"kappa replay: expected 'replayed {events} events ... (N events/s)', got: {out!r}")
            kappa_replay_process.append(seconds)
            replay_rate["Kappa"].append(int(found[3]))
            replay_secs["Kappa"].append(float(found[2]))
            progress(events, run, runs, "replay", "Kappa", f"{int(found[3]):>11,} events/s  (process {seconds:.3f} s)")
            for who in PEERS:
                _, _, out = measured([python, "-c", PEER, who, "replay", replay_spec], f"{who} (replay)")
                result = json.loads(out)
                check(who, "replay", result["fingerprint"], reference)
                replay_secs[who].append(result["seconds"])
                replay_rate[who].append(events / result["seconds"])
                rate = f"{events / result['seconds']:>11,.0f} events/s  ({result['seconds']:.3f} s)"
                progress(events, run, runs, "replay", who, rate)
        finally:
            shutil.rmtree(cache, ignore_errors=True)
    med = statistics.median
    return {
        **size,
        "runs": runs,
        "cold": {c: med(v) for c, v in cold.items()},
        "reopen": {c: med(v) for c, v in reopen.items()},
        "rss": {c: med(v) for c, v in rss.items()},
        "rss_reopen": {c: med(v) for c, v in rss_reopen.items()},
        "replay_rate": {c: med(v) for c, v in replay_rate.items()},
        "replay_secs": {c: med(v) for c, v in replay_secs.items()},
        "kappa_replay_process": med(kappa_replay_process),
        "raw": {"cold": cold, "reopen": reopen, "replay_rate": replay_rate},
    }


def verdict(ok: bool) -> str:
    return "met" if ok else "**not met**"


def table(r: dict, cache: bool) -> str:
    arrow = r["arrow_bytes"]
    fastest = lambda m: min(r[m][p] for p in PEERS)  # noqa: E731
    cold_ratio = r["cold"]["Kappa"] / fastest("cold")
    reopen_ratio = r["reopen"]["Kappa"] / fastest("reopen")
    best_rate = max(r["replay_rate"][p] for p in PEERS)
    rss_peer = fastest("rss")
    rss_arrow = r["rss"]["Kappa"] / arrow
    row = lambda label, values, ratio, goal: (  # noqa: E731
        f"| {label} | " + " | ".join(values[c] for c in CONTENDERS) + f" | {ratio} | {goal} |"
    )
    secs = lambda m: {c: f"{r[m][c]:.3f}" for c in CONTENDERS}  # noqa: E731
    lines = [
        f"| measure | {' | '.join(CONTENDERS)} | Kappa / best peer | goal |",
        "|---|" + "---|" * (len(CONTENDERS) + 2),
        row("P1 cold open (s)", secs("cold"), f"**{cold_ratio:.2f}x**", f"≤ 1.0x: {verdict(cold_ratio <= 1.0)}"),
        row(
            "P1 re-open (s)" + ("" if cache else ", no cache in this build"),
            secs("reopen"),
            f"**{reopen_ratio:.2f}x**",
            f"≤ 0.1x: {verdict(reopen_ratio <= 0.1)}",
        ),
        row(
            "replay (events/s)",
            {c: f"{r['replay_rate'][c]:,.0f}" for c in CONTENDERS},
            f"{r['replay_rate']['Kappa'] / best_rate:.2f}x",
            f"≥ 5M events/s: {verdict(r['replay_rate']['Kappa'] >= 5e6)}",
        ),
        row(
            "peak RSS, cold open (MiB)",
            {c: f"{mib(r['rss'][c]):.0f}" for c in CONTENDERS},
            f"{r['rss']['Kappa'] / rss_peer:.2f}x",
            "",
        ),
        row(
            "peak RSS, re-open (MiB)",
            {c: f"{mib(r['rss_reopen'][c]):.0f}" for c in CONTENDERS},
            f"{r['rss_reopen']['Kappa'] / fastest('rss_reopen'):.2f}x",
            "",
        ),
        row(
            "peak RSS (cold) / Arrow size",
            {c: f"{r['rss'][c] / arrow:.2f}x" for c in CONTENDERS},
            "",
            f"≤ 1.5x: {verdict(rss_arrow <= 1.5)}",
        ),
    ]
    return "\n".join(lines)


def machine() -> str:
    model = "?"
    for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    memory = "?"
    for line in pathlib.Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal"):
            memory = f"{int(line.split()[1]) / 2**20:.0f} GiB"
    load = os.getloadavg()[0]
    return f"{os.cpu_count()} cores ({model}), {memory}, load average {load:.1f} at the start"


def versions() -> str:
    import datafusion
    import duckdb
    import polars
    import pyarrow

    return (
        f"DuckDB {duckdb.__version__}, DataFusion {datafusion.__version__} (Python), Polars {polars.__version__}, "
        f"pyarrow {pyarrow.__version__}, Python {sys.version.split()[0]}"
    )


def commit() -> str:
    head = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(
        ["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True
    )
    return head.stdout.strip() + (" with local changes" if dirty.stdout.strip() else "")


def render(args, kappa: Kappa, results, extra, started: datetime.datetime, header: str) -> str:
    command = "bench/peers.py " + shlex.join(sys.argv[1:])
    out = [
        f"Measured by `{command}` on {started:%Y-%m-%d %H:%M} UTC; {header}.",
        "",
        f"Kappa: `{kappa.binary.relative_to(ROOT) if kappa.binary.is_relative_to(ROOT) else kappa.binary}` "
        f"({kappa.version}, commit {commit()}), "
        + (
            "with `--cache` set to a fresh empty folder for each cold open, then reused by the re-open and the "
            "replay."
            if kappa.cache
            else "a build without `--cache`: its re-open is a second cold open, as the peers' is."
        )
        + f" Peers: {versions()}.",
        "",
    ]
    for r in results:
        out += [
            f"### {r['events']:,} events ({r['runs']} run{'s' if r['runs'] != 1 else ''}, medians)",
            "",
            f"orders.jsonl {mib(r['jsonl_bytes']):,.0f} MiB, orders.parquet {mib(r['parquet_bytes']):,.0f} MiB; "
            f"Arrow size {mib(r['arrow_bytes']):,.1f} MiB (pyarrow.json's orders.jsonl plus products.parquet, "
            "`Table.nbytes`).",
            "",
            table(r, kappa.cache is not None),
            "",
            f"Goals (issue 8): {GOALS}.",
            "",
            f"Replay: Kappa's rate is its own report (the replay alone, {r['replay_secs']['Kappa']:.3f} s; its whole "
            f"process took {r['kappa_replay_process']:.3f} s); the peers' is {r['events']:,} events / their in-process "
            "time for all six views from orders.parquet ("
            + ", ".join(f"{p} {r['replay_secs'][p]:.3f} s" for p in PEERS)
            + ").",
            "",
            "Runs: "
            + "; ".join(
                f"{label} {c} "
                + ", ".join(f"{v:.2f}" if m != "replay_rate" else f"{v / 1e6:.2f}M" for v in r["raw"][m][c])
                for m, label in (("cold", "cold"), ("reopen", "re-open"), ("replay_rate", "replay"))
                for c in CONTENDERS
            )
            + ".",
            "",
        ]
    out += [
        "How: every P1 contender is a fresh process, timed from just before the spawn to its exit (so the process "
        "start, and for the peers the Python interpreter and the library's import, count), its peak RSS from "
        "`wait4`. Kappa runs `kappa query DIR/kappa.toml --sql ...`: it opens the pipeline (parsing the JSONL log "
        "and computing all six views, the two `recompute` ones included) and answers with the three views' rows "
        "and sums. Each peer loads orders.jsonl into memory once with the log's schema given (DuckDB "
        "`read_json(..., columns = ...)` into a table, DataFusion `read_json(schema=...)` then `cache()`, Polars "
        "`read_ndjson(schema=...)`), reads products.parquet and materializes the three views (DuckDB `CREATE "
        "TABLE AS`, DataFusion `cache()`, Polars `collect()`). The OS page cache is warm for everyone. Every "
        "result is checked against Kappa's. For replay, DuckDB's `order_status` uses `arg_max(type, _offset)` and "
        "Polars' the expression API (`sort_by(\"_offset\").last()`), as neither has `last_value(... ORDER BY ...)` "
        "as an aggregate in its SQL; orders.parquet carries `_offset`, the line number from 0.",
        "",
    ]
    out += extra
    return "\n".join(out).rstrip() + "\n"


def write_benchmarks(section: str):
    text = BENCHMARKS.read_text()
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        text = f"{head}{BEGIN}\n{section}{END}{tail}"
    else:
        text = text.rstrip("\n") + f"\n\n{HEADING}\n\n{BEGIN}\n{section}{END}\n"
    BENCHMARKS.write_text(text)


def main():
    ensure_venv()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", default="1000000", help="sizes of the log, comma-separated (default 1000000)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--work", type=pathlib.Path, default=pathlib.Path(tempfile.gettempdir()) / "kappa-peers")
    parser.add_argument("--kappa", type=pathlib.Path, default=ROOT / "target" / "release" / "kappa")
    parser.add_argument("--with-live", action="store_true", help="also run bench/live_vs_peers.py at each size")
    parser.add_argument("--with-diff", action="store_true", help="also run bench/diff_vs_duckdb.py at each size")
    parser.add_argument("--no-write", action="store_true", help="print the Markdown, leave BENCHMARKS.md alone")
    args = parser.parse_args()
    sizes = [int(s.replace("_", "")) for s in args.events.split(",") if s.strip()]
    kappa = Kappa(args.kappa.resolve())
    args.work.mkdir(parents=True, exist_ok=True)
    started = datetime.datetime.now(datetime.timezone.utc)
    floor = measured(["true"], "true")[1]
    header = machine() + f"; a process spawned by the launcher reports a peak RSS of at least {mib(floor):.0f} MiB"
    print(
        f"kappa {'has --cache (' + kappa.cache + ')' if kappa.cache else 'has no --cache: re-open is a cold open'}; "
        f"{header}",
        file=sys.stderr,
    )

    results = [bench_size(kappa, args.work, events, args.runs) for events in sizes]

    extra = []
    for events in sizes:
        if args.with_live:
            print(f"running bench/live_vs_peers.py at {events:,} events", file=sys.stderr)
            live = subprocess.run(
                [sys.executable, ROOT / "bench" / "live_vs_peers.py", "--events", str(events), "--runs", str(args.runs)],
                stdout=subprocess.PIPE,
                text=True,
                check=True,
            ).stdout
            extra += [
                f"Incremental append (`bench/live_vs_peers.py --events {events} --runs {args.runs}`):",
                "",
                re.sub(r"^### ", "#### ", live.strip(), flags=re.M),
                "",
            ]
        if args.with_diff:
            print(f"running bench/diff_vs_duckdb.py at {events:,} rows", file=sys.stderr)
            diff = subprocess.run(
                [sys.executable, ROOT / "bench" / "diff_vs_duckdb.py", "--rows", str(events), "--runs", str(args.runs)]
                + ["--kappa", str(kappa.binary)],
                stdout=subprocess.PIPE,
                text=True,
                check=True,
            ).stdout.strip().splitlines()
            extra += [
                f"Keyed diff (`bench/diff_vs_duckdb.py --rows {events} --runs {args.runs}`):",
                "",
                "| work | Kappa (median) | DuckDB (median) | Kappa / DuckDB |",
                "|---|---|---|---|",
                *[line for line in diff if line.startswith("|")],
                "",
                *[line for line in diff if not line.startswith("|")],
                "",
            ]

    section = render(args, kappa, results, extra, started, header)
    print(section)
    if not args.no_write:
        write_benchmarks(section)
        print(f"wrote the section into {BENCHMARKS}", file=sys.stderr)


if __name__ == "__main__":
    main()
