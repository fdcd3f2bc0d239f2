"""The event WebSocket: state on connect, missed events, live events, client messages,
heartbeats, and slow clients that are told to replay instead of stalling the server."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import sys
import time

import pytest
from tornado.httpclient import HTTPClientError

from fixtures.waiting import until

UNKNOWN_SESSION = "ses_" + "0" * 20


def is_type(kind: str):
    return lambda frame: frame.get("type") == kind


def make_run(ss, task: str, *, approval: bool = False):
    run = ss.create_run(task)
    steps = ss.put_plan(run.id, [{"key": "step_1", "agent": "engineer", "description": "compute"},
                                 {"key": "step_2", "agent": "researcher", "description": "write",
                                  "depends_on": ["step_1"]}])
    ss.transition_run(run.id, "planning")
    ss.transition_run(run.id, "executing")
    appr = ss.create_approval(run_id=run.id, kind="before_step", step_id=steps[1].id) if approval else None
    return run, steps, appr


@pytest.fixture
def two_sessions(store, server_api):
    a, b = store.create_session("alpha"), store.create_session("beta")
    return store.session(a.id), store.session(b.id)


async def test_connect_sends_state_then_live_events_in_the_envelope(event_socket, two_sessions):
    sa, sb = two_sessions
    run, _, approval = make_run(sa, "waiting run", approval=True)

    sock = await event_socket()
    connected = await sock.next()
    sa.emit("log", run.id, message="live one")
    sb.emit("log", None, message="session-level")
    live = await sock.until(lambda f: f.get("payload", {}).get("message") == "session-level", what="live events")

    assert connected["type"] == "connected" and connected["session_id"] is None
    state = connected["state"]
    assert [s["name"] for s in state["sessions"]] == ["alpha", "beta"]
    assert [(r["id"], r["status"]) for r in state["runs"]] == [(run.id, "waiting_approval")]
    assert [a["id"] for a in state["approvals"]] == [approval.id]
    log_events = [e for e in sock.events() if e["type"] == "log"]
    assert [e["payload"]["message"] for e in log_events] == ["live one", "session-level"]
    first = log_events[0]
    assert set(first) >= {"schema_version", "id", "type", "session_id", "run_id", "seq", "gseq", "ts", "payload"}
    assert first["session_id"] == sa.session_id and first["run_id"] == run.id
    assert first["gseq"] > connected["gseq"] and live["gseq"] > first["gseq"]


async def test_a_session_stream_sees_only_its_session_and_a_run_stream_its_run(event_socket, two_sessions):
    sa, sb = two_sessions
    run, steps, _ = make_run(sa, "run one")
    other, _, _ = make_run(sa, "run two")

    by_session = await event_socket(session_id=sb.session_id)
    by_run = await event_socket(session_id=sa.session_id, run_id=run.id)
    session_state, run_state = await by_session.next(), await by_run.next()
    sa.emit("log", other.id, message="other run of alpha")
    sa.emit("log", run.id, message="for the run")
    sb.emit("log", None, message="for beta")
    await by_session.until(lambda f: f.get("payload", {}).get("message") == "for beta", what="beta's event")
    await by_run.until(lambda f: f.get("payload", {}).get("message") == "for the run", what="the run's event")

    assert [s["name"] for s in session_state["state"]["sessions"]] == ["beta"]
    assert session_state["state"]["runs"] == []
    assert {e["session_id"] for e in by_session.events()} == {sb.session_id}
    assert run_state["state"]["run"]["id"] == run.id
    assert [s["key"] for s in run_state["state"]["steps"]] == ["step_1", "step_2"]
    assert {n.get("key", n["id"]) for n in run_state["state"]["dag"]["nodes"]} == {"planning", "step_1", "step_2", "end"}
    assert {e["run_id"] for e in by_run.events()} == {run.id}


async def test_since_replays_missed_events_once_then_continues_live(event_socket, two_sessions):
    sa, _ = two_sessions
    run, _, _ = make_run(sa, "replayed run")
    seen = sa.emit("log", run.id, message="seen").gseq
    missed = [sa.emit("log", run.id, message=f"missed {i}").gseq for i in range(3)]

    sock = await event_socket(since=seen)
    connected = await sock.next()
    sa.emit("log", run.id, message="live")
    await sock.until(lambda f: f.get("payload", {}).get("message") == "live", what="the live event")

    assert connected["since"] == seen
    gseqs = [e["gseq"] for e in sock.events()]
    assert gseqs[:3] == missed
    assert gseqs == sorted(set(gseqs)), "each event once, in store order"
    assert all(g > seen for g in gseqs)


async def test_connect_refuses_bad_parameters_unknown_ids_and_other_sessions_runs(event_socket, two_sessions):
    sa, sb = two_sessions
    run, _, _ = make_run(sa, "alpha's run")
    cases = [
        ({"session_id": "alpha"}, 400, "'alpha'"),
        ({"since": "yesterday"}, 400, "since"),
        ({"since": "-4"}, 400, "since"),
        ({"session_id": UNKNOWN_SESSION}, 404, UNKNOWN_SESSION),
        ({"session_id": sb.session_id, "run_id": run.id}, 404, run.id),
    ]
    for params, status, text in cases:
        with pytest.raises(HTTPClientError) as refused:
            await event_socket(**params)

        assert refused.value.code == status, params
        body = json.loads(refused.value.response.body)
        assert text in body["message"] and body["reason"], params


async def test_connect_without_token_is_refused(jp_ws_fetch, server_api):
    with pytest.raises(HTTPClientError) as refused:
        await jp_ws_fetch("cmbagent", "api", "events", headers={"Authorization": ""})

    assert refused.value.code == 403


async def test_heartbeats_and_ping_pong(event_socket, stream_settings, two_sessions):
    stream_settings["heartbeat_s"] = 0.2
    sock = await event_socket()
    await sock.next()

    beats = [await sock.until(is_type("heartbeat"), 10, "a heartbeat") for _ in range(2)]
    await sock.send({"type": "ping", "id": 7})
    pong = await sock.until(is_type("pong"), 10, "the pong")

    assert all("ts" in b and "gseq" in b for b in beats)
    assert pong["id"] == 7


async def test_client_messages_pause_resume_and_resolve(event_socket, server_api, two_sessions):
    sa, sb = two_sessions
    run, _, approval = make_run(sa, "controlled over the socket", approval=True)
    sock = await event_socket(session_id=sa.session_id)
    await sock.next()

    await sock.send({"type": "resolve_approval", "id": "r1", "approval_id": approval.id, "decision": "approve",
                     "feedback": "fine by me"})
    resolved = await sock.until(lambda f: f.get("id") == "r1", what="the resolve ack")
    received = await sock.first(is_type("approval.received"), what="the approval event")
    await sock.send({"type": "pause", "id": "p1", "run_id": run.id})
    paused = await sock.until(lambda f: f.get("id") == "p1", what="the pause ack")

    assert resolved["type"] == "ack" and resolved["result"]["status"] == "approved"
    assert resolved["result"]["resolved_by"] == "jupyterlab"
    assert received["payload"]["feedback"] == "fine by me"
    assert paused["type"] == "ack" and paused["result"]["pause_requested"] is True


async def test_resume_message_starts_the_resume_command(event_socket, server_api, two_sessions):
    from test_server_rest import RESUME_SCRIPT

    sa, _ = two_sessions
    run, _, _ = make_run(sa, "paused run")
    sa.transition_run(run.id, "paused")
    server_api.launcher.command = [sys.executable, "-c", RESUME_SCRIPT, "{run_id}", "{session_id}"]
    sock = await event_socket()
    await sock.next()

    await sock.send({"type": "resume", "id": 1, "run_id": run.id, "session_id": sa.session_id})
    ack = await sock.until(lambda f: f.get("id") == 1, what="the resume ack")
    resumed = await sock.until(is_type("workflow.resumed"), 60, "the run to resume")

    assert ack["type"] == "ack" and ack["result"]["status"] == "resuming"
    assert resumed["run_id"] == run.id


async def test_client_messages_that_are_refused(event_socket, two_sessions):
    sa, sb = two_sessions
    run, _, approval = make_run(sa, "alpha's run", approval=True)
    every = await event_socket()
    beta = await event_socket(session_id=sb.session_id)
    await every.next()
    await beta.next()
    cases = [
        (every, "not json", 400, "not valid JSON"),
        (every, json.dumps({"type": "dance"}), 400, "unknown message type"),
        (every, json.dumps({"type": "pause", "id": 1, "run_id": "r"}), 400, "malformed run id"),
        (every, json.dumps({"type": "pause", "id": 2, "run_id": run.id}), 400, "needs a session_id"),
        (every, json.dumps({"type": "ping", "colour": "red"}), 400, "colour: unknown field"),
        (beta, json.dumps({"type": "resolve_approval", "id": 3, "approval_id": approval.id,
                           "decision": "approve"}), 404, approval.id),
        (beta, json.dumps({"type": "pause", "id": 4, "run_id": run.id, "session_id": sa.session_id}), 404,
         "not the session"),
        (every, json.dumps({"type": "resolve_approval", "id": 5, "approval_id": approval.id,
                            "decision": "reject", "session_id": sa.session_id}), 400, "feedback"),
    ]
    for sock, raw, status, text in cases:
        await sock.connection.write_message(raw)
        error = await sock.until(is_type("error"), what=f"the error for {raw}")

        assert error["status"] == status, (raw, error)
        assert text in error["message"], (raw, error)
    assert sa.get_approval(approval_id=approval.id).status == "pending"
    assert sa.get_run(run.id).pause_requested is False


async def test_request_state_sends_fresh_state_and_replays_from_since(event_socket, two_sessions):
    sa, _ = two_sessions
    run, _, _ = make_run(sa, "state run")
    sock = await event_socket()
    connected = await sock.next()
    first = sa.emit("log", run.id, message="one").gseq
    await sock.until(lambda f: "payload" in f and f["gseq"] == first, what="event one")
    sa.transition_run(run.id, "paused")

    await sock.send({"type": "request_state", "id": "s", "since": connected["gseq"]})
    state = await sock.until(is_type("state"), what="the state frame")
    replayed = await sock.until(lambda f: "payload" in f and f["gseq"] == first, what="event one again")

    assert state["id"] == "s" and state["since"] == connected["gseq"]
    assert [r["status"] for r in state["state"]["runs"]] == ["paused"]
    assert replayed["payload"]["message"] == "one"


# ---------------------------------------------------------------- a slow client


class StalledClient:
    """A WebSocket client that stops reading after the handshake (tiny receive buffer)."""

    def __init__(self, port: int, path: str, token: str):
        self.port, self.path, self.token = port, path, token

    async def open(self) -> None:
        raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        raw.setblocking(False)
        await asyncio.get_running_loop().sock_connect(raw, ("127.0.0.1", self.port))
        self.reader, self.writer = await asyncio.open_connection(sock=raw, limit=1024)
        key = base64.b64encode(os.urandom(16)).decode()
        self.writer.write((f"GET {self.path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                           f"Authorization: token {self.token}\r\n\r\n").encode())
        status = await self.reader.readline()
        assert b" 101 " in status, status
        while (await self.reader.readline()) not in (b"\r\n", b""):
            pass

    async def frames(self, stop) -> list[dict]:
        """Read (unmasked, uncompressed) server frames until `stop(frame)`."""
        out = []
        while True:
            head = await self.reader.readexactly(2)
            length = head[1] & 0x7F
            if length == 126:
                length = int.from_bytes(await self.reader.readexactly(2), "big")
            elif length == 127:
                length = int.from_bytes(await self.reader.readexactly(8), "big")
            payload = await self.reader.readexactly(length)
            if head[0] & 0x0F != 1:
                continue
            frame = json.loads(payload)
            out.append(frame)
            if stop(frame):
                return out

    def close(self) -> None:
        self.writer.close()


async def test_a_slow_client_is_told_to_replay_and_loses_nothing(
        jp_serverapp, jp_http_port, jp_base_url, jp_fetch, event_socket, stream_settings, two_sessions):
    sa, _ = two_sessions
    run, _, _ = make_run(sa, "a chatty run")
    stream_settings["queue_size"] = 40
    streams = jp_serverapp.web_app.settings.setdefault("cmbagent_streams", set())
    client = StalledClient(jp_http_port, f"{jp_base_url}cmbagent/api/events", jp_serverapp.identity_provider.token)
    await client.open()
    await until(lambda: streams, 10, "the server side of the stalled stream")
    bulky = "x" * 50_000

    (stream,) = streams

    written = []
    for batch in range(10):  # 15 MB: more than the socket buffers hold
        rows = sa.append_events([{"type": "log", "session_id": sa.session_id, "run_id": run.id,
                                  "payload": {"n": batch * 30 + i, "text": bulky}} for i in range(30)])
        written += [r.gseq for r in rows]
        if batch == 0:
            await until(lambda: stream.last_sent == written[-1], 30, "the first batch to be handed to the socket")
        await asyncio.sleep(0)
    await until(lambda: stream.stalled, 60, "the stream to give up on the slow client")
    started = time.monotonic()
    health = await jp_fetch("cmbagent", "api", "health")
    answered_in = time.monotonic() - started
    before = await client.frames(is_type("replay_required"))
    client.close()
    delivered = [f["gseq"] for f in before if "payload" in f]
    notice = before[-1]
    sock = await event_socket(since=notice["since"])
    await sock.until(lambda f: "payload" in f and f["gseq"] == written[-1], 60, "the rest after reconnecting")
    after = [e["gseq"] for e in sock.events()]

    assert health.code == 200 and answered_in < 2.0, "the server kept answering while the client was stuck"
    assert 0 < len(delivered) < len(written), "overflowed part way through"
    assert notice["since"] == delivered[-1]
    assert delivered + after == written, "nothing lost, nothing twice, in order"
