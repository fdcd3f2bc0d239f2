"""Two kernels, two sessions, one WebSocket: runs executing at the same time in separate
kernels (the engine's Python API with its scripted offline model) reach one event
stream, each run in order, and a client that drops and comes back with `since` loses
nothing."""

from __future__ import annotations

import asyncio

from fixtures.kernels import python_kernel, run_cell

START_RUN = """
from cmbagent_jupyter.api import open_session
session = open_session({name!r})
run = session.run("Fit a toy CMB power spectrum")
print(run.id)
"""
WAIT_RUN = "print(run.wait(300).status.value)"


def run_events(frames, run_ids):
    return [f for f in frames if "payload" in f and f.get("run_id") in run_ids]


async def test_two_kernels_in_two_sessions_stream_in_order_and_resume_without_loss(
        cmb_home, store, server_api, event_socket):
    async with python_kernel(cmb_home) as one, python_kernel(cmb_home) as two:
        await asyncio.gather(run_cell(one, "import cmbagent_jupyter.api"), run_cell(two, "import cmbagent_jupyter.api"))
        first = await event_socket()
        await first.next()

        printed = await asyncio.gather(run_cell(one, START_RUN.format(name="kernel one")),
                                       run_cell(two, START_RUN.format(name="kernel two")))
        run_ids = {p.strip().splitlines()[-1] for p in printed}
        await first.until(lambda f: len(run_events(first.frames, run_ids)) >= 15, 120, "15 events of the runs")
        first.close()
        dropped_at = run_events(first.frames, run_ids)[-1]["gseq"]
        second = await event_socket(since=dropped_at)
        done: set[str] = set()
        await second.until(lambda f: f.get("type") == "workflow.completed" and not done.add(f["run_id"])
                           and done == run_ids, 180, "both runs to complete")
        statuses = await asyncio.gather(run_cell(one, WAIT_RUN), run_cell(two, WAIT_RUN))

    assert [s.strip() for s in statuses] == ["completed", "completed"]
    received = run_events(first.frames, run_ids) + run_events(second.frames, run_ids)
    runs = {rid: store.find_run(rid) for rid in run_ids}
    assert {r.session_id for r in runs.values()} == {s.id for s in store.list_sessions()}, "one run per session"
    for rid, run in runs.items():
        stored = [e.gseq for e in store.session(run.session_id).events(run_id=rid)]
        mine = [e for e in received if e["run_id"] == rid]
        assert [e["gseq"] for e in mine] == stored, f"run {rid}: every event once, none lost across the reconnect"
        assert [e["seq"] for e in mine] == list(range(1, len(mine) + 1)), f"run {rid}: in order"
        assert mine[0]["type"] == "workflow.created" and mine[-1]["type"] == "workflow.completed"
    gseqs = [e["gseq"] for e in received]
    assert gseqs == sorted(gseqs), "the stream is in store order"
    spans = [(min(e["gseq"] for e in received if e["run_id"] == r), max(e["gseq"] for e in received if e["run_id"] == r))
             for r in run_ids]
    assert max(s for s, _ in spans) < min(e for _, e in spans), "the two runs executed at the same time"
