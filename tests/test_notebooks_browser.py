"""The notebooks in a real browser: the quickstart in JupyterLab, the dashboard under Voila."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
LONG = 180_000  # ms: a cold kernel, the engine's imports and a scripted run on 2 cores


def upload(server, name: str, notebook: Path) -> None:
    """Put a notebook into the server's root through the contents API."""
    body = json.dumps({"type": "notebook", "format": "json", "content": json.loads(notebook.read_text())}).encode()
    request = urllib.request.Request(f"{server.url}api/contents/{name}", data=body, method="PUT",
                                     headers={"Authorization": f"token {server.token}",
                                              "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status in (200, 201)


def lab_settings(server) -> None:
    """Every cell's output in the page (no notebook windowing), and no news prompt over it."""
    for plugin, raw in [("@jupyterlab/notebook-extension:tracker", {"windowingMode": "none"}),
                        ("@jupyterlab/apputils-extension:notification", {"fetchNews": "false"})]:
        body = json.dumps({"raw": json.dumps(raw)}).encode()
        request = urllib.request.Request(f"{server.url}lab/api/settings/{plugin}", data=body, method="PUT",
                                         headers={"Authorization": f"token {server.token}",
                                                  "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.status in (200, 204)


@pytest.mark.browser
def test_quickstart_runs_live_in_jupyterlab_and_the_approval_card_resumes_the_run(
    jupyter_lab_server, chromium_browser, artifacts_dir
):
    from playwright.sync_api import expect

    server = jupyter_lab_server
    upload(server, "quickstart.ipynb", EXAMPLES / "quickstart.ipynb")
    lab_settings(server)
    page = chromium_browser.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(f"{server.url}lab/tree/quickstart.ipynb?token={server.token}")
    page.locator(".jp-Notebook .jp-Cell").first.wait_for(timeout=LONG)
    page.wait_for_function(
        "() => window.jupyterapp && window.jupyterapp.shell.currentWidget"
        " && window.jupyterapp.shell.currentWidget.sessionContext"
        " && window.jupyterapp.shell.currentWidget.sessionContext.session"
        " && window.jupyterapp.shell.currentWidget.sessionContext.session.kernel",
        timeout=LONG)
    page.evaluate("""async () => {
        const panel = window.jupyterapp.shell.currentWidget;
        await panel.sessionContext.ready;
        await window.jupyterapp.commands.execute('notebook:run-all-cells');
    }""")

    # The first run: its DAG (plan, six steps, result) ends with every node completed.
    first = page.locator(".cmbagent-run-view").first
    first.locator(".cmbagent-dag-node").first.wait_for(timeout=LONG)
    expect(first.locator('.cmbagent-dag-node[data-status="completed"]')).to_have_count(8, timeout=LONG)
    expect(first.locator(".cmbagent-run-header")).to_have_attribute("data-status", "completed")

    # A click on the figure step shows its PNG and code in the node detail.
    first.locator(".cmbagent-dag-node").nth(5).click()
    detail = first.locator(".cmbagent-dag-detail")
    expect(detail.locator("img.cmbagent-dag-figure")).to_be_visible(timeout=30_000)
    expect(detail.locator(".cmbagent-dag-code")).to_contain_text("savefig")
    assert page.evaluate(
        "() => document.querySelector('.cmbagent-dag-detail img.cmbagent-dag-figure').naturalWidth") > 100
    detail.locator("img.cmbagent-dag-figure").scroll_into_view_if_needed()
    page.screenshot(path=str(artifacts_dir / "quickstart_run_view.png"))

    # The event log streamed the run; the cost tab charts tokens by agent (the scripted model is free).
    expect(first.locator(".cmbagent-event-log tr.cmbagent-event[data-type='workflow.completed']")).to_have_count(1)
    first.locator(".lm-TabBar-tab", has_text="Cost").click()
    expect(first.locator(".cmbagent-cost-bar")).to_have_count(5)
    expect(first.locator(".cmbagent-cost-head")).to_contain_text("model calls")
    first.locator(".cmbagent-cost").screenshot(path=str(artifacts_dir / "quickstart_cost.png"))

    # The gated run waits on its approval card; Approve lets it continue to the end.
    gated = page.locator(".cmbagent-run-view").nth(1)
    card = gated.locator(".cmbagent-approval-card")
    card.wait_for(timeout=LONG)
    expect(gated.locator(".cmbagent-run-header")).to_have_attribute("data-status", "waiting_approval")
    expect(card.locator(".cmbagent-approval-plan li")).to_have_count(6)
    card.scroll_into_view_if_needed()
    page.screenshot(path=str(artifacts_dir / "quickstart_approval_card.png"))
    card.locator("button.cmbagent-approval-approve").click()
    expect(gated.locator(".cmbagent-approval-global-notices")).to_contain_text("approved", timeout=30_000)
    expect(gated.locator(".cmbagent-run-header")).to_have_attribute("data-status", "completed", timeout=LONG)
    expect(gated.locator('.cmbagent-dag-node[data-status="completed"]')).to_have_count(8)
    gated.locator(".cmbagent-dag-viewport").scroll_into_view_if_needed()
    page.screenshot(path=str(artifacts_dir / "quickstart_after_approval.png"))
    assert not [e for e in errors if "cmbagent" in e or "anywidget" in e], errors
