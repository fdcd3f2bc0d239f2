"""The REST API under /cmbagent/api/: what each endpoint answers, and what it refuses.

Every endpoint is checked for success, for a request without the token, for a
malformed body or id (400 with a message), for an unknown id (404) and, where it is
session-scoped, for another session's ids (404: cross-session access refused).
"""

from __future__ import annotations

import json
import os
import signal
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from fixtures.waiting import wait_for

UNKNOWN = {
    "session": "ses_" + "0" * 20,
    "run": "run_" + "0" * 20,
    "approval": "apr_" + "0" * 20,
}


@dataclass
class World:
    a: str  # session alpha: a run waiting for approval, with costs
    b: str  # session beta: a run of its own
    run: str
    steps: list[str]
    approval: str
    run_b: str


def executing_run(ss, task: str, keys=("step_1", "step_2")):
    run = ss.create_run(task)
    plan = [{"key": k, "agent": "engineer", "description": f"do {k}", "depends_on": [keys[i - 1]] if i else []}
            for i, k in enumerate(keys)]
    steps = ss.put_plan(run.id, plan)
    ss.transition_run(run.id, "planning")
    ss.transition_run(run.id, "executing")
    return run, steps


@pytest.fixture
def world(store, server_api) -> World:
    a, b = store.create_session("alpha"), store.create_session("beta")
    sa, sb = store.session(a.id), store.session(b.id)
    run, steps = executing_run(sa, "Fit the CMB power spectrum")
    sa.transition_step(steps[0].id, "running")
    sa.transition_step(steps[0].id, "completed")
    approval = sa.create_approval(run_id=run.id, kind="before_step", step_id=steps[1].id,
                       request={"question": "run step 2?"})
    sa.add_costs([{"run_id": run.id, "step_id": steps[0].id, "agent": "engineer", "model": "gpt-4o",
                   "prompt_tokens": 1000, "completion_tokens": 200, "cost_usd": 0.25}])
    run_b, _ = executing_run(sb, "Another team's task")
    sb.add_costs([{"run_id": run_b.id, "model": "gpt-4o", "cost_usd": 1.5}])
    return World(a.id, b.id, run.id, [s.id for s in steps], approval.id, run_b.id)


# ---------------------------------------------------------------- every endpoint refuses a request without the token

ENDPOINTS = [
    ("GET", "sessions"), ("POST", "sessions"), ("GET", "sessions/{a}"), ("DELETE", "sessions/{a}"),
    ("POST", "workflows/{run}/pause"), ("POST", "workflows/{run}/resume"), ("GET", "workflows/{run}/status"),
    ("POST", "workflows/{run}/branch"), ("GET", "approvals/pending"), ("POST", "approvals/{approval}/approve"),
    ("POST", "approvals/{approval}/reject"), ("POST", "approvals/{approval}/resolve"), ("GET", "cost/summary"), ("GET", "cost/by-session"),
    ("GET", "metrics/workflows"), ("GET", "agents"), ("POST", "agents/reload"), ("GET", "events"),
]


async def test_requests_without_token_are_refused(world, store, unauthenticated_call):
    before = store.session(world.a).get_run(world.run)

    codes = {f"{method} {path}": await unauthenticated_call(method, *path.format(**vars(world)).split("/"))
             for method, path in ENDPOINTS}

    assert codes == {endpoint: 403 for endpoint in codes}
    assert store.session(world.a).get_run(world.run) == before
    assert [s.name for s in store.list_sessions()] == ["alpha", "beta"]
    assert store.session(world.a).get_approval(approval_id=world.approval).status == "pending"


# ---------------------------------------------------------------- sessions


async def test_create_session_and_list_it_with_cost_and_runs(api_call, world):
    created = await api_call("POST", "sessions", body={"name": "gamma", "quotas": {"max_cost_usd": 5}})
    listed = await api_call("GET", "sessions")

    assert created.code == 201
    assert created.body["name"] == "gamma" and created.body["status"] == "active"
    assert created.body["quotas"]["max_cost_usd"] == 5
    by_name = {s["name"]: s for s in listed.body["sessions"]}
    assert list(by_name) == ["alpha", "beta", "gamma"]
    assert by_name["alpha"]["cost_usd"] == pytest.approx(0.25)
    assert by_name["alpha"]["runs_by_status"] == {"waiting_approval": 1}
    assert by_name["gamma"]["runs_by_status"] == {}


MALFORMED_SESSION_BODIES = [
    ("{not json", "not valid JSON"),
    ('["a list"]', "JSON object"),
    ('{"name": 42}', "name: Input should be a valid string"),
    ('{"name": "x", "quotas": {"max_cost_usd": "lots"}}', "quotas.max_cost_usd"),
    ('{"name": "x", "colour": "red"}', "colour: unknown field"),
    ('{}', "name: Field required"),
    ('{"name": "a/b"}', "path separators"),
]


async def test_create_session_refuses_malformed_bodies(api_call, server_api):
    for raw, expected in MALFORMED_SESSION_BODIES:
        reply = await api_call("POST", "sessions", raw=raw)

        assert reply.code == 400, (raw, reply.body)
        assert expected in reply.message, (raw, reply.body)
        assert reply.body["reason"]
    assert (await api_call("GET", "sessions")).body["sessions"] == []


async def test_create_session_with_a_taken_name_is_a_conflict(api_call, world):
    reply = await api_call("POST", "sessions", body={"name": "alpha"})

    assert reply.code == 409
    assert "already exists" in reply.message


async def test_get_session_shows_its_runs_and_usage(api_call, world):
    reply = await api_call("GET", "sessions", world.a)

    assert reply.code == 200
    assert reply.body["session"]["name"] == "alpha"
    assert [r["id"] for r in reply.body["runs"]] == [world.run]
    assert reply.body["usage"]["cost_usd"] == pytest.approx(0.25)


async def test_session_by_malformed_or_unknown_id(api_call, world):
    for method in ("GET", "DELETE"):
        malformed = await api_call(method, "sessions", "not-a-session")
        unknown = await api_call(method, "sessions", UNKNOWN["session"])

        assert malformed.code == 400 and "not-a-session" in malformed.message
        assert unknown.code == 404 and UNKNOWN["session"] in unknown.message


async def test_delete_session_marks_it_deleted(api_call, store, world):
    refused = await api_call("DELETE", "sessions", world.a)  # it has an active run
    store.session(world.b).transition_run(world.run_b, "cancelled")
    deleted = await api_call("DELETE", "sessions", world.b)
    again = await api_call("GET", "sessions", world.b)

    assert refused.code == 409 and "active run" in refused.message
    assert deleted.code == 200 and deleted.body["status"] == "deleted"
    assert again.code == 404
    assert [s["name"] for s in (await api_call("GET", "sessions")).body["sessions"]] == ["alpha"]


# ---------------------------------------------------------------- workflows


async def test_status_shows_run_steps_approvals_and_dag(api_call, world):
    reply = await api_call("GET", "workflows", world.run, "status", params={"session_id": world.a})

    assert reply.code == 200
    assert reply.body["run"]["status"] == "waiting_approval"
    assert [s["status"] for s in reply.body["steps"]] == ["completed", "pending"]
    assert [a["id"] for a in reply.body["approvals"]] == [world.approval]
    key = {n["id"]: n.get("key", n["id"]) for n in reply.body["dag"]["nodes"]}
    nodes = {key[n["id"]]: n["status"] for n in reply.body["dag"]["nodes"]}
    # the run waits on step 2's approval: its node says so, as in the notebook's DAG
    assert nodes == {"planning": "completed", "step_1": "completed", "step_2": "waiting_approval", "end": "pending"}
    edges = {(key[e["source"]], key[e["target"]]) for e in reply.body["dag"]["edges"]}
    assert edges == {("planning", "step_1"), ("step_1", "step_2"), ("step_2", "end")}


def frontend_validator(definition: str):
    """A validator of one definition of the committed schema the front ends' types come from."""
    import jsonschema

    schema = json.loads((Path(__file__).resolve().parents[1] / "packages/core/schema/cmbagent.schema.json").read_text())
    return jsonschema.Draft202012Validator({"$ref": f"#/$defs/{definition}", "$defs": schema["$defs"]})


async def test_what_the_front_ends_read_matches_their_generated_types(api_call, server_api, world):
    sessions = await api_call("GET", "sessions")
    status = await api_call("GET", "workflows", world.run, "status", params={"session_id": world.a})
    # the event socket sends these as JSON, dates as strings
    snapshot = json.loads(json.dumps(server_api.snapshot(None, world.run), default=str))
    events = json.loads(json.dumps(server_api.events(0, world.a, None, 1000), default=str))

    for session in sessions.body["sessions"]:
        frontend_validator("SessionSummary").validate(session)
    frontend_validator("RunStatusReply").validate(status.body)
    frontend_validator("Snapshot").validate(snapshot)
    assert {e["type"] for e in events} >= {"session.created", "workflow.created", "approval.requested", "cost.update"}
    for event in events:
        frontend_validator("Event").validate(event)
    assert not frontend_validator("RunStatusReply").is_valid(status.body | {"dag": {"nodes": [{"id": "x"}]}})


RUN_ENDPOINTS = [("POST", "pause"), ("POST", "resume"), ("GET", "status"), ("POST", "branch")]


def run_request(method, action, session_id, body=None):
    """Session in the query for GET, in the body for POST (both are accepted)."""
    if method == "GET":
        return {"params": {"session_id": session_id}}
    return {"body": {"session_id": session_id, **({"from_step": 1} if action == "branch" else {}), **(body or {})}}


async def test_run_endpoints_refuse_other_sessions_runs(api_call, store, world):
    for method, action in RUN_ENDPOINTS:
        reply = await api_call(method, "workflows", world.run, action, **run_request(method, action, world.b))

        assert reply.code == 404, (action, reply.body)
        assert world.run in reply.message and world.b in reply.message
    assert store.session(world.a).get_run(world.run).pause_requested is False
    assert len(store.session(world.a).list_runs()) == 1
    assert not (store.home / "logs" / f"resume-{world.run}.log").exists()


async def test_run_endpoints_with_unknown_or_malformed_ids(api_call, world):
    for method, action in RUN_ENDPOINTS:
        await check_run_ids_refused(api_call, world, method, action)


async def check_run_ids_refused(api_call, world, method, action):
    unknown = await api_call(method, "workflows", UNKNOWN["run"], action, **run_request(method, action, world.a))
    malformed = await api_call(method, "workflows", "run_XYZ", action, **run_request(method, action, world.a))
    body = {"body": {"from_step": 1}} if action == "branch" else {}
    no_session = await api_call(method, "workflows", world.run, action, **body)
    bad_session = await api_call(method, "workflows", world.run, action, params={"session_id": "ses_nope"}, **body)

    assert unknown.code == 404 and UNKNOWN["run"] in unknown.message
    assert malformed.code == 400 and "run_XYZ" in malformed.message
    assert no_session.code == 400 and "session_id" in no_session.message
    assert bad_session.code == 400 and "ses_nope" in bad_session.message


MALFORMED_RUN_BODIES = [
    ("pause", "{oops", "not valid JSON"),
    ("pause", '{"session_id": 7}', "session_id"),
    ("pause", '{"reason": "lunch"}', "reason: unknown field"),
    ("resume", '"text"', "JSON object"),
    ("resume", '{"session_id": "ses_1"}', "malformed session id"),
    ("branch", '{"from_step": "two"}', "from_step: Input should be a valid integer"),
    ("branch", '{"from_step": 0}', "from_step"),
    ("branch", '{"from_step": 1, "hypotesis": "typo"}', "hypotesis: unknown field"),
]


async def test_run_endpoints_refuse_malformed_bodies(api_call, store, world):
    for action, raw, expected in MALFORMED_RUN_BODIES:
        reply = await api_call("POST", "workflows", world.run, action, raw=raw, params={"session_id": world.a})

        assert reply.code == 400, (action, raw, reply.body)
        assert expected in reply.message, (action, raw, reply.body)
    assert len(store.session(world.a).list_runs()) == 1
    assert store.session(world.a).get_run(world.run).pause_requested is False


async def test_pause_asks_the_run_to_pause(api_call, store, world):
    reply = await api_call("POST", "workflows", world.run, "pause", body={"session_id": world.a})
    again_done = await api_call("POST", "workflows", world.run_b, "pause", params={"session_id": world.b})

    assert reply.code == 200 and reply.body["pause_requested"] is True
    assert store.session(world.a).get_run(world.run).pause_requested is True
    assert again_done.code == 200
    store.session(world.b).transition_run(world.run_b, "cancelled")
    finished = await api_call("POST", "workflows", world.run_b, "pause", params={"session_id": world.b})
    assert finished.code == 409 and "cancelled" in finished.message


RESUME_SCRIPT = """
import sys
from cmbagent_jupyter.store import open_store
run_id, session_id = sys.argv[1], sys.argv[2]
open_store().session(session_id).transition_run(run_id, "executing", reason="resumed by test command", actor="resume")
"""


async def test_resume_starts_the_resume_command_which_resumes_the_run(api_call, store, server_api, world):
    sa = store.session(world.a)
    run, _ = executing_run(sa, "a run that was paused")
    sa.transition_run(run.id, "paused")
    server_api.launcher.command = [sys.executable, "-c", RESUME_SCRIPT, "{run_id}", "{session_id}"]

    reply = await api_call("POST", "workflows", run.id, "resume", body={"session_id": world.a})

    assert reply.code == 202, reply.body
    assert reply.body["status"] == "resuming" and reply.body["pid"] > 0
    wait_for(lambda: sa.get_run(run.id).status.value == "executing", 60, "the resume command to resume the run")
    assert sa.history(run.id)[-1].actor == "resume"


async def test_resume_refuses_runs_that_cannot_resume_or_have_no_room(api_call, store, server_api, world):
    server_api.launcher.command = [sys.executable, "-c", "raise SystemExit('must not be started')"]
    sa = store.session(world.a)
    done, _ = executing_run(sa, "finished")
    sa.transition_run(done.id, "cancelled")
    stuck, _ = executing_run(sa, "interrupted run")
    sa.transition_run(stuck.id, "interrupted")
    sa.set_quotas(max_concurrent_runs=1)  # the run waiting for approval holds the one slot

    not_resumable = await api_call("POST", "workflows", done.id, "resume", body={"session_id": world.a})
    no_room = await api_call("POST", "workflows", stuck.id, "resume", body={"session_id": world.a})

    assert not_resumable.code == 409 and "cancelled" in not_resumable.message
    assert no_room.code == 429 and "max_concurrent_runs" in no_room.message
    assert not (server_api.home / "logs" / f"resume-{stuck.id}.log").exists()


def test_default_resume_command_is_cmbagent_resume(server_api):
    argv = server_api.launcher.argv("run_0123456789abcdef", "ses_0123456789abcdef")

    assert argv[-2:] == ["resume", "run_0123456789abcdef"]
    assert "cmbagent" in " ".join(argv[:-2])


def cli_has_resume() -> bool:
    from cmbagent_jupyter.cli import app

    return any((c.name or c.callback.__name__) == "resume" for c in app.registered_commands)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@contextmanager
def process_group_stopped_after(pid: int):
    """A detached process (its own process group) a test started: gone when the test ends."""
    try:
        yield
    finally:
        if pid_alive(pid):
            os.killpg(pid, signal.SIGKILL)
        wait_for(lambda: not pid_alive(pid), 30, f"resume process {pid} to end")


@pytest.mark.skipif(not cli_has_resume(), reason="`cmbagent resume` is not written yet")
async def test_resume_with_the_real_cli_tells_the_run_to_resume(api_call, store, world):
    sa = store.session(world.a)
    run, _ = executing_run(sa, "paused run for the real resume")
    sa.transition_run(run.id, "paused")

    reply = await api_call("POST", "workflows", run.id, "resume", body={"session_id": world.a})

    assert reply.code == 202, reply.body
    with process_group_stopped_after(reply.body["pid"]):
        resumed = wait_for(lambda: sa.events(run_id=run.id, types=["workflow.resumed"]), 120,
                           "`cmbagent resume` to resume the run")
        assert resumed[0].payload["from"] == "paused"
        wait_for(lambda: not pid_alive(reply.body["pid"]), 120, "the resumed run to finish")


async def test_branch_creates_a_run_from_a_step(api_call, store, world):
    reply = await api_call("POST", "workflows", world.run, "branch", body={
        "session_id": world.a, "from_step": 2, "name": "try B", "hypothesis": "B is better",
        "instructions": "use method B"})

    assert reply.code == 201, reply.body
    child = reply.body["run"]
    assert child["parent_run_id"] == world.run and child["branch_from_step"] == 2
    assert reply.body["kept_steps"] == [1]
    steps = store.session(world.a).list_steps(child["id"])
    assert [s.status.value for s in steps] == ["completed", "pending"]
    assert "use method B" in steps[1].description


async def test_branch_from_a_step_the_run_lacks_is_refused(api_call, world):
    reply = await api_call("POST", "workflows", world.run, "branch", body={"session_id": world.a, "from_step": 9})

    assert reply.code == 400 and "no step 9" in reply.message


# ---------------------------------------------------------------- approvals


async def test_pending_approvals_for_all_sessions_and_for_one(api_call, store, world):
    sb = store.session(world.b)
    other = sb.create_approval(run_id=world.run_b, kind="after_planning")

    everyone = await api_call("GET", "approvals", "pending")
    alpha = await api_call("GET", "approvals", "pending", params={"session_id": world.a})
    unknown = await api_call("GET", "approvals", "pending", params={"session_id": UNKNOWN["session"]})
    malformed = await api_call("GET", "approvals", "pending", params={"session_id": "alpha"})

    assert everyone.code == 200
    assert {a["id"] for a in everyone.body["approvals"]} == {world.approval, other.id}
    assert [a["id"] for a in alpha.body["approvals"]] == [world.approval]
    assert alpha.body["approvals"][0]["request"] == {"question": "run step 2?"}
    assert unknown.code == 404
    assert malformed.code == 400 and "'alpha'" in malformed.message


async def test_approve_resolves_as_jupyterlab_and_only_once(api_call, store, world):
    reply = await api_call("POST", "approvals", world.approval, "approve",
                           body={"session_id": world.a, "feedback": "looks good"})
    again = await api_call("POST", "approvals", world.approval, "reject",
                           body={"session_id": world.a, "feedback": "changed my mind"})

    assert reply.code == 200, reply.body
    assert reply.body["status"] == "approved" and reply.body["resolved_by"] == "jupyterlab"
    assert reply.body["feedback"] == "looks good"
    assert again.code == 409 and "already resolved" in again.message
    assert (await api_call("GET", "approvals", "pending")).body["approvals"] == []


async def test_reject_needs_feedback_then_records_it(api_call, world):
    empty = await api_call("POST", "approvals", world.approval, "reject", body={"session_id": world.a})
    reply = await api_call("POST", "approvals", world.approval, "reject",
                           body={"session_id": world.a, "feedback": "use a smaller grid"})

    assert empty.code == 400 and "feedback" in empty.message
    assert reply.code == 200 and reply.body["status"] == "rejected"
    assert reply.body["feedback"] == "use a smaller grid"


async def test_decisions_refuse_other_sessions_unknown_ids_and_bad_bodies(api_call, store, world):
    for action in ("approve", "reject"):
        await check_decision_refusals(api_call, store, world, action)


async def check_decision_refusals(api_call, store, world, action):
    cross = await api_call("POST", "approvals", world.approval, action, body={"session_id": world.b, "feedback": "x"})
    unknown = await api_call("POST", "approvals", UNKNOWN["approval"], action,
                             body={"session_id": world.a, "feedback": "x"})
    malformed_id = await api_call("POST", "approvals", "apr_", action, body={"session_id": world.a})
    bad_json = await api_call("POST", "approvals", world.approval, action, raw="{", params={"session_id": world.a})
    bad_type = await api_call("POST", "approvals", world.approval, action,
                              body={"session_id": world.a, "feedback": ["a", "list"]})
    extra = await api_call("POST", "approvals", world.approval, action,
                           body={"session_id": world.a, "decision": "approve"})

    assert cross.code == 404 and world.b in cross.message
    assert unknown.code == 404
    assert malformed_id.code == 400 and "'apr_'" in malformed_id.message
    assert bad_json.code == 400 and "JSON" in bad_json.message
    assert bad_type.code == 400 and "feedback" in bad_type.message
    assert extra.code == 400 and "decision: unknown field" in extra.message
    pending = store.session(world.a).get_approval(approval_id=world.approval)
    assert pending.status == "pending"


async def test_resolve_answers_any_option_of_the_gate(api_call, store, world):
    sa = store.session(world.a)
    failed = sa.create_approval(run_id=world.run, kind="on_error", options=["retry", "modify", "skip", "abort"])

    not_an_option = await api_call("POST", "approvals", failed.id, "approve",
                                   body={"session_id": world.a})
    unknown_decision = await api_call("POST", "approvals", failed.id, "resolve",
                                      body={"session_id": world.a, "decision": "maybe"})
    cross = await api_call("POST", "approvals", failed.id, "resolve",
                           body={"session_id": world.b, "decision": "retry"})
    unknown = await api_call("POST", "approvals", UNKNOWN["approval"], "resolve",
                             body={"session_id": world.a, "decision": "retry"})
    retried = await api_call("POST", "approvals", failed.id, "resolve",
                             body={"session_id": world.a, "decision": "modify", "feedback": "use float64"})

    assert not_an_option.code == 400 and "not an option" in not_an_option.message
    assert unknown_decision.code == 400 and "decision" in unknown_decision.message
    assert cross.code == 404 and unknown.code == 404
    assert retried.code == 200, retried.body
    assert (retried.body["decision"], retried.body["feedback"], retried.body["resolved_by"]) == (
        "modify", "use float64", "jupyterlab")


# ---------------------------------------------------------------- costs and metrics


async def test_cost_summary_of_one_session(api_call, world):
    reply = await api_call("GET", "cost", "summary", params={"session_id": world.a})
    by_run = await api_call("GET", "cost", "summary", params={"session_id": world.a, "run_id": world.run,
                                                              "group_by": "run_id"})

    assert reply.code == 200
    assert reply.body["total_usd"] == pytest.approx(0.25)
    assert [(r["agent"], r["model"], r["prompt_tokens"]) for r in reply.body["rows"]] == [("engineer", "gpt-4o", 1000)]
    assert [r["run_id"] for r in by_run.body["rows"]] == [world.run]


async def test_cost_summary_refusals(api_call, world):
    missing = await api_call("GET", "cost", "summary")
    unknown = await api_call("GET", "cost", "summary", params={"session_id": UNKNOWN["session"]})
    cross = await api_call("GET", "cost", "summary", params={"session_id": world.b, "run_id": world.run})
    bad_group = await api_call("GET", "cost", "summary", params={"session_id": world.a, "group_by": "price"})
    malformed = await api_call("GET", "cost", "summary", params={"session_id": world.a, "run_id": "r1"})

    assert missing.code == 400 and "session_id" in missing.message
    assert unknown.code == 404
    assert cross.code == 404 and world.run in cross.message
    assert bad_group.code == 400 and "group_by" in bad_group.message
    assert malformed.code == 400 and "'r1'" in malformed.message


async def test_cost_by_session(api_call, world):
    reply = await api_call("GET", "cost", "by-session")

    assert reply.code == 200
    rows = {r["name"]: r["cost_usd"] for r in reply.body["rows"]}
    assert rows == {"alpha": pytest.approx(0.25), "beta": pytest.approx(1.5)}
    assert reply.body["total_usd"] == pytest.approx(1.75)


async def test_workflow_metrics_per_session(api_call, store, world):
    sb = store.session(world.b)
    sb.transition_run(world.run_b, "completed")

    every = await api_call("GET", "metrics", "workflows")
    beta = await api_call("GET", "metrics", "workflows", params={"session_id": world.b})
    unknown = await api_call("GET", "metrics", "workflows", params={"session_id": UNKNOWN["session"]})
    malformed = await api_call("GET", "metrics", "workflows", params={"session_id": "beta"})

    assert every.code == 200
    rows = {m["name"]: m for m in every.body["sessions"]}
    assert rows["alpha"]["runs_by_status"] == {"waiting_approval": 1}
    assert rows["alpha"]["active_runs"] == 1 and rows["alpha"]["mean_duration_s"] is None
    assert rows["beta"]["runs_by_status"] == {"completed": 1}
    assert rows["beta"]["mean_duration_s"] >= 0 and rows["beta"]["total_cost_usd"] == pytest.approx(1.5)
    assert [m["name"] for m in beta.body["sessions"]] == ["beta"]
    assert unknown.code == 404 and malformed.code == 400


# ---------------------------------------------------------------- agents


async def test_agents_lists_the_specs_and_reload_reads_them_again(api_call, server_api):
    listed = await api_call("GET", "agents")
    reloaded = await api_call("POST", "agents", "reload")
    bad = await api_call("POST", "agents", "reload", raw="{")
    extra = await api_call("POST", "agents", "reload", body={"force": True})

    assert listed.code == 200
    names = {a["name"] for a in listed.body["agents"]}
    assert {"planner", "engineer", "researcher"} <= names
    assert all(a["instructions"] for a in listed.body["agents"])
    assert reloaded.code == 200 and {a["name"] for a in reloaded.body["agents"]} == names
    assert bad.code == 400 and "JSON" in bad.message
    assert extra.code == 400 and "force: unknown field" in extra.message


# ---------------------------------------------------------------- one place maps errors


def test_store_errors_map_to_statuses():
    from cmbagent_jupyter.server.errors import api_error
    from cmbagent_jupyter.core import errors

    cases = {errors.NotFound: 404, errors.Invalid: 400, errors.Conflict: 409, errors.QuotaExceeded: 429,
             errors.Unauthorized: 403, errors.PayloadTooLarge: 413, errors.StoreUnavailable: 503,
             errors.StoreError: 500}
    for cls, status in cases.items():
        err = api_error(cls("what went wrong"))
        assert (err.status, err.message, err.reason) == (status, "what went wrong", cls.code)
    assert api_error(RuntimeError("bug")) is None
    from cmbagent_jupyter.core.home import HomeError

    unusable = api_error(HomeError(13, "CMBAGENT_HOME /x is read-only"))
    assert (unusable.status, unusable.reason) == (503, "home_unusable") and "read-only" in unusable.message


async def test_a_request_larger_than_the_limit_is_refused(api_call, server_api):
    reply = await api_call("POST", "sessions", raw=json.dumps({"name": "x" * (1024 * 1024 + 10)}))

    assert reply.code == 413 and "bytes" in reply.message
