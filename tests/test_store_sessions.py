"""Sessions from Python: the lifecycle, a directory each, names checked at the edge."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cmbagent_jupyter.core import SessionStatus
from cmbagent_jupyter.core.errors import Conflict, Invalid, NotFound


def test_a_session_is_created_listed_and_found_with_its_own_directory(store, cmb_home):
    s = store.create_session("Project X", {"max_cost_usd": 5})

    assert s.name == "Project X" and s.status == SessionStatus.active
    assert s.quotas.max_cost_usd == 5 and s.quotas.max_concurrent_runs == 3
    assert Path(s.path) == cmb_home / "sessions" / s.id and Path(s.path).is_dir()
    on_disk = json.loads((Path(s.path) / "session.json").read_text())
    assert on_disk["id"] == s.id and on_disk["name"] == "Project X"
    assert [x.id for x in store.list_sessions()] == [s.id]
    assert store.get_session(s.id) == s
    assert store.resolve_session("Project X").id == s.id
    assert store.resolve_session(s.id).id == s.id


def test_archive_hides_a_session_restore_brings_it_back_delete_removes_it(store):
    keep = store.create_session("keep")
    s = store.create_session("Project X")

    assert store.session(s.id).set_status("archived").status == SessionStatus.archived
    assert [x.id for x in store.list_sessions()] == [keep.id]
    assert {x.id for x in store.list_sessions(include_archived=True)} == {keep.id, s.id}

    assert store.session(s.id).set_status("active").status == SessionStatus.active
    assert {x.id for x in store.list_sessions()} == {keep.id, s.id}

    assert store.session(s.id).set_status("deleted").status == SessionStatus.deleted
    assert [x.id for x in store.list_sessions(include_archived=True)] == [keep.id]
    with pytest.raises(NotFound, match=s.id):
        store.get_session(s.id)
    assert [h.to_state for h in store.session(s.id).history(s.id)] == ["active", "archived", "active", "deleted"]


def test_a_name_in_use_is_refused_and_freed_by_deletion(store):
    first = store.create_session("Project X")
    with pytest.raises(Conflict, match="already exists"):
        store.create_session("Project X")
    store.session(first.id).set_status("deleted")
    assert store.create_session("Project X").id != first.id


@pytest.mark.parametrize(
    ("name", "complaint"),
    [
        ("../x", "path separators"),
        ("/etc", "path separators"),
        ("a\\b", "path separators"),
        (".hidden", "start with '.'"),
        ("..", "start with '.'"),
        ("bad\x00name", "control characters"),
        ("line\nbreak", "control characters"),
        ("", "must not be empty"),
        ("   ", "must not be empty"),
        ("x" * 121, "at most 120"),
    ],
)
def test_hostile_session_names_are_refused_with_the_reason(store, cmb_home, name, complaint):
    with pytest.raises(Invalid, match=complaint):
        store.create_session(name)
    assert store.list_sessions(include_archived=True, include_deleted=True) == []
    assert list((cmb_home / "sessions").iterdir()) == []


def test_an_active_run_blocks_archiving_its_session(store):
    s = store.create_session("busy")
    ss = store.session(s.id)
    run = ss.create_run("fit a power spectrum")
    ss.transition_run(run.id, "planning")

    with pytest.raises(Conflict, match="active run"):
        store.session(s.id).set_status("archived")
    ss.transition_run(run.id, "cancelled")
    assert store.session(s.id).set_status("archived").status == SessionStatus.archived


def test_an_archived_session_starts_no_runs(store):
    s = store.create_session("cold")
    store.session(s.id).set_status("archived")
    with pytest.raises(Conflict, match="archived"):
        store.session(s.id).create_run("anything")


def test_quotas_are_changed_validated_and_written_to_the_session_file(store):
    s = store.create_session("q")
    ss = store.session(s.id)
    assert ss.set_quotas(max_cost_usd=20).quotas.max_cost_usd == 20
    assert json.loads((Path(s.path) / "session.json").read_text())["quotas"]["max_cost_usd"] == 20
    with pytest.raises(Invalid, match="max_cost_usd"):
        ss.set_quotas(max_cost_usd=-1)
    assert ss.info().quotas.max_cost_usd == 20


def test_a_deleted_session_takes_no_more_events_or_costs(store):
    s = store.create_session("short-lived")
    ss = store.session(s.id)
    run = ss.create_run("t")
    ss.emit("log", run.id)  # the service now knows the session is live
    ss.add_costs([{"model": "m", "cost_usd": 0.1, "run_id": run.id}])
    ss.transition_run(run.id, "cancelled")
    store.session(s.id).set_status("deleted")

    with pytest.raises(NotFound, match=f"session {s.id} does not exist"):
        ss.emit("log", run.id)
    with pytest.raises(NotFound, match=f"session {s.id} does not exist"):
        ss.add_costs([{"model": "m", "cost_usd": 0.1}])
