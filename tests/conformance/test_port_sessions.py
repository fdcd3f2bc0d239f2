"""Sessions through the port: made, found, listed, archived, deleted, their quotas and usage."""

from __future__ import annotations

from pathlib import Path

import pytest

from cmbagent_jupyter.core import Conflict, Invalid, NotFound, Quotas, Session, SessionStatus, StoreUnavailable, Usage
from cmbagent_jupyter.store.port import NewFile, NewMetric
from porttools import unknown


def test_a_session_is_made_with_its_folder_and_found_by_id_and_by_name(port):
    s = port.create_session("alpha", {"max_concurrent_runs": 2}, actor="tester")
    assert isinstance(s, Session) and (s.name, s.status) == ("alpha", SessionStatus.active)
    assert s.quotas == Quotas(max_concurrent_runs=2)
    assert Path(s.path) == port.home / "sessions" / s.id and Path(s.path).is_dir()
    assert port.get_session(s.id) == s == port.resolve_session("alpha") == port.resolve_session(s.id)
    assert port.session(s.id).info() == s and port.session(s.id).session_id == s.id
    assert port.session(s.id).home == port.home, "a session's port knows where its runs' folders are"
    other = port.create_session("beta", Quotas(max_cost_usd=3))
    assert other.quotas.max_cost_usd == 3
    assert [x.id for x in port.list_sessions()] == [s.id, other.id]
    [made] = port.session(s.id).history(s.id)
    assert (made.entity_type, made.from_state, made.to_state, made.actor) == ("session", None, "active", "tester")
    [event] = port.session(s.id).events()
    assert (event.type.value, event.payload, event.run_id, event.seq) == ("session.created", {"name": "alpha"}, None, 1)


@pytest.mark.parametrize("name", ["", "   ", "../up", ".hidden", "a/b", "a\\b", "bell\x07", "x" * 121, 42])
def test_names_that_could_escape_a_folder_a_shell_or_a_page_are_invalid(port, name):
    with pytest.raises(Invalid):
        port.create_session(name)
    assert port.list_sessions(include_archived=True, include_deleted=True) == []


def test_a_name_in_use_is_a_conflict_until_its_session_is_deleted(port):
    first = port.create_session("shared")
    with pytest.raises(Conflict, match="shared"):
        port.create_session("shared")
    port.session(first.id).set_status("deleted")
    second = port.create_session("shared")
    assert second.id != first.id and port.resolve_session("shared").id == second.id


def test_bad_quotas_are_invalid_and_good_ones_change_only_what_they_name(port):
    with pytest.raises(Invalid):
        port.create_session("q", {"max_cost_usd": -1})
    with pytest.raises(Invalid):
        port.create_session("q", {"no_such_quota": 1})
    ss = port.session(port.create_session("q").id)
    with pytest.raises(Invalid):
        ss.set_quotas(max_concurrent_runs=-2)
    with pytest.raises(Invalid):
        ss.set_quotas(max_gpus=1)
    out = ss.set_quotas(max_cost_usd=5)
    assert out.quotas == Quotas(max_cost_usd=5) == ss.info().quotas


def test_archive_hides_restore_brings_back_delete_removes_and_each_move_is_history(port):
    s = port.create_session("life")
    ss = port.session(s.id)
    assert ss.set_status("archived").status == SessionStatus.archived
    assert port.list_sessions() == [] and [x.id for x in port.list_sessions(include_archived=True)] == [s.id]
    assert port.get_session(s.id).status == SessionStatus.archived
    assert ss.set_status("active").status == SessionStatus.active
    ss.set_status("deleted", reason="done with it", actor="tester")
    for lookup, named in ((lambda: port.get_session(s.id), s.id), (ss.info, s.id),
                          (lambda: port.resolve_session(s.id), s.id), (lambda: port.resolve_session("life"), "life")):
        with pytest.raises(NotFound, match=named):
            lookup()
    assert [x.id for x in port.list_sessions(include_deleted=True)] == [s.id]
    moves = [(h.from_state, h.to_state) for h in ss.history(s.id)]
    assert moves == [(None, "active"), ("active", "archived"), ("archived", "active"), ("active", "deleted")]
    last = ss.history(s.id)[-1]
    assert (last.reason, last.actor) == ("done with it", "tester")
    changed = [e.payload for e in ss.events(types=["session.state_changed"])]
    assert changed == [{"from": "active", "to": "archived"}, {"from": "archived", "to": "active"},
                       {"from": "active", "to": "deleted"}]
    with pytest.raises(Invalid, match="unknown session status"):
        port.session(port.create_session("other").id).set_status("frozen")


def test_a_running_run_blocks_archiving_and_any_active_run_blocks_deleting(port):
    ss = port.session(port.create_session("busy").id)
    run = ss.create_run("work")
    ss.transition_run(run.id, "planning")
    with pytest.raises(Conflict, match="1 active run"):
        ss.set_status("archived")
    ss.transition_run(run.id, "paused")
    assert ss.set_status("archived").status == SessionStatus.archived, "a paused run may sleep in an archive"
    with pytest.raises(Conflict, match="1 active run"):
        ss.set_status("deleted")
    assert ss.info().status == SessionStatus.archived
    ss.transition_run(run.id, "cancelled")
    assert ss.set_status("deleted").status == SessionStatus.deleted


def test_an_archived_session_starts_no_runs_and_a_deleted_one_takes_nothing_more(port):
    ss = port.session(port.create_session("closed").id)
    ss.set_status("archived")
    with pytest.raises(Conflict, match="archived"):
        ss.create_run("no")
    ss.set_status("deleted")
    refusals = {
        "create_run": lambda: ss.create_run("no"),
        "emit": lambda: ss.emit("log", message="no"),
        "add_costs": lambda: ss.add_costs([{"model": "m", "cost_usd": 1.0}]),
        "record_files": lambda: ss.record_files([NewFile(path="a.py", kind="code")]),
        "record_metrics": lambda: ss.record_metrics([NewMetric(name="chi2", value=1.0)]),
        "set_quotas": lambda: ss.set_quotas(max_cost_usd=1),
        "usage": ss.usage,
    }
    for name, call in refusals.items():
        with pytest.raises(NotFound, match="does not exist"):
            call()
    assert ss.list_files() == [] and ss.list_metrics() == [] and ss.cost_records() == []


def test_bad_and_unknown_session_references(port):
    for ref in ("", "   ", "ses_XYZ"):
        with pytest.raises(Invalid):
            port.resolve_session(ref)
    with pytest.raises(NotFound, match="nobody"):
        port.resolve_session("nobody")
    with pytest.raises(Invalid, match="malformed session id"):
        port.session("bad")
    with pytest.raises(Invalid):
        port.get_session("run_0123456789abcdef")
    missing = unknown("session")
    with pytest.raises(NotFound, match=missing):
        port.get_session(missing)
    with pytest.raises(NotFound, match=missing):
        port.session(missing).info()


def test_usage_counts_active_runs_spending_and_the_folder(port):
    s = port.create_session("usage")
    ss = port.session(s.id)
    assert ss.usage() == Usage(active_runs=0, cost_usd=0.0, disk_mb=ss.usage().disk_mb)
    first, second = ss.create_run("a"), ss.create_run("b")
    ss.transition_run(first.id, "planning")
    ss.transition_run(second.id, "planning")
    ss.transition_run(second.id, "paused")
    ss.add_costs([{"model": "m", "cost_usd": 0.25}, {"model": "m", "cost_usd": 0.5}])
    (Path(s.path) / "data.bin").write_bytes(b"\0" * (1024 * 1024))
    used = ss.usage()
    assert (used.active_runs, used.cost_usd) == (2, 0.75) and used.disk_mb >= 1.0
    ss.transition_run(first.id, "cancelled")
    assert ss.usage().active_runs == 1, "a paused run keeps its place"


def test_ping_names_the_store_order_and_a_closed_port_answers_no_more(port):
    first = port.ping()
    assert first.pong and first.version >= 1
    ss = port.session(port.create_session("ping").id)
    ref = ss.emit("log", message="one")
    assert port.ping().gseq == ref.gseq > first.gseq
    assert not port.closed
    port.close()
    assert port.closed
    with pytest.raises(StoreUnavailable):
        port.ping()
