"""The service's life: started by the first client, one per home, gone after a quiet period."""

from __future__ import annotations

from contextlib import ExitStack

from conftest import client_process, store_service_pids, wait_for

from cmbagent_jupyter.store import Store, StoreClient, service_pid, stop_service
from cmbagent_jupyter.store.protocol import read_runtime, runtime_file

RACER = r"""
import sys
from cmbagent_jupyter.store import StoreClient
print("ready", flush=True)
sys.stdin.readline()
with StoreClient() as client:
    print(client.call("store.ping")["pid"], flush=True)
"""


def service_gone(home, pid):
    return not store_service_pids(home) and not runtime_file(home).exists() and service_pid(home) is None


def test_the_first_client_starts_the_service_in_the_background(cmb_home):
    assert not runtime_file(cmb_home).exists()
    with Store(cmb_home) as store:
        pid = store.call("store.ping")["pid"]
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
    with Store(cmb_home) as store:
        pid = store.call("store.ping")["pid"]
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
    pid = store.call("store.ping")["pid"]
    status = cli("store", "status", "--json").json()
    assert status["running"] is True and status["pid"] == pid and status["schema"] >= 2
    assert status["socket"] == read_runtime(cmb_home)["socket"] and status["db_bytes"] > 0

    assert "stopped" in cli("store", "stop").stdout
    wait_for(lambda: service_gone(cmb_home, pid), 30, "the stopped service to be gone")
    assert cli("store", "status", "--json").json()["running"] is False
    assert "not running" in cli("store", "status").stdout
