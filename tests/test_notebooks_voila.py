"""The dashboard notebook under Voila in Chromium: widgets render and their buttons work."""

from __future__ import annotations

import pytest
from fixtures.store import planned_run

LONG = 180_000  # ms: a cold Voila kernel on 2 cores


@pytest.mark.browser
def test_dashboard_under_voila_renders_runs_and_its_approve_button_works(
    voila_dashboard, store, chromium_browser, artifacts_dir
):
    from playwright.sync_api import expect

    ss, run, steps = planned_run(store, 3, session="lab", task="Toy CMB analysis for the dashboard")
    ss.transition_step(steps[0].id, "running")
    ss.transition_step(steps[0].id, "completed", outputs={"summary": "theory spectrum"})
    gate = ss.create_approval(run_id=run.id, kind="before_each_step", step_id=steps[1].id,
                   request={"summary": "run step 2?"})

    page = chromium_browser.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(f"{voila_dashboard.url}?token={voila_dashboard.token}")
    dashboard = page.locator(".cmbagent-dashboard")
    dashboard.wait_for(timeout=LONG)
    expect(dashboard.locator(f'tr[data-run="{run.id}"]')).to_contain_text("waiting approval", timeout=60_000)

    # Choosing the run opens its live view, DAG included.
    picker = dashboard.locator(".widget-dropdown", has_text="Show run").locator("select")
    picker.select_option(label=next(o for o in picker.locator("option").all_inner_texts() if run.id in o))
    view = dashboard.locator(".cmbagent-run-view")
    expect(view.locator(".cmbagent-dag-node")).to_have_count(5, timeout=60_000)
    expect(view.locator('.cmbagent-dag-node[data-status="completed"]')).to_have_count(2)
    page.screenshot(path=str(artifacts_dir / "dashboard_voila_runs.png"), full_page=True)

    # The approval tab's Approve button resolves the approval in the store.
    dashboard.locator(".lm-TabBar-tab", has_text="Approvals (1)").click()
    card = dashboard.locator(f'.cmbagent-approval-card[data-id="{gate.id}"]:visible')
    card.wait_for(timeout=30_000)
    page.screenshot(path=str(artifacts_dir / "dashboard_voila_approvals.png"), full_page=True)
    card.locator("button.cmbagent-approval-approve").click()
    expect(dashboard.locator(".lm-TabBar-tab", has_text="Approvals (0)")).to_be_visible(timeout=30_000)
    resolved = ss.get_approval(approval_id=gate.id)
    assert (resolved.status, resolved.resolved_by) == ("approved", "notebook")
    assert not [e for e in errors if "cmbagent" in e or "anywidget" in e], errors
