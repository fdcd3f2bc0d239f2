"""The example notebooks execute headlessly (nbclient) in a fresh CMBAGENT_HOME."""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbclient import NotebookClient

from cmbagent_jupyter.store import open_store

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


def execute(name: str, cwd: Path) -> list:
    notebook = nbformat.read(EXAMPLES / name, as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}).execute()
    return [cell for cell in notebook.cells if cell.cell_type == "code"]


def outputs_of(cell, key: str) -> list:
    return [o for o in cell.outputs if key in o.get("data", {}) or o.get("name") == key]


def text_of(cell) -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")


def test_quickstart_executes_end_to_end_on_the_scripted_model(cmb_home, tmp_path):
    cells = execute("quickstart.ipynb", tmp_path)

    assert not [o for c in cells for o in c.outputs if o.output_type == "error"]
    session, run_cell, wait_cell, figure, report, cost_text, cost_widget, gated, gate_ready = cells
    assert "using the scripted offline model (scenario cmb_power_spectrum)" in text_of(run_cell)
    assert outputs_of(run_cell, WIDGET_MIME), "the run shows as a widget"
    assert text_of(wait_cell).startswith("completed - 6 steps")
    assert "steps: 6/6 completed" in text_of(wait_cell)
    assert outputs_of(figure, "image/png")
    assert "Toy CMB temperature power spectrum" in outputs_of(report, "text/markdown")[0]["data"]["text/markdown"]
    assert "planner" in text_of(cost_text) and outputs_of(cost_widget, WIDGET_MIME)
    assert outputs_of(gated, WIDGET_MIME)
    assert "after_planning apr_" in text_of(gate_ready) and "is waiting for you: Approve the plan" in text_of(gate_ready)

    with open_store(cmb_home) as store:
        [session_row] = store.list_sessions()
        ss = store.session(session_row.id)
        first, second = sorted(ss.list_runs(), key=lambda r: r.created_at)
        assert first.status.value == "completed"
        # the gated run waits for a person: headless, nobody clicks Approve
        assert second.status.value == "waiting_approval"
        [gate] = ss.list_approvals(run_id=second.id)
        assert gate.kind == "after_planning" and gate.status == "pending"


def test_dashboard_notebook_executes_and_shows_a_widget(cmb_home, tmp_path):
    [cell] = execute("dashboard.ipynb", tmp_path)
    assert not [o for o in cell.outputs if o.output_type == "error"]
    assert outputs_of(cell, WIDGET_MIME)
