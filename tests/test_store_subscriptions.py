"""Subscriptions: committed events are pushed at once, and replay closes every gap."""

from __future__ import annotations

import json
import os
import queue
import signal
import threading
import time

from fixtures.store import client_process

from cmbagent_jupyter.store import open_store
from cmbagent_jupyter.store.local.protocol import read_runtime


def drain(sub, count: int, deadline_s: float = 30.0) -> list[dict]:
    got: list[dict] = []
    deadline = time.monotonic() + deadline_s
    while len(got) < count and time.monotonic() < deadline:
        ev = sub.get(timeout=max(0.01, deadline - time.monotonic()))
        if ev is not None:
            got.append(ev)
    return got


def test_an_event_written_by_another_process_is_pushed_promptly(store, cmb_home):
    ss = store.session(store.create_session("live").id)
    run = ss.create_run("watch me")
    sub = ss.subscribe(run_id=run.id)
    with open_store(cmb_home) as other:
        writer = other.session(ss.session_id)
        t0 = time.monotonic()
        ack = writer.emit("agent.message", run.id, content="hello")
        ev = sub.get(timeout=5)
        latency = time.monotonic() - t0
    assert ev is not None and ev["id"] == ack.id and ev["payload"] == {"content": "hello"}
    assert latency < 1.0, f"push took {latency:.3f} s"


def test_filters_by_run_and_type(store):
    ss = store.session(store.create_session("filters").id)
    a, b = ss.create_run("a"), ss.create_run("b")
    only_a_messages = ss.subscribe(run_id=a.id, types=["agent.message"])
    ss.emit("log", a.id)
    ss.emit("agent.message", b.id, content="b")
    ss.emit("agent.message", a.id, content="a")
    ev = only_a_messages.get(timeout=5)
    assert ev["run_id"] == a.id and ev["payload"] == {"content": "a"}
    assert only_a_messages.get(timeout=0.3) is None


def test_replay_since_gseq_returns_history_then_live_events_in_order(store):
    ss = store.session(store.create_session("replay").id)
    run = ss.create_run("r")
    first = ss.emit("log", run.id, n=1)
    for n in range(2, 6):
        ss.emit("log", run.id, n=n)
    sub = ss.subscribe(run_id=run.id, since_gseq=first.gseq)
    ss.emit("log", run.id, n=6)
    got = drain(sub, 5)
    assert [e["payload"]["n"] for e in got] == [2, 3, 4, 5, 6]
    assert [e["gseq"] for e in got] == sorted(e["gseq"] for e in got)


SUBSCRIBER = r"""
import json, sys
from cmbagent_jupyter.store import open_store

session_id, *run_ids = sys.argv[1:]
ss = open_store().session(session_id)

def show(ev):
    print(json.dumps({"run_id": ev["run_id"], "n": ev["payload"].get("n"), "id": ev["id"]}), flush=True)

for run_id in run_ids:
    ss.subscribe(run_id=run_id, callback=show)
print("ready", flush=True)
sys.stdin.readline()
"""


def test_a_subscriber_that_loses_its_service_misses_nothing(store, cmb_home):
    """The subscriber is frozen (SIGSTOP) while its service is killed and events are
    written, so it can only see them through the replay of its resubscription."""
    ss = store.session(store.create_session("gap").id)
    busy, quiet = ss.create_run("busy"), ss.create_run("nothing here until the service is gone")
    with client_process(cmb_home, SUBSCRIBER, ss.session_id, busy.id, quiet.id) as sub:
        lines: queue.Queue[str] = queue.Queue()
        reader = threading.Thread(target=lambda: [lines.put(line) for line in sub.stdout], daemon=True)
        reader.start()

        def take(count: int) -> list[dict]:
            got = []
            for _ in range(count):
                line = lines.get(timeout=60)
                got.append(json.loads(line))
            return got

        assert lines.get(timeout=60).strip() == "ready"
        ss.emit("log", busy.id, n=0)
        seen = take(1)
        sent = 1
        for _ in range(2):
            os.kill(sub.pid, signal.SIGSTOP)
            try:
                os.kill(read_runtime(cmb_home)["pid"], signal.SIGKILL)
                for _ in range(5):
                    ss.emit("log", busy.id, n=sent)
                    ss.emit("log", quiet.id, n=sent)
                    sent += 1
            finally:
                os.kill(sub.pid, signal.SIGCONT)
            seen += take(10)
        sub.stdin.write("bye\n")
        sub.stdin.flush()
        assert sub.wait(timeout=60) == 0
        reader.join(30)
        assert lines.empty(), "events were delivered twice"

    assert [e["n"] for e in seen if e["run_id"] == busy.id] == list(range(sent))
    assert [e["n"] for e in seen if e["run_id"] == quiet.id] == list(range(1, sent))
    assert len({e["id"] for e in seen}) == len(seen)


def test_a_replay_longer_than_one_page_is_complete(store):
    from cmbagent_jupyter.store.local.service import REPLAY_PAGE

    ss = store.session(store.create_session("long history").id)
    run = ss.create_run("chatty")
    total = 2 * REPLAY_PAGE + 100
    for start in range(0, total, 2_000):
        ss.append_events([{"type": "log", "run_id": run.id, "payload": {"n": n}}
                          for n in range(start, min(start + 2_000, total))])
    sub = ss.subscribe(run_id=run.id, types=["log"], since_gseq=0)
    ss.emit("log", run.id, n=total)
    got = drain(sub, total + 1, deadline_s=60)
    assert [e["payload"]["n"] for e in got] == list(range(total + 1))
