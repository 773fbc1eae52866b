#!/usr/bin/env python3
"""Keyed diff of two large Parquet tables: `kappa diff` against DuckDB's pair of EXCEPT ALL queries.

Usage (from the repository root, after `cargo build --release -p kappa_tui`):

    python3 -m venv bench/.venv && bench/.venv/bin/pip install duckdb
    bench/.venv/bin/python bench/diff_vs_duckdb.py --rows 10000000 --runs 3

Both tables have `--rows` rows; about 0.1% of the second table's rows differ (changed amounts, a few deleted and a
few added). Kappa is timed as a whole process (start, read both files, diff, print), DuckDB as the two queries on a
fresh in-process connection reading the same files. The runs alternate; the medians and the ratio are printed as a
Markdown table.
"""

import argparse
import os
import statistics
import subprocess
import tempfile
import time

import duckdb


def make_tables(directory: str, rows: int) -> tuple[str, str]:
    a = os.path.join(directory, "a.parquet")
    b = os.path.join(directory, "b.parquet")
    con = duckdb.connect()
    con.execute(
        f"""
        CREATE TABLE a AS
        SELECT i AS id,
               'cat-' || (i % 97) AS category,
               DATE '2024-01-01' + CAST(i % 365 AS INTEGER) AS day,
               round((i * 7919 % 100000) / 100.0, 2) AS amount
        FROM range({rows}) t(i)
        """
    )
    con.execute(f"COPY a TO '{a}' (FORMAT PARQUET)")
    # ~0.1% differences: 0.08% changed amounts, 0.01% deleted, 0.01% added.
    con.execute(
        f"""
        COPY (
            SELECT id, category, day, CASE WHEN id % 1250 = 7 THEN amount + 1 ELSE amount END AS amount
            FROM a WHERE id % 10000 <> 3
            UNION ALL
            SELECT {rows} + i AS id, 'cat-new' AS category, DATE '2025-01-01' AS day, 1.0 AS amount
            FROM range({rows} // 10000) t(i)
        ) TO '{b}' (FORMAT PARQUET)
        """
    )
    return a, b


def time_kappa(kappa: str, a: str, b: str) -> float:
    started = time.perf_counter()
    result = subprocess.run([kappa, "diff", a, b, "--key", "id"], capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if result.returncode not in (0, 1):
        raise SystemExit(f"kappa diff failed: {result.stderr}")
    return elapsed


def time_duckdb(a: str, b: str) -> float:
    started = time.perf_counter()
    con = duckdb.connect()
    con.execute(f"SELECT count(*) FROM (SELECT * FROM '{a}' EXCEPT ALL SELECT * FROM '{b}')").fetchall()
    con.execute(f"SELECT count(*) FROM (SELECT * FROM '{b}' EXCEPT ALL SELECT * FROM '{a}')").fetchall()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--kappa", default="target/release/kappa")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        a, b = make_tables(directory, args.rows)
        kappa_times, duckdb_times = [], []
        for _ in range(args.runs):
            kappa_times.append(time_kappa(args.kappa, a, b))
            duckdb_times.append(time_duckdb(a, b))
        k, d = statistics.median(kappa_times), statistics.median(duckdb_times)
        print(f"| keyed diff, {args.rows:,} rows, ~0.1% differences | Kappa {k:.2f} s | DuckDB (2x EXCEPT ALL) {d:.2f} s | {k / d:.2f}x |")
        print(f"kappa runs: {', '.join(f'{t:.2f}' for t in kappa_times)}; duckdb runs: {', '.join(f'{t:.2f}' for t in duckdb_times)}")
        print(f"duckdb {duckdb.__version__}, {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
