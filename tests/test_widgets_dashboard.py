"""Dashboard: a session's runs, approvals and costs, live, with buttons that write to the store."""

from __future__ import annotations

from fixtures.store import planned_run
from fixtures.waiting import wait_for

from cmbagent_jupyter.widgets import Dashboard


def test_the_dashboard_lists_runs_approvals_and_costs(store):
    ss, run, steps = planned_run(store, 2, session="lab")
    ss.add_costs([{"run_id": run.id, "step_id": steps[0].id, "agent": "engineer", "model": "m", "cost_usd": 0.125}])
    gate = ss.create_approval(run_id=run.id, kind="after_planning", request={"summary": "two steps"})
    dash = Dashboard("lab", store=store, live=False)
    try:
        assert dash.session_picker.value == run.session_id
        assert f'data-run="{run.id}"' in dash.runs_html.value and "waiting approval" in dash.runs_html.value
        assert "<b>1</b> approvals waiting" in dash.summary.value and "$0.1250" in dash.summary.value
        card = dash.approval_cards[run.id]
        assert [a["id"] for a in card.pending] == [gate.id]
        assert dash.tabs.get_title(1) == "Approvals (1)"
        assert dash.cost.total_usd == 0.125 and dash.cost.by_step[0]["label"] == run.id
    finally:
        dash.close()


def test_choosing_a_run_opens_its_live_view(store):
    ss, run, _ = planned_run(store, 1, session="lab")
    dash = Dashboard("lab", store=store, live=False)
    try:
        dash.run_picker.value = run.id
        assert dash.run_view is not None and dash.run_view.run_id == run.id
        assert dash.run_area.children == (dash.run_view,)
        dash.refresh()
        assert dash.run_view.run_id == run.id, "a refresh keeps the open run"
        dash.run_picker.value = None
        assert dash.run_view is None and dash.run_area.children == ()
    finally:
        dash.close()


def test_new_runs_and_decisions_from_elsewhere_show_up(store):
    ss, run, _ = planned_run(store, 1, session="lab")
    dash = Dashboard("lab", store=store, coalesce_s=0.05)
    try:
        other = ss.create_run("a run started from the CLI")
        wait_for(lambda: other.id in dash.runs_html.value, what="the new run in the table")
        gate = ss.create_approval(run_id=run.id, kind="after_planning")
        wait_for(lambda: run.id in dash.approval_cards, what="the approval card")
        ss.resolve_approval(approval_id=gate.id, decision="approve", actor="cli")
        # the dashboard refreshes on its own thread: the card leaves its dict before the box is redrawn
        wait_for(lambda: run.id not in dash.approval_cards
                 and "No approvals waiting" in dash.approvals_box.children[0].value,
                 what="the card to go and the box to say no approvals are waiting")
    finally:
        dash.close()


def test_starting_a_run_without_a_task_shows_an_error(store):
    planned_run(store, 1, session="lab")
    dash = Dashboard("lab", store=store, live=False)
    try:
        dash.start_button.click()
        assert "error: write a task first" in dash.message.value
    finally:
        dash.close()
