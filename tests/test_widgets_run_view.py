"""RunView: a run handle shows as header, approval card, DAG, events and costs, all live."""

from __future__ import annotations

from conftest import completed_scripted_run, planned_run, wait_for

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
