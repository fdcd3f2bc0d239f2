"""Events through the port: numbered per run (per session without one) and store-wide, each
payload checked against its type, listed with filters, and pushed to subscriptions after they
are recorded, a replay from `since_gseq` running into the live ones with no gap and no repeat."""

from __future__ import annotations

import threading
from collections import defaultdict
from datetime import datetime, timezone

import pytest

from cmbagent_jupyter.core import Event, EventType, Invalid, NotFound
from cmbagent_jupyter.store.port import EventRef, NewEvent
from porttools import Collected, take, unknown, until_marker


def test_seq_counts_per_run_and_per_session_and_gseq_orders_the_whole_store(port):
    one, two = (port.session(port.create_session(n).id) for n in ("one", "two"))
    runs = [one.create_run("a"), one.create_run("b"), two.create_run("c")]
    for i in range(3):
        for ss, run in ((one, runs[0]), (one, runs[1]), (two, runs[2])):
            ss.emit("log", run.id, message=f"{run.task}{i}")
        one.emit("log", message=f"session {i}")
    events = port.events_all()
    gseqs = [e.gseq for e in events]
    assert gseqs == sorted(set(gseqs)) and len(events) == 2 + 3 + 4 * 3
    per_scope = defaultdict(list)
    for e in events:
        per_scope[e.run_id or e.session_id].append(e.seq)
    assert all(seqs == list(range(1, len(seqs) + 1)) for seqs in per_scope.values()), per_scope
    assert port.events_all(since_gseq=gseqs[-3]) == events[-2:]
    assert [e.run_id for e in port.events_all(run_id=runs[2].id)] == [runs[2].id] * 4
    assert port.events_all(limit=5) == events[:5]


def test_appended_events_get_their_numbers_in_order_and_may_carry_their_id_and_time(ss):
    run = ss.create_run("t")
    chosen, when = unknown("event"), datetime(2025, 6, 1, 12, 0, tzinfo=timezone.utc)
    refs = ss.append_events([
        NewEvent(type="log", run_id=run.id, payload={"level": "info", "message": "hello"}, id=chosen, ts=when),
        {"type": "agent.message", "run_id": run.id, "payload": {"agent": "engineer", "content": "hi"}},
        NewEvent(type="log", payload={"message": "session level"}),
    ])
    assert all(isinstance(r, EventRef) for r in refs) and refs[0].id == chosen
    assert refs[1].seq == refs[0].seq + 1 and refs[1].gseq == refs[0].gseq + 1 and refs[2].gseq == refs[1].gseq + 1
    first, second = ss.events(run.id)[-2:]
    assert isinstance(first, Event) and (first.id, first.ts, first.type, first.payload) == (
        chosen, when, EventType.log, {"level": "info", "message": "hello"})
    assert (second.session_id, second.payload["content"], second.schema_version) == (ss.session_id, "hi", 1)
    [session_level] = ss.events(types=["log"], since_gseq=refs[1].gseq)
    assert session_level.run_id is None and session_level.id == refs[2].id


@pytest.mark.parametrize("bad", [
    {"type": "no.such.type", "payload": {}},
    {"type": "step.progress", "payload": {"step_id": "stp_0123456789abcdef"}},
    {"type": "metric.update", "payload": {"name": "chi2", "value": "not a number"}},
    {"type": "log", "payload": {}, "id": "evt_bad"},
])
def test_a_batch_with_one_bad_event_is_invalid_and_writes_none(ss, bad):
    run = ss.create_run("t")
    before = ss.events()
    with pytest.raises(Invalid):
        ss.append_events([{"type": "log", "run_id": run.id, "payload": {"message": "fine"}}, bad])
    assert ss.events() == before


def test_a_missing_field_is_named_and_an_empty_batch_or_a_foreign_run_refused(ss):
    with pytest.raises(Invalid, match="progress"):
        ss.emit("step.progress", step_id=unknown("step"))
    with pytest.raises(Invalid):
        ss.append_events([])
    with pytest.raises(NotFound, match="does not exist in session"):
        ss.emit("log", unknown("run"), message="where?")


def test_events_are_listed_in_store_order_by_run_type_and_position(ss):
    a, b = ss.create_run("a"), ss.create_run("b")
    refs = [ss.emit("log", run.id, message=f"{run.task}{i}") for i in range(3) for run in (a, b)]
    ss.emit("metric.update", a.id, name="chi2", value=1.5)
    listed = ss.events(a.id)
    assert [e.type.value for e in listed] == ["workflow.created"] + ["log"] * 3 + ["metric.update"]
    assert [e.gseq for e in listed] == sorted(e.gseq for e in listed)
    assert [e.payload["message"] for e in ss.events(a.id, types=["log"])] == ["a0", "a1", "a2"]
    assert [e.payload["message"] for e in ss.events(a.id, since_seq=2, types=["log"])] == ["a1", "a2"]
    assert [e.payload.get("message") for e in ss.events(since_gseq=refs[3].gseq)] == ["a2", "b2", None]
    assert len(ss.events(limit=2)) == 2
    assert {e.type.value for e in ss.events(types=["metric.update", "workflow.created"])} == {
        "metric.update", "workflow.created"}


def test_a_subscription_gets_each_event_after_it_is_recorded_in_store_order(ss):
    run = ss.create_run("t")
    ss.emit("log", run.id, message="before")
    with ss.subscribe() as sub:
        refs = [ss.emit("log", run.id, message=str(i)) for i in range(5)]
        got = take(sub, 5)
        assert [e["gseq"] for e in got] == [r.gseq for r in refs]
        assert [e["payload"]["message"] for e in got] == ["0", "1", "2", "3", "4"]
        assert {(e["session_id"], e["run_id"], e["type"]) for e in got} == {(ss.session_id, run.id, "log")}
        assert Event.model_validate(got[0]).seq == refs[0].seq
        ss.emit("log", run.id, message="end")
        assert until_marker(sub, "end")[0]["payload"]["message"] == "end", "nothing twice, nothing from before"
        assert sub.last_gseq == ss.events()[-1].gseq


def test_a_callback_subscription_is_handed_each_event_once(ss):
    run = ss.create_run("t")
    seen = Collected()
    sub = ss.subscribe(run_id=run.id, callback=seen)
    try:
        refs = [ss.emit("log", run.id, message=str(i)) for i in range(3)]
        ss.emit("log", run.id, message="end")
        got = seen.wait_marker("end")
        assert [e["gseq"] for e in got] == [r.gseq for r in refs] + [got[-1]["gseq"]]
    finally:
        sub.close()
    assert sub.closed


def test_a_replay_since_gseq_runs_into_the_live_events_without_gap_or_repeat(ss):
    run = ss.create_run("t")
    before = [ss.emit("log", run.id, message=f"old{i}") for i in range(3)]
    with ss.subscribe(since_gseq=before[0].gseq) as sub:
        after = [ss.emit("log", run.id, message=f"new{i}") for i in range(3)]
        got = take(sub, 5)
        assert [e["gseq"] for e in got] == [r.gseq for r in before[1:] + after]
        ss.emit("log", run.id, message="end")
        assert [e["payload"]["message"] for e in until_marker(sub, "end")] == ["end"]


def test_a_replay_while_another_thread_writes_misses_nothing_and_repeats_nothing(ss):
    run = ss.create_run("t")
    for i in range(50):
        ss.emit("log", run.id, message=f"early{i}")
    stop = threading.Event()

    def write() -> None:
        i = 0
        while not stop.is_set() and i < 2000:
            ss.emit("log", run.id, message=f"busy{i}")
            i += 1

    writer = threading.Thread(target=write)
    writer.start()
    try:
        sub = ss.subscribe(run_id=run.id, since_gseq=0)
    finally:
        stop.set()
        writer.join(30)
    with sub:
        ss.emit("log", run.id, message="end")
        got = until_marker(sub, "end", timeout=60)
    assert [e["gseq"] for e in got] == [e.gseq for e in ss.events(run.id)]


def test_subscriptions_filter_by_run_and_type_and_follow_their_session_only(port, ss):
    a, b = ss.create_run("a"), ss.create_run("b")
    other = port.session(port.create_session("other").id)
    elsewhere = other.create_run("elsewhere")
    with ss.subscribe(run_id=a.id, types=["log"]) as only_a_logs, ss.subscribe() as whole, \
            port.subscribe_all(run_id=elsewhere.id) as theirs, port.subscribe_all() as everything:
        ss.emit("log", b.id, message="b")
        ss.emit("metric.update", a.id, name="chi2", value=1.0)
        other.emit("log", elsewhere.id, message="elsewhere")
        ss.emit("log", a.id, message="end")
        other.emit("log", elsewhere.id, message="end")
        assert [e["payload"]["message"] for e in until_marker(only_a_logs, "end")] == ["end"]
        seen = until_marker(whole, "end")
        assert [e["type"] for e in seen] == ["log", "metric.update", "log"]
        assert {e["session_id"] for e in seen} == {ss.session_id}
        assert [e["payload"]["message"] for e in until_marker(theirs, "end")] == ["elsewhere", "end"]
        everywhere = until_marker(everything, "end")
        everywhere += until_marker(everything, "end") if everywhere[-1]["session_id"] == ss.session_id else []
        assert {e["session_id"] for e in everywhere} == {ss.session_id, other.session_id}
        assert [e["gseq"] for e in everywhere] == sorted(e["gseq"] for e in everywhere)


def test_a_subscription_on_another_sessions_run_hears_nothing_of_it(port, ss):
    other = port.session(port.create_session("other").id)
    theirs = other.create_run("theirs")
    with ss.subscribe(run_id=theirs.id, since_gseq=0) as foreign, ss.subscribe() as own:
        other.emit("log", theirs.id, message="private")
        ss.emit("log", message="end")
        until_marker(own, "end")
        # the private event came first: had it been delivered, it would be waiting already
        assert foreign.get(timeout=0) is None
    assert ss.events(theirs.id) == []
