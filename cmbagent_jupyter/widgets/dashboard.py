"""A dashboard of a session's runs, approvals and costs (ipywidgets + our widgets).

Made for `voila examples/dashboard.ipynb` as much as for a notebook: everything
is a widget, every button one of the user actions (`cmbagent_jupyter.actions`), and
it follows the session's events (coalesced) so other processes' runs and decisions
show up.
"""

from __future__ import annotations

import html
import logging
import queue
import threading
import time
from typing import Any

import ipywidgets

from cmbagent_jupyter import actions
from cmbagent_jupyter.actions import InProcess
from cmbagent_jupyter.core import RUNNING_RUN_STATES, Run
from cmbagent_jupyter.core import StoreError
from cmbagent_jupyter.store import StorePort, open_store
from cmbagent_jupyter.widgets.approval import ApprovalWidget
from cmbagent_jupyter.widgets.base import one_line
from cmbagent_jupyter.widgets.cost import CostWidget
from cmbagent_jupyter.widgets.run_view import RunView

log = logging.getLogger(__name__)

STATUS_COLORS = {"completed": "#43a047", "failed": "#e53935", "executing": "#1e88e5", "planning": "#00897b",
                 "waiting_approval": "#8e24aa", "paused": "#ffb300", "interrupted": "#ff7043", "cancelled": "#616161",
                 "draft": "#9e9e9e"}
ACTIVE = frozenset(s.value for s in RUNNING_RUN_STATES)
APPROVAL_MODES = ["none", "after_planning", "before_each_step", "on_error"]
_STOP = object()


def _badge(status: str) -> str:
    colour = STATUS_COLORS.get(status, "#9e9e9e")
    return (f'<span style="background:{colour};color:#fff;border-radius:10px;padding:1px 8px;font-size:11px">'
            f"{html.escape(status.replace('_', ' '))}</span>")


def runs_table(runs: list[Run], costs: dict[str, float]) -> str:
    if not runs:
        return "<p><i>No runs in this session yet: start one in the “New run” tab.</i></p>"
    rows = "".join(
        f'<tr data-run="{r.id}"><td><code>{r.id}</code></td><td>{_badge(r.status.value)}</td>'
        f"<td>{html.escape(r.task[:90])}</td><td>{html.escape(r.model or '')}</td>"
        f"<td>${costs.get(r.id, 0.0):.4f}</td><td>{r.created_at:%Y-%m-%d %H:%M}</td></tr>"
        for r in sorted(runs, key=lambda r: r.created_at, reverse=True))
    return ('<table class="cmbagent-runs" style="border-collapse:collapse;width:100%">'
            "<tr><th align=left>run</th><th align=left>status</th><th align=left>task</th>"
            f"<th align=left>model</th><th align=left>cost</th><th align=left>created</th></tr>{rows}</table>")


class Dashboard(ipywidgets.VBox):
    """Sessions, runs (each opens as a live `RunView`), pending approvals, costs and a
    form to start a run, for one `CMBAGENT_HOME`."""

    def __init__(self, session: str | None = None, home: Any = None, *, store: StorePort | None = None,
                 live: bool = True, coalesce_s: float = 0.3) -> None:
        self._owns_store = store is None
        self.store = store if store is not None else open_store(home)
        self.home = self.store.home
        self.live = live
        self.coalesce_s = coalesce_s
        self.run_view: RunView | None = None
        self.approval_cards: dict[str, ApprovalWidget] = {}
        self._subscription = None
        self._queue: queue.Queue[Any] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._updating_picker = False
        self._refresh_lock = threading.RLock()

        self.session_picker = ipywidgets.Dropdown(description="Session")
        self.refresh_button = ipywidgets.Button(description="Refresh", icon="refresh")
        self.summary = ipywidgets.HTML()
        self.message = ipywidgets.HTML()
        self.runs_html = ipywidgets.HTML()
        self.run_picker = ipywidgets.Dropdown(description="Show run", layout=ipywidgets.Layout(width="70%"))
        self.run_area = ipywidgets.VBox()
        self.approvals_box = ipywidgets.VBox()
        self.cost = CostWidget()
        self.task_input = ipywidgets.Textarea(
            placeholder="Describe the task, e.g. Compute the CMB temperature power spectrum of a toy map",
            layout=ipywidgets.Layout(width="95%", height="5em"))
        self.model_input = ipywidgets.Text(description="Model", placeholder="default (scripted offline model)")
        self.scenario_input = ipywidgets.Text(description="Scenario", value="cmb_power_spectrum")
        self.approval_input = ipywidgets.Dropdown(description="Approval", options=APPROVAL_MODES, value="none")
        self.start_button = ipywidgets.Button(description="Start run", button_style="success", icon="play")

        runs_panel = ipywidgets.VBox([self.runs_html, self.run_picker, self.run_area])
        form = ipywidgets.VBox([self.task_input, self.model_input, self.scenario_input, self.approval_input,
                                self.start_button])
        self.tabs = ipywidgets.Tab(children=[runs_panel, self.approvals_box, self.cost, form],
                                   titles=("Runs", "Approvals", "Costs", "New run"))
        header = ipywidgets.HBox([self.session_picker, self.refresh_button, self.summary])
        super().__init__(children=[header, self.message, self.tabs])
        self.add_class("cmbagent-dashboard")

        self._load_sessions(session)
        self.session_picker.observe(self._session_changed, names="value")
        self.run_picker.observe(self._run_changed, names="value")
        self.refresh_button.on_click(lambda _b: self._guard(self.refresh))
        self.start_button.on_click(lambda _b: self._guard(self.start_run))
        self.refresh()
        if live:
            self._thread = threading.Thread(target=self._loop, name="cmbagent-dashboard", daemon=True)
            self._thread.start()
            self._subscribe()

    # -- state -------------------------------------------------------------------

    @property
    def session_id(self) -> str | None:
        return self.session_picker.value

    def _load_sessions(self, wanted: str | None = None) -> None:
        sessions = self.store.list_sessions()
        if not sessions:
            sessions = [self.store.create_session("default")]
        self.session_picker.options = [(s.name, s.id) for s in sessions]
        chosen = None
        if wanted:
            chosen = next((s.id for s in sessions if wanted in (s.id, s.name)), None)
            if chosen is None:
                chosen = self.store.resolve_session(wanted).id
        self.session_picker.value = chosen or self.session_picker.value or sessions[0].id

    def refresh(self) -> None:
        """Reload runs, approvals and costs of the selected session from the store."""
        with self._refresh_lock:
            self._refresh()

    def _refresh(self) -> None:
        sid = self.session_id
        if sid is None:
            return
        ss = self.store.session(sid)
        runs = ss.list_runs()
        records = ss.cost_records()
        costs: dict[str, float] = {}
        for r in records:
            if r.run_id:
                costs[r.run_id] = costs.get(r.run_id, 0.0) + r.cost_usd
        pending = ss.list_approvals(pending_only=True)
        active = sum(1 for r in runs if r.status.value in ACTIVE)
        self.summary.value = (f"<b>{len(runs)}</b> runs · <b>{active}</b> active · "
                              f"<b>{len(pending)}</b> approvals waiting · cost <b>${sum(costs.values()):.4f}</b>")
        self.runs_html.value = runs_table(runs, costs)
        options = [(f"{r.id}  [{r.status.value}]  {r.task[:50]}", r.id)
                   for r in sorted(runs, key=lambda r: r.created_at, reverse=True)]
        options = [("(choose a run)", None), *options]
        if options != list(self.run_picker.options):
            # new options reset the value: keep the shown run without reopening it
            current = self.run_picker.value
            self._updating_picker = True
            try:
                self.run_picker.options = options
                self.run_picker.value = current if current in {v for _, v in options} else None
            finally:
                self._updating_picker = False
        self._refresh_approvals(sorted({a.run_id for a in pending}))
        labels = {r.id: r.id for r in runs}
        self.cost.show(records, step_label=lambda r: labels.get(r.run_id or "", "session"))
        self.tabs.set_title(1, f"Approvals ({len(pending)})")

    def _refresh_approvals(self, run_ids: list[str]) -> None:
        for run_id in list(self.approval_cards):
            if run_id not in run_ids:
                self.approval_cards.pop(run_id).close()
        for run_id in run_ids:
            card = self.approval_cards.get(run_id)
            if card is None:
                self.approval_cards[run_id] = ApprovalWidget(run_id, session_id=self.session_id, store=self.store,
                                                             live=False)
            else:
                card.feed.refresh({"approvals", "steps", "run"})
                card.update_from_feed(card.feed, [], frozenset({"approvals"}))
        if run_ids:
            self.approvals_box.children = [
                w for run_id in run_ids
                for w in (ipywidgets.HTML(f"<b>Run <code>{run_id}</code></b>"), self.approval_cards[run_id])]
        else:
            self.approvals_box.children = [ipywidgets.HTML("<i>No approvals waiting.</i>")]

    # -- actions -----------------------------------------------------------------

    def show_run(self, run_id: str | None) -> RunView | None:
        if self.run_view is not None:
            self.run_view.close()
            self.run_view = None
        if run_id:
            self.run_view = RunView(run_id, self.session_id, store=self.store, live=self.live)
            self.run_area.children = [self.run_view]
        else:
            self.run_area.children = []
        return self.run_view

    def start_run(self) -> Any:
        """Start the task typed in, in the chosen session; it executes in this kernel."""
        task = self.task_input.value.strip()
        if not task:
            raise ValueError("write a task first")
        settings: dict[str, Any] = {}
        if self.approval_input.value != "none":
            settings["approval_mode"] = self.approval_input.value
        started = actions.start_run(self.store, self.session_id, task, executor=InProcess(), actor="notebook",
                                    model=self.model_input.value.strip() or None,
                                    scenario=self.scenario_input.value.strip() or None, **settings)
        self.message.value = f"Started run <code>{started.run.id}</code>."
        self.refresh()
        self.run_picker.value = started.run.id
        self.tabs.selected_index = 0
        return started

    def _guard(self, action: Any) -> None:
        try:
            self.message.value = ""
            action()
        except Exception as exc:  # noqa: BLE001 - shown in the dashboard
            self.message.value = f'<span style="color:#b71c1c">error: {html.escape(one_line(exc))}</span>'

    def _session_changed(self, _change: dict[str, Any]) -> None:
        self.show_run(None)
        self._guard(self.refresh)
        if self.live:
            self._subscribe()

    def _run_changed(self, change: dict[str, Any]) -> None:
        if self._updating_picker:
            return
        if change["new"] != (self.run_view.run_id if self.run_view else None):
            self._guard(lambda: self.show_run(change["new"]))

    # -- live updates ------------------------------------------------------------------

    def _subscribe(self) -> None:
        if self._subscription is not None:
            self._subscription.close()
            self._subscription = None
        if self.session_id:
            types = ["workflow.created", "workflow.state_changed", "workflow.completed", "workflow.failed",
                     "workflow.paused", "workflow.started", "approval.requested", "approval.received", "cost.update",
                     "dag.created"]
            self._subscription = self.store.session(self.session_id).subscribe(types=types, callback=self._queue.put)

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            deadline = time.monotonic() + self.coalesce_s
            while (left := deadline - time.monotonic()) > 0:
                try:
                    if self._queue.get(timeout=left) is _STOP:
                        return
                except queue.Empty:
                    break
            try:
                self.refresh()
            except StoreError as exc:
                log.warning("dashboard refresh failed: %s", exc)

    def close(self) -> None:
        if self._subscription is not None:
            self._subscription.close()
        self._queue.put(_STOP)
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.show_run(None)
        for card in self.approval_cards.values():
            card.close()
        self.cost.close()
        if self._owns_store:
            self.store.close()
        super().close()
