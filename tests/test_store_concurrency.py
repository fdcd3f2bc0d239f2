"""Many processes, one store: concurrent writers, and writers that outlive SIGKILLed services."""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections import Counter, defaultdict
from contextlib import ExitStack
from pathlib import Path

from fixtures.store import client_process
from fixtures.waiting import wait_for

from cmbagent_jupyter.store.local.protocol import read_runtime

# A writer: connects, says "ready", waits for "go", then appends N events one call at a
# time (each its own round trip), recording the id of every event the store acknowledged.
WRITER = r"""
import sys, uuid
from cmbagent_jupyter.store.local import StoreClient

session_id, run_id, writer, n, ack_path = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
client = StoreClient()
client.call("store.ping")
print("ready", flush=True)
sys.stdin.readline()
with open(ack_path, "w", buffering=1) as acks:
    for i in range(n):
        event = {"type": "log", "run_id": run_id, "payload": {"writer": writer, "i": i}}
        if writer % 2 == 0:  # even writers name their events, odd ones let the store do it
            event["id"] = "evt_" + uuid.uuid4().hex[:20]
        [ack] = client.call("event.append", {"session_id": session_id, "events": [event]})
        assert ack["id"] == event.get("id", ack["id"]), ack
        acks.write(f"{ack['id']} {ack['seq']} {ack['gseq']}\n")
client.close()
print("done", flush=True)
"""


def start_writers(stack: ExitStack, home: Path, session_id: str, run_ids: list[str], n: int, tmp_path: Path):
    procs, ack_files = [], []
    for w, run_id in enumerate(run_ids):
        ack = tmp_path / f"acks-{w}.txt"
        procs.append(stack.enter_context(client_process(home, WRITER, session_id, run_id, str(w), str(n), str(ack))))
        ack_files.append(ack)
    for p in procs:
        line = p.stdout.readline()
        assert line.strip() == "ready", f"writer did not start: {line!r} {p.stderr.read() if p.poll() is not None else ''}"
    for p in procs:  # all start writing together
        p.stdin.write("go\n")
        p.stdin.flush()
    return procs, ack_files


def finish(procs) -> None:
    for p in procs:
        out, err = p.communicate(timeout=180)
        assert p.returncode == 0 and "done" in out, f"a writer failed (exit {p.returncode}):\n{err}"
        assert "Error" not in err and "Traceback" not in err, err


def acked(ack_files: list[Path]) -> list[list[str]]:
    return [[line.split()[0] for line in f.read_text().splitlines() if line.strip()] if f.exists() else []
            for f in ack_files]


def assert_runs_are_gapless(events) -> None:
    """Per run, seq is exactly 1..N and store order (gseq) agrees with it."""
    by_run = defaultdict(list)
    for e in events:
        by_run[e.run_id].append(e)
    for run_id, evs in by_run.items():
        evs.sort(key=lambda e: e.seq)
        assert [e.seq for e in evs] == list(range(1, len(evs) + 1)), f"run {run_id} has gaps or repeats in seq"
        gseqs = [e.gseq for e in evs]
        assert gseqs == sorted(gseqs) and len(set(gseqs)) == len(gseqs), f"run {run_id}: gseq disagrees with seq"


def writer_events(ss):
    return [e for e in ss.events(limit=100_000) if e.type.value == "log"]


def test_four_processes_append_2000_events_each_to_its_own_run(store, cmb_home, tmp_path):
    ss = store.session(store.create_session("busy").id)
    runs = [ss.create_run(f"writer {w}").id for w in range(4)]

    with ExitStack() as stack:
        procs, ack_files = start_writers(stack, cmb_home, ss.session_id, runs, 500, tmp_path)
        finish(procs)

    events = writer_events(ss)
    assert len(events) == 2000
    assert Counter(e.run_id for e in events) == {r: 500 for r in runs}
    for w, run_id in enumerate(runs):
        mine = sorted((e for e in events if e.run_id == run_id), key=lambda e: e.seq)
        assert [e.payload["i"] for e in mine] == list(range(500))  # each writer's order is kept
        assert {e.payload["writer"] for e in mine} == {w}
    assert_runs_are_gapless(ss.events(limit=100_000))
    assert sorted(sum(acked(ack_files), [])) == sorted(e.id for e in events)


def test_four_processes_append_to_one_shared_run_without_gaps(store, cmb_home, tmp_path):
    ss = store.session(store.create_session("shared").id)
    run = ss.create_run("one run, four writers").id

    with ExitStack() as stack:
        procs, ack_files = start_writers(stack, cmb_home, ss.session_id, [run] * 4, 500, tmp_path)
        finish(procs)

    events = ss.events(run_id=run, limit=100_000)
    assert len(events) == 2001  # workflow.created + 2000
    assert_runs_are_gapless(events)
    for w in range(4):
        mine = [e.payload["i"] for e in sorted(events, key=lambda e: e.seq) if e.payload.get("writer") == w]
        assert mine == list(range(500))
    assert len({e.id for e in events}) == 2001


def test_sigkilled_service_loses_and_doubles_no_acknowledged_write(store, cmb_home, tmp_path):
    ss = store.session(store.create_session("crashy").id)
    shared = ss.create_run("shared").id
    runs = [ss.create_run("own").id, ss.create_run("own").id, shared, shared]
    n = 700
    killed: list[int] = []

    with ExitStack() as stack:
        procs, ack_files = start_writers(stack, cmb_home, ss.session_id, runs, n, tmp_path)
        for round_ in range(3):
            threshold = (round_ + 1) * len(runs) * n // 6
            wait_for(lambda: sum(map(len, acked(ack_files))) >= threshold, 120, f"{threshold} acknowledged writes")
            pid = wait_for(lambda: (read_runtime(cmb_home) or {}).get("pid") not in (None, *killed)
                           and read_runtime(cmb_home)["pid"], 60, "a restarted store service")
            assert any(p.poll() is None for p in procs), "the writers finished before the kill: raise n"
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        finish(procs)

    assert len(set(killed)) == 3
    events = writer_events(ss)
    ids = Counter(e.id for e in events)
    for w, acks in enumerate(acked(ack_files)):
        assert len(acks) == n, f"writer {w} got {len(acks)} acknowledgements"
        lost = [a for a in acks if ids[a] == 0]
        doubled = [a for a in acks if ids[a] > 1]
        assert not lost and not doubled, f"writer {w}: lost {len(lost)}, doubled {len(doubled)}"
    assert len(events) == len(runs) * n
    assert_runs_are_gapless(ss.events(limit=100_000))


def resend(client, op: str, args: dict, rid: str, retry: bool):
    """Send a request frame as the client does after losing its connection (same rid)."""
    conn = client._ensure(time.monotonic() + 30)
    return conn.request({"op": op, "args": args, "rid": rid, "retry": retry})


def test_a_resent_write_is_answered_not_applied_again(store):
    ss = store.session(store.create_session("resend").id)
    run = ss.create_run("r")
    client = store.client
    for op, args in [("event.append", {"session_id": ss.session_id,
                                       "events": [{"type": "log", "run_id": run.id, "payload": {"n": 1}}]}),
                     ("run.create", {"session_id": ss.session_id, "task": "created once"}),
                     ("cost.add", {"session_id": ss.session_id, "records": [{"model": "m", "cost_usd": 1.0}]})]:
        rid = uuid.uuid4().hex
        first = resend(client, op, args, rid, retry=False).result(30)
        again = resend(client, op, args, rid, retry=True).result(30)
        assert first["ok"] and again == {**first, "id": again["id"]}, op
        # first try and resend in flight together (one batch): still applied once
        rid = uuid.uuid4().hex
        both = [resend(client, op, args, rid, retry=False), resend(client, op, args, rid, retry=True)]
        a, b = (f.result(30) for f in both)
        assert a["result"] == b["result"], op

    assert [e.payload for e in ss.events(run_id=run.id, types=["log"])] == [{"n": 1}, {"n": 1}]
    assert sorted(r.task for r in ss.list_runs()) == ["created once", "created once", "r"]
    assert ss.usage().cost_usd == 2.0
