#!/usr/bin/env python3
"""Keyed diff of two large Parquet tables: locally under `--memory-limit`, and on a local Ballista cluster (a scheduler
and two executors, each its own process) with `--cluster`. Checks that both give exactly the same report, and prints
time and each process's peak memory as a Markdown table.

Usage (from the repository root):

    cargo build --release -p kappa_tui && cargo build --release -p kappa_tests --example ballista_node
    python3 -m venv bench/.venv && bench/.venv/bin/pip install duckdb
    bench/.venv/bin/python bench/cluster_diff.py --rows 100000000 --memory-limit 1G --runs 1

The tables are those of bench/diff_vs_duckdb.py (about 0.1% of rows differ). Each executor gets `--cores` task slots
and the same memory limit as the local run, past which its sorts and joins spill. Peak memory is each process's
VmHWM (the most resident memory it ever had), read from /proc before it is stopped.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from diff_vs_duckdb import make_tables  # noqa: E402


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = text.upper().rstrip("IB").rstrip("B")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def timed(command):
    """Runs `command` under /usr/bin/time: (seconds, peak RSS in KiB, stdout)."""
    with tempfile.NamedTemporaryFile("r") as report:
        started = time.perf_counter()
        result = subprocess.run(["/usr/bin/time", "-o", report.name, "-f", "%M"] + command,
                                capture_output=True, text=True)
        elapsed = time.perf_counter() - started
        if result.returncode not in (0, 1):
            raise SystemExit(f"{' '.join(command)} failed ({result.returncode}): {result.stderr}")
        peak = int(report.read().strip().splitlines()[-1])
    return elapsed, peak, result.stdout


def peak_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def start_cluster(node: str, cores: int, memory: int):
    scheduler = subprocess.Popen([node, "scheduler"], stdout=subprocess.PIPE, text=True)
    url = scheduler.stdout.readline().strip()
    port = url.rsplit(":", 1)[1]
    executors = [subprocess.Popen([node, "executor", port, str(cores), str(memory)]) for _ in range(2)]
    time.sleep(2)  # the executors register with the scheduler
    return url, scheduler, executors


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--memory-limit", default="1G")
    ap.add_argument("--cores", type=int, default=1, help="task slots per executor")
    ap.add_argument("--kappa", default="target/release/kappa")
    ap.add_argument("--node", default="target/release/examples/ballista_node")
    ap.add_argument("--dir", help="keep the tables here (default: a temporary folder, deleted afterwards)")
    args = ap.parse_args()
    memory = parse_size(args.memory_limit)

    with tempfile.TemporaryDirectory(prefix="kappa-cluster-", dir=args.dir) as work:
        print(f"writing two {args.rows:,}-row tables ...", file=sys.stderr)
        a, b = make_tables(work, args.rows)
        diff = [args.kappa, "diff", a, b, "--key", "id", "--memory-limit", args.memory_limit, "--format", "json"]
        local, cluster = [], []
        reports = set()
        for run in range(args.runs):
            seconds, peak, out = timed(diff)
            local.append((seconds, peak))
            reports.add(out)
            print(f"run {run + 1}: local {seconds:.1f} s, {peak // 1024} MiB", file=sys.stderr)
            url, scheduler, executors = start_cluster(args.node, args.cores, memory)
            try:
                seconds, peak, out = timed(diff + ["--cluster", url])
                peaks = [peak_kib(p.pid) for p in [scheduler] + executors]
            finally:
                for p in [scheduler] + executors:
                    p.kill()
                    p.wait()
            cluster.append((seconds, peak, peaks))
            reports.add(out)
            print(f"run {run + 1}: cluster {seconds:.1f} s, client {peak // 1024} MiB, "
                  f"scheduler/executors {[p // 1024 for p in peaks]} MiB", file=sys.stderr)
        same = len(reports) == 1
        print(f"\n{args.rows:,} rows, --memory-limit {args.memory_limit}, {args.runs} run(s) each, medians; "
              f"the reports are {'identical' if same else 'DIFFERENT'}\n")
        print("| run | time | peak memory per process |")
        print("|---|---|---|")
        print(f"| local | {statistics.median(s for s, _ in local):.1f} s | "
              f"kappa {statistics.median(p for _, p in local) // 1024} MiB |")
        med = lambda i: statistics.median(p[2][i] for p in cluster) // 1024  # noqa: E731
        print(f"| Ballista, 2 executors x {args.cores} slot(s) | {statistics.median(s for s, _, _ in cluster):.1f} s | "
              f"kappa (client) {statistics.median(p for _, p, _ in cluster) // 1024} MiB, scheduler {med(0)} MiB, "
              f"executors {med(1)} + {med(2)} MiB |")
        if not same:
            raise SystemExit("the local and cluster reports differ")


if __name__ == "__main__":
    main()
