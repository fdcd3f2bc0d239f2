"""Write latency of the store service against opening DuckDB per transaction.

    python benchmarks/store.py [--events N] [--peer-events M] [--json]

Each write is one event appended in its own round trip (what an agent message costs).
"service": through the store service, from 1 and from 4 client processes at once.
"peer": every write opens the DuckDB file, inserts, commits and closes it again, the
design the store service replaces (DuckDB lets one process hold the file, so with 4
processes each waits for the file to be free). Prints p50 / p99 latency and throughput.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PEER_TABLE = """CREATE TABLE IF NOT EXISTS events (
    id VARCHAR NOT NULL, session_id VARCHAR NOT NULL, run_id VARCHAR, seq BIGINT NOT NULL, gseq BIGINT NOT NULL,
    type VARCHAR NOT NULL, ts TIMESTAMP NOT NULL, payload JSON)"""


def service_writer(home: str, session_id: str, run_id: str, n: int, barrier, results) -> None:
    from cmbagent_jupyter.store.local import StoreClient

    client = StoreClient(home)
    client.call("store.ping")
    barrier.wait()
    latencies = []
    for i in range(n):
        event = {"type": "agent.message", "run_id": run_id, "payload": {"i": i, "content": "x" * 200}}
        t0 = time.perf_counter()
        client.call("event.append", {"session_id": session_id, "events": [event]})
        latencies.append(time.perf_counter() - t0)
    client.close()
    results.put(latencies)


def peer_writer(path: str, run_id: str, n: int, barrier, results) -> None:
    import duckdb

    barrier.wait()
    latencies = []
    for i in range(n):
        t0 = time.perf_counter()
        while True:
            try:
                conn = duckdb.connect(path)
                break
            except duckdb.IOException as exc:  # another process holds the file: wait for it
                if "lock" not in str(exc).lower():
                    raise
                time.sleep(0.001)
        conn.execute("BEGIN TRANSACTION")
        conn.execute("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                     ["evt_" + uuid.uuid4().hex[:20], "ses_peer0000000000", run_id, i + 1, i + 1, "agent.message",
                      datetime.now(timezone.utc).replace(tzinfo=None), json.dumps({"i": i, "content": "x" * 200})])
        conn.execute("COMMIT")
        conn.close()
        latencies.append(time.perf_counter() - t0)
    results.put(latencies)


def run_processes(target, args_per_proc: list[tuple]) -> tuple[list[float], float]:
    """Start one process per args tuple, release them together, return all latencies and the wall time."""
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(len(args_per_proc) + 1)
    results = ctx.Queue()
    procs = [ctx.Process(target=target, args=(*a, barrier, results)) for a in args_per_proc]
    for p in procs:
        p.start()
    barrier.wait()
    t0 = time.perf_counter()
    latencies: list[float] = []
    for _ in procs:
        latencies += results.get(timeout=600)
    wall = time.perf_counter() - t0
    for p in procs:
        p.join(60)
        if p.exitcode != 0:
            raise SystemExit(f"a benchmark process failed with exit code {p.exitcode}")
    return latencies, wall


def summary(name: str, clients: int, latencies: list[float], wall: float) -> dict:
    ms = sorted(x * 1000 for x in latencies)
    return {"setup": name, "clients": clients, "writes": len(ms), "p50_ms": statistics.median(ms),
            "p99_ms": ms[min(len(ms) - 1, int(len(ms) * 0.99))], "mean_ms": statistics.fmean(ms),
            "writes_per_s": len(ms) / wall}


def bench(events: int, peer_events: int) -> list[dict]:
    from cmbagent_jupyter.store.local import stop_service
    from cmbagent_jupyter.store import open_store

    root = Path(tempfile.mkdtemp(prefix="cmbagent-bench-"))
    home = root / "home"
    rows = []
    try:
        with open_store(home) as store:
            ss = store.session(store.create_session("benchmark").id)
            runs = [ss.create_run(f"writer {i}").id for i in range(4)]
            for clients in (1, 4):
                lat, wall = run_processes(service_writer, [(str(home), ss.session_id, runs[i], events)
                                                           for i in range(clients)])
                rows.append(summary("service", clients, lat, wall))
        stop_service(home)

        import duckdb

        peer_db = root / "peer.duckdb"
        with duckdb.connect(str(peer_db)) as conn:
            conn.execute(PEER_TABLE)
        for clients in (1, 4):
            lat, wall = run_processes(peer_writer, [(str(peer_db), f"run_peer{i}", peer_events)
                                                    for i in range(clients)])
            rows.append(summary("peer (open per write)", clients, lat, wall))
    finally:
        stop_service(home)
        shutil.rmtree(root, ignore_errors=True)
    return rows


def show(rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title="single-event append, one round trip per write")
    for col in ("setup", "clients", "writes", "p50 ms", "p99 ms", "writes/s", "peer p50 / service p50"):
        t.add_column(col, justify="left" if col == "setup" else "right")
    service = {r["clients"]: r for r in rows if r["setup"] == "service"}
    for r in rows:
        ratio = ""
        if r["setup"] != "service":
            ratio = f"{r['p50_ms'] / service[r['clients']]['p50_ms']:.1f}x"
        t.add_row(r["setup"], str(r["clients"]), str(r["writes"]), f"{r['p50_ms']:.2f}", f"{r['p99_ms']:.2f}",
                  f"{r['writes_per_s']:.0f}", ratio)
    Console(width=max(Console().width, 110)).print(t)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1000, help="writes per client through the service")
    parser.add_argument("--peer-events", type=int, default=50, help="writes per client opening DuckDB each time")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    ns = parser.parse_args()
    os.environ.pop("CMBAGENT_STORE_IDLE_SECONDS", None)
    rows = bench(ns.events, ns.peer_events)
    if ns.json:
        print(json.dumps(rows, indent=2))
    else:
        show(rows)


if __name__ == "__main__":
    main()
