"""What the store service remembers between transactions (a run's steps as its last journal
batch left them) never changes an answer: a batch that finds the memory out of date is
applied again from the database."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timezone

import pytest

from cmbagent_jupyter.core.errors import Conflict, QuotaExceeded
from cmbagent_jupyter.store.local import ops as store_ops
from cmbagent_jupyter.store.local.database import Database
from cmbagent_jupyter.core.errors import from_wire
from cmbagent_jupyter.store.local.service import Job, StoreService


class InProcessService:
    """The service's transaction path without its socket: each call is one transaction."""

    def __init__(self, home):
        self.svc = StoreService(home)
        self.svc.db = Database(home / "store.duckdb")
        self.svc.seqs = store_ops.SeqAllocator(self.svc.db)
        self.svc.loop = asyncio.new_event_loop()
        self.transactions = 0

    def __call__(self, op: str, **args):
        replies: list = []
        job = Job(op, args, None, False, lambda ok, value: replies.append((ok, value)), write=True)
        real = self.svc.try_transaction

        def counted(*a, **k):
            self.transactions += 1
            return real(*a, **k)

        self.svc.try_transaction = counted
        try:
            self.svc.try_transaction([job], report_errors=True)
        finally:
            self.svc.try_transaction = real
        self.svc.loop.run_until_complete(asyncio.sleep(0))  # the replies are posted to the loop
        ok, value = replies[0]
        if not ok:
            raise from_wire(value)
        return value

    def close(self):
        self.svc.loop.close()
        self.svc.db.close()


@pytest.fixture
def service(tmp_path):
    s = InProcessService(tmp_path)
    try:
        yield s
    finally:
        s.close()


def at(second: int) -> str:
    return datetime(2026, 1, 1, 0, 0, second, tzinfo=timezone.utc).isoformat()


def two_step_run(service):
    sid = service("session.create", name="memory")["id"]
    rid = service("run.create", session_id=sid, task="t", mode="control")["id"]
    steps = service("step.put_plan", session_id=sid, run_id=rid,
                    steps=[{"key": "s1", "description": "one"},
                           {"key": "s2", "description": "two", "depends_on": ["s1"]}])
    service("engine.claim", session_id=sid, run_id=rid, to="executing", owner_pid=7)
    return sid, rid, [s["id"] for s in steps]


def statuses(service, rid):
    return {r["key"]: r["status"] for r in service.svc.db.fetch("SELECT key, status FROM steps WHERE run_id = ?", [rid])}


def test_a_batch_refused_by_an_outdated_memory_is_applied_from_the_database(service):
    sid, rid, (s1, s2) = two_step_run(service)
    service("engine.advance_many", session_id=sid, run_id=rid, owner_pid=7,
            records=[{"seq": 1, "at": at(1), "start": [s1]}])
    assert service.svc.seqs.known_steps(rid)[s1][3] == "running"
    # the memory says s1 never started: completing it would be refused by the memory alone
    service.svc.seqs.run_steps[rid] = {s1: ("s1", 1, "engineer", "pending")}
    before = service.transactions
    out = service("engine.advance_many", session_id=sid, run_id=rid, owner_pid=7,
                  records=[{"seq": 2, "at": at(2), "complete": [{"step_id": s1, "outputs": {"summary": "one"}}],
                            "start": [s2]}])
    assert out["applied"] == 1 and out["journal_seq"] == 2
    assert service.transactions - before == 2  # once with the memory, once reading the steps
    assert statuses(service, rid) == {"s1": "completed", "s2": "running"}
    assert service.svc.seqs.known_steps(rid)[s1][3] == "completed"
    payloads = [json.loads(r["payload"]) for r in service.svc.db.fetch(
        "SELECT payload::VARCHAR AS payload FROM events WHERE run_id = ? AND type LIKE 'step.%' ORDER BY seq", [rid])]
    moves = [(p["key"], p["from"], p["to"]) for p in payloads]
    assert moves == [("s1", "pending", "running"), ("s1", "running", "completed"), ("s2", "pending", "running")]


def test_a_step_changed_behind_the_memory_is_not_overwritten(service):
    sid, rid, (s1, s2) = two_step_run(service)
    service("engine.advance_many", session_id=sid, run_id=rid, owner_pid=7,
            records=[{"seq": 1, "at": at(1), "start": [s1]}])
    # another writer completed s1 without the service's memory hearing of it
    service.svc.db.execute("UPDATE steps SET status = 'completed' WHERE id = ?", [s1])
    with pytest.raises(Conflict) as info:
        service("engine.advance_many", session_id=sid, run_id=rid, owner_pid=7,
                records=[{"seq": 2, "at": at(2), "complete": [{"step_id": s1, "outputs": {}}], "start": [s2]}])
    assert "s1" in info.value.message and "completed already" in info.value.message
    assert statuses(service, rid) == {"s1": "completed", "s2": "pending"}
    assert service("engine.advance_many", session_id=sid, run_id=rid, owner_pid=7, records=[])["journal_seq"] == 1


def test_a_batch_takes_the_run_as_remembered_only_while_the_database_still_has_it_so(service):
    """After the claim the service remembers the run's head (status, pause request, owner, journal
    seq): a batch does not read it. A pause asked through the store, or the run changed behind the
    service's back, is still what the batch reports."""
    sid, rid, (s1, s2) = two_step_run(service)
    assert service.svc.seqs.known_head(sid, rid) == ("executing", False, 7, 0)
    assert service.svc.seqs.known_head("ses_00000000000000000000", rid) is None
    before = service.transactions
    out = service("engine.advance_many", session_id=sid, run_id=rid, owner_pid=7,
                  records=[{"seq": 1, "at": at(1), "start": [s1]}])
    assert (out["journal_seq"], out["pause_requested"], service.transactions - before) == (1, False, 1)
    assert service.svc.seqs.known_head(sid, rid) == ("executing", False, 7, 1)

    service("run.request_pause", session_id=sid, run_id=rid)
    assert service.svc.seqs.known_head(sid, rid) is None
    out = service("engine.advance_many", session_id=sid, run_id=rid, owner_pid=7,
                  records=[{"seq": 2, "at": at(2), "complete": [{"step_id": s1, "outputs": {}}], "start": [s2]}])
    assert (out["journal_seq"], out["pause_requested"]) == (2, True)

    # changed behind the memory: the guarded update of the run refuses, and the batch is applied again
    service.svc.db.execute("UPDATE runs SET pause_requested = false WHERE id = ?", [rid])
    service.svc.seqs.run_heads[rid] = (sid, "executing", True, 7, 2)
    before = service.transactions
    out = service("engine.advance_many", session_id=sid, run_id=rid, owner_pid=7,
                  records=[{"seq": 3, "at": at(3), "complete": [{"step_id": s2, "outputs": {}}]}])
    assert (out["journal_seq"], out["pause_requested"], service.transactions - before) == (3, False, 2)
    assert statuses(service, rid) == {"s1": "completed", "s2": "completed"}

    # a batch from another process, or out of order, is refused as the database says
    with pytest.raises(Conflict, match="now executed by process 7, not 8"):
        service("engine.advance_many", session_id=sid, run_id=rid, owner_pid=8,
                records=[{"seq": 4, "at": at(4), "start": []}])
    with pytest.raises(Conflict, match="out of order"):
        service("engine.advance_many", session_id=sid, run_id=rid, owner_pid=7,
                records=[{"seq": 6, "at": at(6), "start": []}])
    assert service.svc.db.scalar("SELECT journal_seq FROM runs WHERE id = ?", [rid]) == 3


def remembered_draft(service, sid: str, task: str) -> str:
    """A one-step control draft whose plan was stored with the step id its caller chose."""
    rid = service("run.create", session_id=sid, task=task, mode="control")["id"]
    steps = [{"id": f"stp_{len(task):020x}{rid[-4:]}", "key": "s1", "description": "one", "number": 1,
              "agent": "engineer"}]
    service("engine.plan_ready", session_id=sid, run_id=rid, start=False, return_steps=False, steps=steps,
            config={"final_plan": {"sub_tasks": [{"key": "s1", "sub_task": "one"}]}})
    return rid


def claimed(service, sid: str, rid: str) -> tuple[dict, int]:
    """The engine's claim of a new draft: its reply and how many transactions it took."""
    before = service.transactions
    out = service("engine.claim", session_id=sid, run_id=rid, to="auto", owner_pid=7, allowed_from=["draft"],
                  return_steps=False, with_session=True)
    return out, service.transactions - before


def test_the_claim_of_a_remembered_draft_moves_it_only_while_it_is_still_as_remembered(service):
    """A draft whose plan was stored with the ids its caller chose is remembered as that left it:
    its claim does not read it again, and moves it only if every column that can change is still
    as remembered; otherwise the claim is applied again, reading the run."""
    sid = service("session.create", name="drafts")["id"]

    def draft(task):
        return remembered_draft(service, sid, task)

    def claim(rid):
        return claimed(service, sid, rid)

    first = draft("alpha")
    assert service.svc.seqs.known_row(sid, first)[0]["task"] == "alpha"
    out, transactions = claim(first)
    assert (out["run"]["status"], out["run"]["owner_pid"], out["steps"], transactions) == ("executing", 7, None, 1)
    assert service.svc.seqs.known_row(sid, first)[0]["status"] == "executing"
    row = service.svc.db.fetchone("SELECT status, owner_pid, started_at FROM runs WHERE id = ?", [first])
    assert (row["status"], row["owner_pid"]) == ("executing", 7) and row["started_at"] is not None
    # the settle takes the run as the claim left it, and the row is checked before the move
    before = service.transactions
    out = service("engine.settle", session_id=sid, run_id=first, to="cancelled", owner_pid=7)
    assert (out["run"]["status"], out["run"]["task"], service.transactions - before) == ("cancelled", "alpha", 1)
    assert out["run"]["started_at"] == service("run.get", session_id=sid, run_id=first)["started_at"]

    # changed behind the memory (no writer forgot it): the claim reads the run and says what it is now
    second = draft("beta")
    service.svc.db.execute("UPDATE runs SET task = 'beta, reworded' WHERE id = ?", [second])
    out, transactions = claim(second)
    assert (out["run"]["task"], out["run"]["status"], transactions) == ("beta, reworded", "executing", 2)
    out, _ = claim(draft("delta"))
    service.svc.db.execute("UPDATE runs SET error = 'noted behind its back' WHERE id = ?", [out["run"]["id"]])
    before = service.transactions
    out = service("engine.settle", session_id=sid, run_id=out["run"]["id"], to="cancelled", owner_pid=7)
    assert (out["run"]["error"], out["run"]["status"], service.transactions - before) == (
        "noted behind its back", "cancelled", 2)
    service("engine.settle", session_id=sid, run_id=second, to="cancelled", owner_pid=7)

    third = draft("gamma")
    service("run.update", session_id=sid, run_id=third, config={"note": "added"})
    assert service.svc.seqs.known_row(sid, third) is None
    out, transactions = claim(third)
    assert (out["run"]["config"]["note"], transactions) == ("added", 1)


def test_a_remembered_draft_is_refused_at_its_sessions_run_quota_as_the_database_says(service):
    """The claim of a remembered draft leaves the count of its session's active runs to its
    move's update: under the quota it takes one transaction; at the quota it is applied again
    reading the count, and refused with the quota named."""
    sid = service("session.create", name="busy", quotas={"max_concurrent_runs": 1})["id"]

    def draft(task):
        return remembered_draft(service, sid, task)

    def claim(rid):
        out, transactions = claimed(service, sid, rid)
        return out["run"]["status"], transactions

    first, second = draft("first"), draft("second")
    assert claim(first) == ("executing", 1)  # the service learns the session's row and spending here
    before = service.transactions
    with pytest.raises(QuotaExceeded) as info:
        claim(second)
    assert service.transactions - before == 2, "the refusal is the database's, in a second transaction"
    assert "max_concurrent_runs" in info.value.message and "1 active run(s)" in info.value.message
    assert service("run.get", session_id=sid, run_id=second)["status"] == "draft"
    assert service.svc.seqs.known_row(sid, second) is None
    service("engine.settle", session_id=sid, run_id=first, to="cancelled", owner_pid=7)
    third = draft("third")
    assert claim(third) == ("executing", 1)


def test_the_service_plans_reads_with_every_optimizer_pass_and_writes_without_the_analytical_ones(service):
    sid = service("session.create", name="tuned")["id"]
    assert service.svc.db.scalar("SELECT current_setting('disabled_optimizers')")  # the write left them off
    ok: list = []
    service.svc.run_read(Job("session.get", {"session_id": sid}, None, False, lambda *a: ok.append(a)))
    assert service.svc.db.scalar("SELECT current_setting('disabled_optimizers')") == ""
    service("session.set_quotas", session_id=sid, quotas={"max_concurrent_runs": 2})
    assert "join_order" in service.svc.db.scalar("SELECT current_setting('disabled_optimizers')")
