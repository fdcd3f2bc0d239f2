"""RunView: a run handle shows as header, approval card, DAG, events and costs, all live."""

from __future__ import annotations

import os

from fixtures.store import completed_scripted_run, planned_run
from fixtures.waiting import wait_for

from cmbagent_jupyter.widgets import RunView, display_run

WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


def test_a_run_view_combines_the_parts_on_one_feed(store, wire):
    ss, run, steps = planned_run(store, 2)
    view = RunView(run.id, store=store)
    wire(view)
    assert view.children[:3] == (view.header, view.approvals, view.dag)
    assert view.tabs.children == (view.events, view.cost)
    assert {view.header.feed, view.dag.feed, view.approvals.feed, view.cost.feed, view.events.feed} == {view.feed}
    assert len(store.client._subs) == 1, "all parts share one store subscription"
    assert view.header.run["status"] == "executing" and view.header.run["steps_total"] == 2
    assert view.header.controls == ["pause", "cancel"]
    ss.transition_step(steps[0].id, "running")
    ss.transition_step(steps[0].id, "completed", outputs={"summary": "ok"})
    wait_for(lambda: view.header.run["steps_done"] == 1, what="the header to count the completed step")


def test_pause_from_the_header_is_a_store_write(store, wire):
    ss, run, _ = planned_run(store, 1)
    ss.heartbeat(run.id, owner_pid=os.getpid())  # a live process executes it: it pauses at its next step boundary
    view = RunView(run.id, store=store, live=False)
    w = wire(view.header)
    w.click({"type": "control", "action": "pause"})
    assert ss.get_run(run.id).pause_requested is True
    assert w.last("notice")["text"] == f"pause requested for run {run.id}"
    w.click({"type": "control", "action": "resume"})
    assert w.last("notice") == {"type": "notice", "level": "error",
                                "text": f"cannot resume run {run.id}: it is executing"}
    view.close()


def test_closing_the_view_stops_its_feed(store):
    _, run, _ = planned_run(store, 1)
    view = RunView(run.id, store=store)
    assert store.client._subs
    view.close()
    assert view.feed.closed and not store.client._subs


def test_a_scripted_run_shows_completed_with_its_figure_and_report(api_home, wire):
    handle = completed_scripted_run(api_home)
    view = display_run(handle)
    w = wire(view.dag)
    assert display_run(handle) is view, "a handle shows the same view each time"
    wait_for(lambda: {n["status"] for n in view.dag.graph["nodes"]} == {"completed"}, what="every node completed")
    assert len(view.dag.graph["nodes"]) == 8  # planning, six steps, result
    assert view.header.run["status"] == "completed" and view.header.controls == []
    assert view.cost.calls > 0 and view.cost.total_tokens > 0

    steps = {s.key: s for s in view.feed.steps}
    w.click({"type": "node_click", "id": steps["step_5"].id})
    detail = w.last("detail")["detail"]
    [figure] = detail["figures"]
    assert figure["name"] == "cmb_power_spectrum.png" and figure["data_url"].startswith("data:image/png;base64,iVBOR")
    assert detail["code"][0]["name"] == "step_5.py" and "savefig" in detail["code"][0]["text"]
    w.click({"type": "node_click", "id": steps["step_6"].id})
    assert "<h1>Toy CMB temperature power spectrum</h1>" in w.last("detail")["detail"]["output_html"]


def test_a_run_handle_displays_as_its_run_view(api_home):
    handle = completed_scripted_run(api_home)
    bundle = handle._repr_mimebundle_()
    view = handle._run_view
    try:
        assert bundle[WIDGET_MIME]["model_id"] == view.model_id
        assert bundle["text/plain"].startswith(f"<cmbagent run {handle.id} completed")
    finally:
        view.close()


FAILING = "```python\nprint('reading the map')\nopen('data/map.fits')\n```\n"


def failing_step_scenario(path):
    """A one-step control run whose engineer writes code that fails (the executor just runs it)."""
    import yaml

    path.write_text(yaml.safe_dump({
        "name": "failing-step", "price": {"input_per_mtok": 0, "output_per_mtok": 0},
        "turns": [{"agent": "engineer", "step": "sim", "content": FAILING}],
        "defaults": {"executor": [{"tool_calls": [{"name": "run_python", "arguments": {"filename": "{code_file}"}}]},
                                  {"content": "Ran {code_file}."}]}}))
    plan = {"sub_tasks": [{"key": "sim", "sub_task": "Simulate a CMB map", "sub_task_agent": "engineer",
                           "depends_on": []}]}
    return path, plan


def test_feedback_on_a_failed_step_reaches_the_engineer_and_skip_on_the_card_ends_the_run(api_home, tmp_path, wire):
    from pathlib import Path

    from cmbagent_jupyter import api

    scenario, plan = failing_step_scenario(tmp_path / "failing.yaml")
    handle = api.open_session("retry", home=api_home).run(
        "simulate", mode="control", plan=plan, scenario=str(scenario), max_n_attempts=1,
        approval_mode="on_error", quiet=True)
    view = RunView(handle.id, store=handle.store)
    dag, card = wire(view.dag), wire(view.approvals)
    wait_for(lambda: view.approvals.pending, deadline_s=60, what="the on_error approval")
    [first] = view.approvals.pending
    assert first["kind"] == "on_error" and first["options"] == ["retry", "modify", "skip", "abort"]

    view.dag.select("sim")
    assert dag.last("detail")["detail"]["can_retry"] is True
    dag.click({"type": "retry", "step_id": view.feed.steps[0].id, "feedback": "simulate the map instead of reading it"})
    assert dag.last("notice")["text"] == "step 1 will be retried with your feedback"

    # the engineer is asked again with the feedback; the scripted code fails again: a second gate
    wait_for(lambda: [a for a in view.approvals.pending if a["id"] != first["id"]], deadline_s=60,
             what="the second on_error approval")
    chat = Path(handle.status().path) / "control" / "chats" / "engineer.jsonl"
    assert "simulate the map instead of reading it" in chat.read_text()
    [second] = view.approvals.pending
    card.click({"type": "resolve", "approval_id": second["id"], "decision": "skip"})
    assert handle.wait(60).status.value == "completed"
    wait_for(lambda: view.header.run["status"] == "completed", what="the header to show the completed run")
    view.close()


def test_resume_from_the_header_continues_a_failed_run_in_this_kernel(api_home, tmp_path, wire):
    from cmbagent_jupyter import api

    scenario, plan = failing_step_scenario(tmp_path / "failing.yaml")
    handle = api.open_session("resume", home=api_home).run(
        "simulate", mode="control", plan=plan, scenario=str(scenario), max_n_attempts=1,
        approval_mode="on_error", quiet=True)
    view = RunView(handle.id, store=handle.store)
    header, card = wire(view.header), wire(view.approvals)
    wait_for(lambda: view.approvals.pending, deadline_s=60, what="the on_error approval")
    card.click({"type": "resolve", "approval_id": view.approvals.pending[0]["id"], "decision": "abort"})
    assert handle.wait(60).status.value == "failed"
    wait_for(lambda: view.header.controls == ["resume"], what="Resume to be offered for the failed run")

    header.click({"type": "control", "action": "resume"})

    assert header.last("notice")["text"] == f"resume requested for run {handle.id}"
    wait_for(lambda: view.approvals.pending, deadline_s=60, what="the resumed run to fail again and ask")
    card.click({"type": "resolve", "approval_id": view.approvals.pending[0]["id"], "decision": "skip"})
    wait_for(lambda: view.header.run["status"] == "completed", deadline_s=60, what="the resumed run to complete")
    view.close()
