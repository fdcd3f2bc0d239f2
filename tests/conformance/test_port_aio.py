"""`port.aio`: the same methods as coroutines, with the same answers and the same refusals."""

from __future__ import annotations

import asyncio

import pytest

from cmbagent_jupyter.core import NotFound, Run, RunStatus, StepStatus
from cmbagent_jupyter.store.port import EventRef, NewCheckpoint
from porttools import PID, chain, record, unknown


def test_the_coroutine_view_answers_as_the_blocking_one(port):
    async def main():
        info = await port.aio.ping()
        session = await port.aio.create_session("async")
        ss = port.session(session.id)
        run = await ss.aio.create_run("async run", mode="control")
        s1, s2 = await ss.aio.put_plan(run.id, chain("a", "b"))
        claimed = await ss.aio.claim(run.id, to="executing", owner_pid=PID)
        applied = await ss.aio.advance(run.id, [record(1, start=[s1.id]), record(2, complete=[s1.id])],
                                       owner_pid=PID)
        ref = await ss.aio.emit("log", run.id, message="from a coroutine")
        refs = await ss.aio.append_events([{"type": "log", "run_id": run.id, "payload": {"message": "more"}}])
        costs = await ss.aio.add_costs([{"run_id": run.id, "model": "m", "cost_usd": 0.5}])
        rows = await ss.aio.cost_summary(run_id=run.id, group_by=["run_id"])
        with pytest.raises(NotFound, match="does not exist in session"):
            await ss.aio.get_run(unknown("run"))
        found = await port.aio.find_run(run.id)
        settled = await ss.aio.settle(run.id, "paused", owner_pid=PID, reset_steps=[s2.id],
                                      checkpoint=NewCheckpoint(kind="manual", context={"k": 1}))
        listed = await ss.aio.list_steps(run.id)
        sessions = await port.aio.list_sessions()
        return (info, claimed, applied, ref, refs, costs, rows, found, settled, listed, sessions, run)

    info, claimed, applied, ref, refs, costs, rows, found, settled, listed, sessions, run = asyncio.run(main())
    assert info.pong and claimed.run.status == RunStatus.executing
    assert (applied.applied, applied.journal_seq) == (2, 2)
    assert isinstance(ref, EventRef) and refs[0].seq == ref.seq + 1
    assert costs == 0.5 and [(r.run_id, r.cost_usd) for r in rows] == [(run.id, 0.5)]
    assert isinstance(found, Run) and found.id == run.id
    assert settled.run.status == RunStatus.paused
    assert [s.status for s in listed] == [StepStatus.completed, StepStatus.pending]
    assert [s.name for s in sessions] == ["async"]
