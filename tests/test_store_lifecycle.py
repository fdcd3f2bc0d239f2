"""The service's life: started by the first client, one per home, gone after a quiet period."""

from __future__ import annotations

from contextlib import ExitStack

from fixtures.store import client_process, store_service_pids
from fixtures.waiting import wait_for

from cmbagent_jupyter.store.local import StoreClient, service_pid, stop_service
from cmbagent_jupyter.store import open_store
from cmbagent_jupyter.store.local.protocol import read_runtime, runtime_file

RACER = r"""
import sys
from cmbagent_jupyter.store.local import StoreClient
print("ready", flush=True)
sys.stdin.readline()
with StoreClient() as client:
    print(client.call("store.ping")["pid"], flush=True)
"""


def service_gone(home, pid):
    return not store_service_pids(home) and not runtime_file(home).exists() and service_pid(home) is None


def test_the_first_client_starts_the_service_in_the_background(cmb_home):
    assert not runtime_file(cmb_home).exists()
    with open_store(cmb_home) as store:
        pid = store.ping().pid
    assert read_runtime(cmb_home)["pid"] == pid
    assert store_service_pids(cmb_home) == [pid]  # it outlives its client
    assert stop_service(cmb_home) is True
    assert service_gone(cmb_home, pid)
    assert stop_service(cmb_home) is False


def test_the_service_exits_after_a_quiet_period_and_a_new_one_starts_on_demand(cmb_home):
    with StoreClient(cmb_home, idle_seconds=1) as client:
        first = client.call("store.ping")["pid"]
        s = client.call("session.create", {"name": "kept"})
    wait_for(lambda: service_gone(cmb_home, first), 30, "the idle service to exit and remove its runtime file")

    with StoreClient(cmb_home, idle_seconds=1) as client:
        second = client.call("store.ping")["pid"]
        assert second != first
        assert client.call("session.get", {"session_id": s["id"]})["name"] == "kept"
    wait_for(lambda: service_gone(cmb_home, second), 30, "the second idle service to exit")


def test_the_quiet_period_comes_from_the_environment(cmb_home, monkeypatch):
    monkeypatch.setenv("CMBAGENT_STORE_IDLE_SECONDS", "1")
    with open_store(cmb_home) as store:
        pid = store.ping().pid
    wait_for(lambda: service_gone(cmb_home, pid), 30, "the service to exit after CMBAGENT_STORE_IDLE_SECONDS")


def test_a_client_whose_service_went_idle_reconnects_transparently(cmb_home):
    with StoreClient(cmb_home, idle_seconds=1) as client:
        first = client.call("store.ping")["pid"]
        client._conn.close()  # as the service does when it leaves: the client is not told
        wait_for(lambda: service_gone(cmb_home, first), 30, "the idle service to exit")
        assert client.call("store.ping")["pid"] != first


def test_two_clients_racing_to_start_make_one_service(cmb_home):
    with ExitStack() as stack:
        racers = [stack.enter_context(client_process(cmb_home, RACER)) for _ in range(3)]
        for r in racers:
            assert r.stdout.readline().strip() == "ready"
        for r in racers:
            r.stdin.write("go\n")
            r.stdin.flush()
        pids = {int(r.communicate(timeout=120)[0].strip()) for r in racers}
    assert len(pids) == 1
    assert store_service_pids(cmb_home) == list(pids)


def test_the_cli_reports_and_stops_the_service(cli, cmb_home, store):
    pid = store.ping().pid
    status = cli("store", "status", "--json").json()
    assert status["running"] is True and status["pid"] == pid and status["schema"] >= 2
    assert status["socket"] == read_runtime(cmb_home)["socket"] and status["db_bytes"] > 0

    assert "stopped" in cli("store", "stop").stdout
    wait_for(lambda: service_gone(cmb_home, pid), 30, "the stopped service to be gone")
    assert cli("store", "status", "--json").json()["running"] is False
    assert "not running" in cli("store", "status").stdout


def test_async_calls_from_one_loop_reach_the_service_in_the_order_they_were_made(cmb_home):
    """The engine sends its last journal records right behind a batch still in flight:
    that holds only if a loop's requests are applied in the order it made them (a record
    batch that arrives before the one it follows is refused as out of order)."""
    import asyncio
    import os

    store = open_store(cmb_home)
    try:
        ss = store.session(store.create_session("order").id)
        run = ss.create_run("order", mode="control")
        [step] = ss.put_plan(run.id, [{"key": "s1", "description": "one"}])
        ss.claim(run_id=run.id, to="executing", owner_pid=os.getpid())
        at = "2026-01-01T00:00:00+00:00"

        async def burst():
            records = [{"seq": 1, "at": at, "start": [step.id]}] + [
                {"seq": i, "at": at, "start": []} for i in range(2, 41)]
            return await asyncio.gather(*(ss.aio.advance(run.id, [r], owner_pid=os.getpid()) for r in records))

        replies = asyncio.run(burst())
        assert [r.journal_seq for r in replies] == list(range(1, 41))
    finally:
        store.close()


def test_an_async_call_whose_connection_is_lost_is_resent_once(cmb_home):
    """A lost connection under an async write: the resend carries the same request id, so the
    service answers it from its ledger if the first one was applied, and it is applied once."""
    import asyncio

    store = open_store(cmb_home)
    try:
        ss = store.session(store.create_session("resend").id)
        run = ss.create_run("resend", mode="one_shot")

        async def append_after_loss():
            store.client._conn.close()  # the service went away under the client
            return await ss.aio.append_events([{"type": "log", "run_id": run.id, "payload": {"n": 1}}])

        asyncio.run(append_after_loss())
        assert [e.payload for e in ss.events(run.id) if e.type.value == "log"] == [{"n": 1}]
    finally:
        store.close()
