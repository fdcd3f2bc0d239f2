"""Engine benchmarks: `python benchmarks/engine.py` prints the figures and the ratios.

(a) Per-step overhead of a 200-step DAG whose steps do nothing (no model), executed
    with durable checkpoints, against LangGraph with its SQLite checkpointer on the same
    DAG shape, in two pairs of equal guarantees:
    - the defaults: here every step boundary is written to the step journal before any
      dependent step starts (it survives the process being killed) and reaches the disk
      by group commit within ~2 ms; LangGraph's default durability "async" saves each
      checkpoint while the next step runs. Target: ratio <= 0.33.
    - disk-synced boundaries: here journal_sync="boundary" (an fdatasync before any
      dependent step starts); LangGraph durability="sync".
    The store is updated behind the journal in group commits, with a full snapshot
    pickle now and then. The clock stops when `execute()` returns: the run is marked
    completed only after the store has every step (the final drain is timed). Two
    shapes: a chain (every step waits for the previous one) and 25 levels of 8 steps
    (each depending on the step above it).
(b) 8 independent steps with 1 s of simulated model latency each (the scripted model
    through AG2's real client path), max_parallel=8 against max_parallel=1.
    Target: speedup >= 6.

Each figure is the median of --repeat runs (default 5), each in a fresh CMBAGENT_HOME
whose store service was started beforehand and has run a 3-step warm-up run (its
start-up and first use of each operation are not per-step costs; LangGraph gets the
same: one untimed run of its compiled graph on another thread id first). Before each timed
run the garbage of the earlier ones is collected (gc.collect(), for both peers), so a full
collection of the whole process's heap (~100 ms here) is not counted as one run's steps.
Our runs execute as `open_session().run(...)` and `cmbagent run` execute them: on the
process's engine loop thread (`EngineLoop`), the caller waiting for the result; LangGraph's
as `invoke` runs them, on the caller's thread.
The store's own floor (one minimal write transaction) is printed for reference.
Options: --only a|b, --steps N, --repeat N, --json.
"""

from __future__ import annotations

import argparse
import gc
import json
import operator
import os
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any, TypedDict

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cmbagent_jupyter.api import create_run  # noqa: E402
from cmbagent_jupyter.engine.loop import EngineLoop  # noqa: E402
from cmbagent_jupyter.engine.runner import RunEngine  # noqa: E402
from cmbagent_jupyter.llm.providers import scripted_choice  # noqa: E402
from cmbagent_jupyter.store.local import stop_service  # noqa: E402
from cmbagent_jupyter.store import open_store  # noqa: E402


# ---------------------------------------------------------------- shapes


def chain(n: int) -> list[dict[str, Any]]:
    return [{"key": f"s{i}", "sub_task": f"step {i}", "sub_task_agent": "engineer",
             "depends_on": [f"s{i - 1}"] if i else []} for i in range(n)]


def layered(n: int, width: int = 8) -> list[dict[str, Any]]:
    return [{"key": f"s{i}", "sub_task": f"step {i}", "sub_task_agent": "engineer",
             "depends_on": [f"s{i - width}"] if i >= width else []} for i in range(n)]


# ---------------------------------------------------------------- (a) ours


async def _noop_step(step: Any, ctx: dict[str, Any]) -> dict[str, Any]:
    return {"summary": f"{step.key} done", "files": [], "figures": []}


def _execute(engine: RunEngine) -> Any:
    """Run to the end as the API and the CLI do: on the engine loop's thread."""
    return EngineLoop.get().submit(engine.execute()).result()


def ours(steps: list[dict[str, Any]], max_parallel: int, journal_sync: str = "group") -> dict[str, float]:
    home = tempfile.mkdtemp(prefix="cmbagent-bench-")
    store = open_store(home)
    try:
        session = store.create_session("bench")
        ss = store.session(session.id)
        # a service that has run something is what a user has (it stays up between runs): one small
        # run first, untimed, so the service's first use of each operation is not counted as per-step
        warm, _ = create_run(ss, "warm-up", mode="control", plan={"sub_tasks": chain(3)}, max_parallel=1)
        assert _execute(RunEngine(store, warm, step_runner=_noop_step)).status.value == "completed"
        # as `cmbagent run --mode control` and `open_session().run(...)` create it: the plan's steps and DAG
        # are stored with the draft (as LangGraph's graph is built and compiled before its clock starts)
        run, _ = create_run(ss, "no-model DAG", mode="control", plan={"sub_tasks": steps}, max_parallel=max_parallel,
                            journal_sync=journal_sync)
        engine = RunEngine(store, run, step_runner=_noop_step)
        gc.collect()  # what earlier runs left is not collected on this one's clock (LangGraph gets the same)
        t0 = time.perf_counter()
        out = _execute(engine)
        elapsed = time.perf_counter() - t0
        assert out.status.value == "completed", (out.status, out.error)
        done = sum(s.status.value == "completed" for s in ss.list_steps(run.id))
        assert done == len(steps), done
        checkpoints = len(ss.list_checkpoints(run.id))
        pickles = len(list((Path(run.path) / "checkpoints").glob("*.pkl")))
        journal = (Path(run.path) / "checkpoints" / "journal.jsonl").read_bytes().count(b"\n")
        return {"seconds": elapsed, "per_step_ms": elapsed / len(steps) * 1000, "checkpoints": checkpoints,
                "pickles": pickles, "journal_records": journal}
    finally:
        store.close()
        stop_service(home)
        shutil.rmtree(home, ignore_errors=True)


def store_floor(calls: int = 100) -> dict[str, float]:
    """What one minimal write transaction costs through the store service (a heartbeat: one UPDATE)."""
    home = tempfile.mkdtemp(prefix="cmbagent-bench-")
    store = open_store(home)
    try:
        ss = store.session(store.create_session("floor").id)
        run = ss.create_run("floor", mode="one_shot")
        ss.heartbeat(run.id, os.getpid())
        t0 = time.perf_counter()
        for _ in range(calls):
            ss.heartbeat(run.id, os.getpid())
        write_ms = (time.perf_counter() - t0) / calls * 1000
        t0 = time.perf_counter()
        for _ in range(calls):
            store.call("store.ping")
        read_ms = (time.perf_counter() - t0) / calls * 1000
        return {"write_ms": write_ms, "read_ms": read_ms}
    finally:
        store.close()
        stop_service(home)
        shutil.rmtree(home, ignore_errors=True)


# ---------------------------------------------------------------- (a) LangGraph


class LangGraphState(TypedDict):
    outputs: Annotated[dict, operator.or_]


def langgraph(steps: list[dict[str, Any]], durability: str = "async") -> dict[str, float]:
    from langgraph.checkpoint.sqlite import SqliteSaver
    from langgraph.graph import END, START, StateGraph

    State = LangGraphState

    def node(key: str):
        def run(state: State) -> dict:
            return {"outputs": {key: {"summary": f"{key} done", "files": [], "figures": []}}}
        return run

    g = StateGraph(State)
    for s in steps:
        g.add_node(s["key"], node(s["key"]))
    has_successor = {d for s in steps for d in s["depends_on"]}
    for s in steps:
        if not s["depends_on"]:
            g.add_edge(START, s["key"])
        for d in s["depends_on"]:
            g.add_edge(d, s["key"])
        if s["key"] not in has_successor:
            g.add_edge(s["key"], END)
    d = tempfile.mkdtemp(prefix="langgraph-bench-")
    conn = sqlite3.connect(os.path.join(d, "checkpoints.sqlite"), check_same_thread=False)
    app = g.compile(checkpointer=SqliteSaver(conn))
    # the same warm-up as ours: a small run first, untimed (another thread of the same checkpointer)
    app.invoke({"outputs": {}}, {"configurable": {"thread_id": "warm-up"}, "recursion_limit": 100_000},
               durability=durability)
    gc.collect()
    t0 = time.perf_counter()
    out = app.invoke({"outputs": {}}, {"configurable": {"thread_id": "bench"}, "recursion_limit": 100_000},
                     durability=durability)
    elapsed = time.perf_counter() - t0
    assert len(out["outputs"]) == len(steps)
    rows = conn.execute("SELECT count(*) FROM checkpoints").fetchone()[0]
    conn.close()
    shutil.rmtree(d, ignore_errors=True)
    return {"seconds": elapsed, "per_step_ms": elapsed / len(steps) * 1000, "checkpoints": rows}


# ---------------------------------------------------------------- (b) parallel speedup


def parallel(n: int, latency_s: float, max_parallel: int) -> dict[str, float]:
    import yaml

    home = tempfile.mkdtemp(prefix="cmbagent-bench-")
    scenario = Path(home) / "latency.yaml"
    scenario.write_text(yaml.safe_dump({
        "name": "latency", "price": {"input_per_mtok": 0, "output_per_mtok": 0}, "latency_s": latency_s,
        "turns": [{"agent": "researcher", "step": f"s{i}", "turn": 1, "content": f"# Finding {i}\nDone."}
                  for i in range(n)]}))
    plan = {"sub_tasks": [{"key": f"s{i}", "sub_task": f"independent question {i}", "sub_task_agent": "researcher",
                           "depends_on": []} for i in range(n)]}
    store = open_store(home)
    try:
        session = store.create_session("bench")
        ss = store.session(session.id)
        choice = scripted_choice(str(scenario))
        run = ss.create_run("parallel steps", mode="control", model=choice.ref,
                            config={"plan": plan, "max_parallel": max_parallel})
        engine = RunEngine(store, run, model=choice)
        t0 = time.perf_counter()
        out = _execute(engine)
        elapsed = time.perf_counter() - t0
        assert out.status.value == "completed", (out.status, out.error)
        return {"seconds": elapsed}
    finally:
        store.close()
        stop_service(home)
        shutil.rmtree(home, ignore_errors=True)


# ---------------------------------------------------------------- main


def _median(results: list[dict[str, float]], key: str = "per_step_ms") -> dict[str, float]:
    ordered = sorted(results, key=lambda r: r[key])
    return ordered[len(ordered) // 2]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=["a", "b"])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=5, help="runs per figure; the median is reported")
    ap.add_argument("--json", action="store_true")
    ns = ap.parse_args()
    results: dict[str, Any] = {}
    if ns.only in (None, "a"):
        print(f"(a) per-step overhead, {ns.steps}-step no-model DAG, durable checkpoints", flush=True)
        floor = store_floor()
        results["store_floor"] = floor
        print(f"  store service floor: {floor['write_ms']:.2f} ms per minimal write transaction, "
              f"{floor['read_ms']:.2f} ms per read round trip", flush=True)
        pairs = (("group", "async", "defaults: a boundary survives the process before its successor starts, "
                                    "disk sync in the background | LangGraph durability='async'"),
                 ("boundary", "sync", "disk sync before a successor starts | LangGraph durability='sync'"))
        for sync, lg_durability, what in pairs:
            print(f"  {what}", flush=True)
            for name, steps, par in (("chain", chain(ns.steps), 1), ("layered 8 wide", layered(ns.steps), 8)):
                mine_runs, lg_runs = [], []
                for _ in range(ns.repeat):  # alternated, so both see the machine in the same state
                    mine_runs.append(ours(steps, par, sync))
                    lg_runs.append(langgraph(steps, lg_durability))
                mine, lg = _median(mine_runs), _median(lg_runs)
                ratio = mine["per_step_ms"] / lg["per_step_ms"]
                results[f"a_{name}_{sync}"] = {"cmbagent": mine, "langgraph_sqlite": lg, "ratio": ratio}
                target = " (target <= 0.33)" if sync == "group" else ""
                print(f"    {name:15s} cmbagent {mine['per_step_ms']:7.3f} ms/step ({mine['checkpoints']} checkpoints, "
                      f"{mine['journal_records']} journal records, {mine['pickles']} snapshots) | LangGraph+SQLite "
                      f"{lg['per_step_ms']:7.3f} ms/step ({lg['checkpoints']} checkpoints) | ratio {ratio:.2f}{target}",
                      flush=True)
        # how much of it is per step and how much per run: the slope between a shorter chain and this one
        short = max(2, ns.steps // 4)
        lo = [(ours(chain(short), 1)["seconds"], langgraph(chain(short))["seconds"]) for _ in range(ns.repeat)]
        lo_mine = sorted(x for x, _ in lo)[len(lo) // 2]
        lo_lg = sorted(y for _, y in lo)[len(lo) // 2]
        hi = results["a_chain_group"]
        slope_mine = (hi["cmbagent"]["seconds"] - lo_mine) / (ns.steps - short) * 1000
        slope_lg = (hi["langgraph_sqlite"]["seconds"] - lo_lg) / (ns.steps - short) * 1000
        results["a_chain_marginal"] = {"cmbagent_ms": slope_mine, "langgraph_ms": slope_lg,
                                       "ratio": slope_mine / slope_lg}
        print(f"  chain, defaults, marginal cost of a step ({short} -> {ns.steps} steps): cmbagent {slope_mine:.3f} ms "
              f"| LangGraph+SQLite {slope_lg:.3f} ms | ratio {slope_mine / slope_lg:.2f}; per-run part: cmbagent "
              f"{(lo_mine * 1000 - short * slope_mine):.1f} ms, LangGraph {(lo_lg * 1000 - short * slope_lg):.1f} ms",
              flush=True)
    if ns.only in (None, "b"):
        print("(b) 8 independent steps, 1 s simulated model latency each", flush=True)
        one = _median([parallel(8, 1.0, 1) for _ in range(max(1, ns.repeat // 2))], key="seconds")
        eight = _median([parallel(8, 1.0, 8) for _ in range(ns.repeat)], key="seconds")
        speedup = one["seconds"] / eight["seconds"]
        results["b"] = {"max_parallel_1_s": one["seconds"], "max_parallel_8_s": eight["seconds"], "speedup": speedup}
        print(f"  max_parallel=1 {one['seconds']:.2f} s | max_parallel=8 {eight['seconds']:.2f} s | "
              f"speedup {speedup:.2f}x (target >= 6)", flush=True)
    if ns.json:
        print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
