#!/usr/bin/env python3
"""Why the log store's segments are Arrow IPC and not Parquet: the same records written and read back both ways.

Reads the shop log's Parquet copy that bench/peers.py makes (`--events N`, default 10M), writes it as an Arrow IPC
file in batches of 8,192 (as the store writes its segments) and as Parquet, and reads each back whole, --runs times
(medians). pyarrow's readers stand in for arrow-rs's: both formats are read by the same library.

    python3 bench/peers.py --events 10000000 --runs 1 --no-write   # once, to make the data
    bench/.venv/bin/python bench/segment_format.py --events 10000000
"""

import argparse
import os
import pathlib
import statistics
import tempfile
import time

import pyarrow.ipc as ipc
import pyarrow.parquet as pq


def timed(fn):
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--work", type=pathlib.Path, default=pathlib.Path(tempfile.gettempdir()) / "kappa-peers")
    args = ap.parse_args()
    table = pq.read_table(args.work / str(args.events) / "orders.parquet")
    with tempfile.TemporaryDirectory() as tmp:
        arrow_path, parquet_path = os.path.join(tmp, "segment.arrow"), os.path.join(tmp, "segment.parquet")

        def write_ipc():
            with ipc.new_file(arrow_path, table.schema) as writer:
                for batch in table.to_batches(max_chunksize=8192):
                    writer.write_batch(batch)

        def read_ipc():
            with open(arrow_path, "rb") as f:
                return ipc.open_file(f).read_all()

        write_ipc_s, _ = timed(write_ipc)
        write_parquet_s, _ = timed(lambda: pq.write_table(table, parquet_path))
        reads = {"Arrow IPC": [], "Parquet": []}
        for _ in range(args.runs):
            reads["Arrow IPC"].append(timed(read_ipc)[0])
            reads["Parquet"].append(timed(lambda: pq.read_table(parquet_path))[0])
        sizes = {"Arrow IPC": os.path.getsize(arrow_path), "Parquet": os.path.getsize(parquet_path)}
        writes = {"Arrow IPC": write_ipc_s, "Parquet": write_parquet_s}
    print(f"{table.num_rows:,} shop records (pyarrow {__import__('pyarrow').__version__}, medians of {args.runs} reads)\n")
    print("| format | write | read back whole | size |")
    print("|---|---|---|---|")
    for fmt in reads:
        print(f"| {fmt} | {writes[fmt]:.2f} s | {statistics.median(reads[fmt]):.2f} s | {sizes[fmt] / 2**20:,.0f} MiB |")


if __name__ == "__main__":
    main()
