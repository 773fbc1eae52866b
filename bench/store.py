#!/usr/bin/env python3
"""The log store (issue 17): ad-hoc queries on a bare JSON Lines log, time to the first row, Nexmark throughput.

On the shop log generated at each --events size (`kappa gen shop`, as bench/peers.py makes it), alternating the
contenders, --runs times, medians:

* Ad-hoc query, cold: `kappa --cache FRESH query orders.jsonl --sql Q` (a fresh, empty cache folder each run: the
  log is parsed, stored and queried) against DuckDB (`read_json`), DataFusion (`register_json`) and Polars
  (`scan_ndjson`), each inferring the schema itself as Kappa does, each a fresh process timed from spawn to exit, its
  peak RSS from wait4. Q is a GROUP BY over the whole log. Every result is checked against Kappa's.
* Ad-hoc query, warm: the same Kappa command again with the cache its cold run filled (the store is reused: no JSON
  is parsed).
* Time to the first row, cold, terminal: `kappa --cache FRESH orders.jsonl` on a pseudo-terminal (160x48), from spawn
  until the first log line's event id is on the screen (the Data tab shows the log's first rows).
* Time to the first row, cold, desktop: `kappa-gui --cache FRESH orders.jsonl` under Xvfb (when `Xvfb` and the
  kappa-gui binary are there), from spawn until the app reports the first rows drawn (`$KAPPA_GUI_FIRST_ROWS`).
* Nexmark: `kappa gen nexmark --events N`, then `kappa replay` of its pipeline (every query at once) with a warm
  store, events/s as Kappa reports it.

The Markdown goes to stdout and into BENCHMARKS.md between `<!-- store:begin -->` and `<!-- store:end -->` (unless
--no-write).

Usage (after `cargo build --release -p kappa_tui -p kappa_gui`):

    bench/store.py --events 1000000,10000000 --runs 3
    bench/store.py --events 200000 --runs 1 --no-write
"""

import argparse
import datetime
import fcntl
import json
import os
import pathlib
import pty
import re
import select
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import peers  # noqa: E402  (the shop's generation, the venv, timing and the machine's description)

BEGIN, END = "<!-- store:begin -->", "<!-- store:end -->"
QUERY = "SELECT type, count(*) AS n, coalesce(sum(amount), 0) AS total FROM orders GROUP BY type ORDER BY type"
PEER_QUERY = r'''
import json, sys, time
peer, path, query = sys.argv[1], sys.argv[2], sys.argv[3]
if peer == "DuckDB":
    import duckdb
    con = duckdb.connect()
    con.execute("SET enable_progress_bar = false")
    con.execute(f"CREATE VIEW orders AS SELECT * FROM read_json('{path}', format = 'newline_delimited')")
    rows = con.execute(query).fetchall()
elif peer == "DataFusion":
    import datafusion
    ctx = datafusion.SessionContext()
    ctx.register_json("orders", path, file_extension=".jsonl")
    rows = [tuple(r.values()) for r in ctx.sql(query).to_pylist()]
else:
    import polars as pl
    ctx = pl.SQLContext(orders=pl.scan_ndjson(path))
    rows = ctx.execute(query).collect().rows()
print(json.dumps([[r[0], int(r[1]), float(r[2])] for r in rows]))
'''


def ensure_venv():
    """Runs this script in bench/.venv (made and filled by bench/peers.py's recipe if need be)."""
    python = peers.VENV / "bin" / "python"
    if pathlib.Path(sys.prefix).resolve() != peers.VENV.resolve():
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(peers.VENV)], check=True)
        os.execv(python, [str(python), str(pathlib.Path(__file__).resolve()), *sys.argv[1:]])
    try:
        import datafusion  # noqa: F401
        import duckdb  # noqa: F401
        import polars  # noqa: F401
        import pyarrow  # noqa: F401
    except ImportError:
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", *peers.PACKAGES], check=True)
        os.execv(sys.executable, [sys.executable, str(pathlib.Path(__file__).resolve()), *sys.argv[1:]])


def kappa_rows(text: str):
    lines = text.strip().splitlines()
    rows = []
    for line in lines[1:]:
        kind, n, total = line.split(",")
        rows.append([kind, int(n), float(total)])
    return rows


def same_rows(a, b) -> bool:
    return len(a) == len(b) and all(
        x[0] == y[0] and x[1] == y[1] and abs(x[2] - y[2]) <= 1e-6 * max(1.0, abs(x[2])) for x, y in zip(a, b)
    )


def first_event_id(path: pathlib.Path) -> str:
    with open(path) as f:
        line = f.readline()
    found = re.search(r'"event_id"\s*:\s*"([^"]+)"', line)
    if not found:
        raise SystemExit(f"{path}: no event_id on the first line")
    return found[1]


def tui_first_row(binary: pathlib.Path, log: pathlib.Path, needle: str, timeout: float = 120.0) -> float:
    """Seconds from spawn until `needle` is on the terminal app's screen (a pty of 160x48)."""
    cache = tempfile.mkdtemp(prefix="kappa-ttfr-")
    started = time.perf_counter()
    pid, fd = pty.fork()
    if pid == 0:
        os.environ["TERM"] = "xterm-256color"
        os.execv(str(binary), [str(binary), "--cache", cache, str(log)])
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 48, 160, 0, 0))
    seen = b""
    found = None
    try:
        while time.perf_counter() - started < timeout:
            ready, _, _ = select.select([fd], [], [], 0.05)
            if ready:
                try:
                    chunk = os.read(fd, 65536)
                except OSError:
                    break
                if not chunk:
                    break
                seen = (seen + chunk)[-200_000:]
                if needle.encode() in seen:
                    found = time.perf_counter() - started
                    break
    finally:
        os.kill(pid, signal.SIGTERM)
        os.waitpid(pid, 0)
        os.close(fd)
        shutil.rmtree(cache, ignore_errors=True)
    if found is None:
        raise SystemExit(f"the terminal app never showed {needle!r} within {timeout} s")
    return found


def gui_first_row(binary: pathlib.Path, log: pathlib.Path, display: str, timeout: float = 120.0) -> float:
    """Seconds from spawn until the desktop app reports its first rows drawn."""
    cache = tempfile.mkdtemp(prefix="kappa-ttfr-gui-")
    env = {**os.environ, "DISPLAY": display, "KAPPA_GUI_FIRST_ROWS": "1"}
    started = time.perf_counter()
    process = subprocess.Popen(
        [binary, "--cache", cache, "--size", "1280x800", log], env=env, stderr=subprocess.PIPE, text=True
    )
    found = None
    try:
        while time.perf_counter() - started < timeout:
            line = process.stderr.readline()
            if not line:
                break
            if "first rows of" in line:
                found = time.perf_counter() - started
                break
    finally:
        process.kill()
        process.wait()
        shutil.rmtree(cache, ignore_errors=True)
    if found is None:
        raise SystemExit(f"the desktop app never drew rows within {timeout} s")
    return found


def adhoc(kappa: peers.Kappa, directory: pathlib.Path, runs: int, events: int) -> dict:
    log = directory / "orders.jsonl"
    python = peers.VENV / "bin" / "python"
    times = {c: [] for c in ["Kappa", "Kappa (store)", *peers.PEERS]}
    rss = {c: [] for c in times}
    reference = None
    for run in range(1, runs + 1):
        cache = tempfile.mkdtemp(prefix="kappa-adhoc-")
        try:
            for who, cmd in [
                ("Kappa", [kappa.binary, "--cache", cache, "query", log, "--sql", QUERY, "--format", "csv"]),
                ("Kappa (store)", [kappa.binary, "--cache", cache, "query", log, "--sql", QUERY, "--format", "csv"]),
            ]:
                seconds, maxrss, out = peers.measured(cmd, who)
                rows = kappa_rows(out)
                if reference is None:
                    reference = rows
                elif not same_rows(rows, reference):
                    raise SystemExit(f"{who}: {rows} != {reference}")
                times[who].append(seconds)
                rss[who].append(maxrss)
                peers.progress(events, run, runs, "ad hoc", who, f"{seconds:.3f} s  {peers.mib(maxrss):.0f} MiB")
        finally:
            shutil.rmtree(cache, ignore_errors=True)
        for who in peers.PEERS:
            seconds, maxrss, out = peers.measured([python, "-c", PEER_QUERY, who, log, QUERY], who)
            # The answer is the last line (a peer may print notices before it).
            rows = json.loads(out.strip().splitlines()[-1])
            if not same_rows(rows, reference):
                raise SystemExit(f"{who}: {rows} != {reference}")
            times[who].append(seconds)
            rss[who].append(maxrss)
            peers.progress(events, run, runs, "ad hoc", who, f"{seconds:.3f} s  {peers.mib(maxrss):.0f} MiB")
    return {"times": times, "rss": rss}


def first_rows(kappa: peers.Kappa, gui: pathlib.Path, directory: pathlib.Path, runs: int, events: int) -> dict:
    log = directory / "orders.jsonl"
    needle = first_event_id(log)
    result = {"tui": [], "gui": []}
    xvfb = None
    display = ":97"
    if gui.exists() and shutil.which("Xvfb"):
        xvfb = subprocess.Popen(["Xvfb", display, "-screen", "0", "1280x800x24"], stderr=subprocess.DEVNULL)
        time.sleep(1.0)
    try:
        for run in range(1, runs + 1):
            seconds = tui_first_row(kappa.binary, log, needle)
            result["tui"].append(seconds)
            peers.progress(events, run, runs, "1st row", "terminal", f"{seconds:.3f} s")
            if xvfb:
                seconds = gui_first_row(gui, log, display)
                result["gui"].append(seconds)
                peers.progress(events, run, runs, "1st row", "desktop", f"{seconds:.3f} s")
    finally:
        if xvfb:
            xvfb.kill()
            xvfb.wait()
    return result


def nexmark(kappa: peers.Kappa, work: pathlib.Path, events: int, runs: int) -> dict:
    directory = work / f"nexmark-{events}"
    if not (directory / "nexmark.jsonl").exists():
        subprocess.run([kappa.binary, "gen", "nexmark", "--events", str(events), "--out", directory], check=True)
    cache = tempfile.mkdtemp(prefix="kappa-nexmark-")
    rates = []
    try:
        # The first open stores the log; the replays read it from the store.
        peers.measured([kappa.binary, "--cache", cache, "query", directory / "kappa.toml", "--sql", "SELECT 1"], "open")
        for run in range(1, runs + 1):
            _, _, out = peers.measured([kappa.binary, "--cache", cache, "replay", directory / "kappa.toml"], "replay")
            found = re.search(r"replayed (\d+) events to offset \d+ in ([\d.]+) s \((\d+) events/s\)", out)
            if not found:
                raise SystemExit(f"kappa replay: unexpected output {out!r}")
            rates.append(int(found[3]))
            peers.progress(events, run, runs, "nexmark", "Kappa", f"{int(found[3]):,} events/s")
        paths = subprocess.run(
            [kappa.binary, "--cache", cache, "paths", directory / "kappa.toml"], capture_output=True, text=True
        ).stdout
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    return {"rates": rates, "paths": paths}


def med(values):
    return statistics.median(values) if values else float("nan")


def render(args, kappa, results, nex, started) -> str:
    out = [
        BEGIN,
        f"Measured by `bench/store.py --events {args.events} --runs {args.runs}` on {started:%Y-%m-%d %H:%M} UTC; "
        f"{peers.machine()}.",
        "",
        f"Kappa: `{kappa.binary.relative_to(peers.ROOT)}` ({kappa.version}, commit {peers.commit()}). {peers.versions()}",
        "",
        f"Query: `{QUERY}` over orders.jsonl, each contender inferring the schema.",
        "",
    ]
    for events, r in results:
        times, rss = r["adhoc"]["times"], r["adhoc"]["rss"]
        best = min(med(times[p]) for p in peers.PEERS)
        best_rss = min(med(rss[p]) for p in peers.PEERS)
        out += [
            f"### {events:,} events ({args.runs} runs, medians)",
            "",
            "| measure | Kappa | Kappa (store) | DuckDB | DataFusion | Polars | Kappa / best peer | goal |",
            "|---|---|---|---|---|---|---|---|",
        ]
        ratio = med(times["Kappa"]) / best
        out.append(
            "| ad-hoc query, cold (s) | "
            + " | ".join(f"{med(times[c]):.3f}" for c in times)
            + f" | **{ratio:.2f}x** (store: {med(times['Kappa (store)']) / best:.2f}x) | ≤ 1.0x: "
            + ("met" if ratio <= 1.0 else "**not met**")
            + " |"
        )
        rss_goal = "" if events < 10_000_000 else (
            "≤ 512 MiB: " + ("met" if med(rss["Kappa"]) <= 512 * 2**20 else "**not met**")
        )
        out.append(
            "| peak RSS (MiB) | "
            + " | ".join(f"{peers.mib(med(rss[c])):.0f}" for c in rss)
            + f" | {med(rss['Kappa']) / best_rss:.2f}x | {rss_goal} |"
        )
        ttfr = r["first"]
        if ttfr["tui"]:
            line = f"| first row on screen, cold (s) | terminal {med(ttfr['tui']):.3f}"
            if ttfr["gui"]:
                line += f", desktop {med(ttfr['gui']):.3f}"
            verdicts = [("terminal", med(ttfr["tui"]))] + ([("desktop", med(ttfr["gui"]))] if ttfr["gui"] else [])
            goal = ", ".join(f"{who} " + ("met" if seconds <= 0.3 else "**not met**") for who, seconds in verdicts)
            out.append(line + " | | | | | | ≤ 0.3 s: " + goal + " |")
        out += [
            "",
            "Runs: "
            + "; ".join(f"{c} " + ", ".join(f"{t:.2f}" for t in times[c]) for c in times)
            + (f"; first row terminal " + ", ".join(f"{t:.3f}" for t in ttfr["tui"]) if ttfr["tui"] else "")
            + (f"; desktop " + ", ".join(f"{t:.3f}" for t in ttfr["gui"]) if ttfr["gui"] else "")
            + ".",
            "",
        ]
    if nex:
        events, n = nex
        rate = med(n["rates"])
        out += [
            f"### Nexmark, {events:,} events",
            "",
            f"`kappa replay` of the Nexmark pipeline (every query at once, from the store): **{rate:,.0f} events/s** "
            f"(runs: {', '.join(f'{r:,}' for r in n['rates'])}). The write path runs on the engine's one worker "
            f"thread, so this is also the figure per core; goal ≥ 1.2M events/s per core: "
            + ("met" if rate >= 1_200_000 else "**not met**")
            + ".",
            "",
            "```",
            n["paths"].strip(),
            "```",
            "",
        ]
    out.append(END)
    return "\n".join(out)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", default="1000000")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--nexmark", type=int, default=1_000_000, help="Nexmark events (0: skip)")
    parser.add_argument("--work", type=pathlib.Path, default=pathlib.Path(tempfile.gettempdir()) / "kappa-peers")
    parser.add_argument("--kappa", type=pathlib.Path, default=peers.ROOT / "target" / "release" / "kappa")
    parser.add_argument("--gui", type=pathlib.Path, default=peers.ROOT / "target" / "release" / "kappa-gui")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    ensure_venv()
    started = datetime.datetime.now(datetime.timezone.utc)
    kappa = peers.Kappa(args.kappa)
    results = []
    for events in [int(e) for e in args.events.split(",")]:
        directory = peers.prepare(kappa, args.work, events)
        results.append(
            (
                events,
                {
                    "adhoc": adhoc(kappa, directory, args.runs, events),
                    "first": first_rows(kappa, args.gui, directory, args.runs, events),
                },
            )
        )
    nex = (args.nexmark, nexmark(kappa, args.work, args.nexmark, args.runs)) if args.nexmark else None
    section = render(args, kappa, results, nex, started)
    print(section)
    if not args.no_write:
        text = peers.BENCHMARKS.read_text()
        if BEGIN in text:
            before, rest = text.split(BEGIN, 1)
            text = before + section + rest.split(END, 1)[1]
        else:
            text = text.rstrip() + "\n\n## The log store (issue 17)\n\n" + section + "\n"
        peers.BENCHMARKS.write_text(text)


if __name__ == "__main__":
    main()
