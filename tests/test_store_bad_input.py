"""Bad input gets a clear error and loses nothing; the service keeps serving afterwards."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
from fixtures.store import store_service_pids

from cmbagent_jupyter.core.home import HomeError
from cmbagent_jupyter.core import InvalidInput
from cmbagent_jupyter.core.errors import Conflict, Invalid, NotFound, PayloadTooLarge, StoreCorrupted, Unauthorized
from cmbagent_jupyter.store.local import StoreClient
from cmbagent_jupyter.store import open_store
from cmbagent_jupyter.store.local.protocol import HEADER, MAX_FRAME, encode, read_runtime, runtime_file


@pytest.fixture
def ss(store):
    return store.session(store.create_session("edge").id)


def test_unknown_ids_are_not_found_and_say_which(store, ss):
    with pytest.raises(NotFound, match="session ses_0123456789abcdef does not exist"):
        store.get_session("ses_0123456789abcdef")
    with pytest.raises(NotFound, match="run run_0123456789abcdef does not exist"):
        ss.get_run("run_0123456789abcdef")
    with pytest.raises(NotFound, match="step stp_0123456789abcdef does not exist"):
        ss.get_step("stp_0123456789abcdef")
    with pytest.raises(NotFound, match="run run_0123456789abcdef does not exist"):
        store.find_run("run_0123456789abcdef")


@pytest.mark.parametrize("bad", ["../../etc/passwd", "ses_XYZ", "run_0123456789abcdef", "ses_" + "a" * 40, ""])
def test_malformed_ids_are_refused_before_any_lookup(store, bad):
    with pytest.raises(Invalid, match="malformed session id"):
        store.client.call("session.get", {"session_id": bad})
    with pytest.raises(InvalidInput, match="malformed session id"):
        store.session(bad)


def test_wrongly_typed_arguments_and_unknown_ops_are_invalid(store, ss):
    run = ss.create_run("t")
    with pytest.raises(Invalid, match="run id must be a string"):
        ss.get_run(run_id=123)
    with pytest.raises(Invalid, match="unknown store operation 'run.explode'"):
        store.client.call("run.explode")
    with pytest.raises(Invalid, match="unknown event type 'nonsense'"):
        ss.append_events([{"type": "nonsense", "run_id": run.id}])
    with pytest.raises(Invalid, match="unknown run state 'flying'"):
        ss.transition_run(run.id, "flying")
    with pytest.raises(Invalid, match="unknown mode"):
        ss.create_run("t", mode="yolo")
    assert [r.id for r in ss.list_runs()] == [run.id]  # nothing half-written


def test_an_event_batch_with_one_bad_event_writes_none(ss):
    run = ss.create_run("t")
    before = len(ss.events())
    with pytest.raises(Invalid, match="unknown event type"):
        ss.append_events([{"type": "log", "run_id": run.id}, {"type": "bogus", "run_id": run.id}])
    assert len(ss.events()) == before
    assert ss.emit("log", run.id).seq == 2  # numbering was not consumed by the refused batch


def test_a_corrupted_database_is_a_clear_error_naming_the_file_and_the_fix(cmb_home, cli):
    cmb_home.mkdir(parents=True)
    db = cmb_home / "store.duckdb"
    db.write_bytes(os.urandom(64 * 1024))

    with open_store(cmb_home) as store, pytest.raises(StoreCorrupted) as info:
        store.ping()
    assert str(db) in info.value.message and "cmbagent recover" in info.value.message
    assert store_service_pids(cmb_home) == []

    out = cli("session", "list")
    assert out.code == 2 and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "cmbagent recover" in out.stderr


def test_an_unwritable_home_is_a_clear_error(tmp_path, monkeypatch):
    if os.geteuid() == 0:
        # root writes through chmod 0500: make the home impossible to create instead
        blocker = tmp_path / "a-file"
        blocker.write_text("not a directory")
        home = blocker / "home"
    else:
        home = tmp_path / "read-only"
        home.mkdir()
        home.chmod(0o500)
    monkeypatch.setenv("CMBAGENT_HOME", str(home))

    with open_store(home) as store, pytest.raises(HomeError) as info:
        store.ping()
    assert str(home) in str(info.value) and ("not usable" in str(info.value) or "read-only" in str(info.value))
    assert store_service_pids(home) == []


def test_a_stale_runtime_file_of_a_dead_service_is_replaced(cmb_home):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (cmb_home / "run").mkdir(parents=True)
    runtime_file(cmb_home).write_text(json.dumps({
        "pid": dead.pid, "socket": str(cmb_home / "run" / "gone.sock"), "token": "0" * 64, "protocol": 1}))

    with open_store(cmb_home) as store:
        pong = store.ping()
    assert pong.pid != dead.pid
    assert read_runtime(cmb_home)["pid"] == pong.pid
    assert store_service_pids(cmb_home) == [pong.pid]


def test_an_oversized_request_is_refused_and_the_service_carries_on(ss):
    run = ss.create_run("big")
    with pytest.raises(PayloadTooLarge, match=f"at most {MAX_FRAME} bytes"):
        ss.emit("log", run.id, blob="x" * (MAX_FRAME + 1))
    assert ss.emit("log", run.id, ok=True).seq == 2


def raw_connection(home):
    info = read_runtime(home)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect(info["socket"])
    sock.sendall(encode({"op": "hello", "token": info["token"], "id": 0}))
    assert read_frame(sock)["ok"]
    return sock


def read_frame(sock) -> dict:
    def exact(n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = sock.recv(n - len(buf))
            assert chunk, "connection closed"
            buf += chunk
        return buf

    (length,) = HEADER.unpack(exact(HEADER.size))
    return json.loads(exact(length))


def test_a_raw_client_announcing_a_huge_frame_gets_too_large(store, cmb_home):
    store.ping()
    with raw_connection(cmb_home) as sock:
        sock.sendall(HEADER.pack(MAX_FRAME + 1))
        reply = read_frame(sock)
    assert reply["ok"] is False and reply["error"]["code"] == "too_large"
    assert str(MAX_FRAME) in reply["error"]["message"]
    assert store.ping().pong is True


def test_a_raw_client_sending_garbage_gets_invalid(store, cmb_home):
    store.ping()
    with raw_connection(cmb_home) as sock:
        sock.sendall(HEADER.pack(9) + b"not json!")
        reply = read_frame(sock)
    assert reply["error"]["code"] == "invalid" and "not valid JSON" in reply["error"]["message"]
    assert store.ping().pong is True


def test_a_wrong_token_is_unauthorized(store, cmb_home):
    store.ping()
    info = read_runtime(cmb_home)
    runtime_file(cmb_home).write_text(json.dumps({**info, "token": "f" * 64}))
    with StoreClient(cmb_home) as intruder, pytest.raises(Unauthorized, match="bad or missing store token"):
        intruder.call("store.ping")
    runtime_file(cmb_home).write_text(json.dumps(info))
    with StoreClient(cmb_home) as friend:
        assert friend.call("store.ping")["pid"] == info["pid"]


def test_the_runtime_file_and_socket_are_private(store, cmb_home):
    store.ping()
    info = read_runtime(cmb_home)
    assert runtime_file(cmb_home).stat().st_mode & 0o777 == 0o600
    assert os.stat(info["socket"]).st_mode & 0o777 == 0o600
    assert (cmb_home / "run").stat().st_mode & 0o777 == 0o700


def test_records_with_bad_numbers_or_ids_are_refused(ss):
    run = ss.create_run("t")
    for record, complaint in [({"model": "m", "cost_usd": -5}, "cost_usd must be a non-negative number"),
                              ({"model": "m", "cost_usd": "free"}, "cost_usd must be a non-negative number"),
                              ({"model": "m", "prompt_tokens": -1}, "prompt_tokens must be a non-negative"),
                              ({"model": "m", "run_id": "run_00000000000000ff"}, "does not exist")]:
        with pytest.raises((Invalid, NotFound), match=complaint):
            ss.add_costs([record])
    assert ss.usage().cost_usd == 0
    with pytest.raises(Invalid, match="malformed step id"):
        ss.put_plan(run.id, [{"id": "../../escape", "key": "step_1"}])
    with pytest.raises(Invalid, match="step 1 of the plan must be an object"):
        ss.put_plan(run.id, ["just text"])
    with pytest.raises(Invalid, match="malformed checkpoint id"):
        ss.put_checkpoint(run.id, kind="manual", context={}, checkpoint_id="ckp_../x")
    with pytest.raises(Invalid, match="malformed event id"):
        ss.append_events([{"id": "evt_<script>", "type": "log", "run_id": run.id}])
    assert ss.list_steps(run.id) == [] and ss.list_checkpoints(run.id) == []


def test_reusing_an_existing_id_is_a_conflict(store, ss):
    run = ss.create_run("t")
    with pytest.raises(Conflict, match=f"run {run.id} already exists"):
        ss.create_run("again", run_id=run.id)
    with pytest.raises(Conflict, match=f"session {ss.session_id} already exists"):
        store.client.call("session.create", {"name": "other", "id": ss.session_id})
