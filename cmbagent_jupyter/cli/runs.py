"""Run commands: run, status, pause, resume, cancel, cost.

`cmbagent run` and `cmbagent resume` execute the run in this process (on the engine's
thread) and follow it live; SIGINT/SIGTERM write an emergency checkpoint and leave the
run `interrupted`, to be continued by `cmbagent resume RUN_ID` in any process.
`pause` and `cancel` act on a run wherever it executes, through the store.
"""

from __future__ import annotations

import queue
import signal
import threading
from datetime import datetime
from pathlib import Path
from typing import Any, Optional

import typer
from rich.live import Live
from rich.table import Table

from cmbagent_jupyter import actions
from cmbagent_jupyter.actions import Execution, InProcess
from cmbagent_jupyter.cli.common import (
    CHOOSE_SESSION,
    JSON_OPTION,
    console,
    err_console,
    fail_cleanly,
    open_store,
    print_json,
)
from cmbagent_jupyter.core import CostRow, RunStatus
from cmbagent_jupyter.engine.liveness import liveness

STATUS_STYLE = {"completed": "green", "running": "yellow", "failed": "red", "pending": "dim", "cancelled": "red",
                "paused": "cyan", "interrupted": "magenta", "executing": "yellow", "planning": "yellow",
                "stalled": "bold magenta", "orphaned": "bold magenta"}
ACTOR = "cli"
EXIT_CODES = {RunStatus.completed: 0, RunStatus.paused: 0, RunStatus.failed: 1, RunStatus.cancelled: 1,
              RunStatus.interrupted: 3}


def _styled(status: str) -> str:
    style = STATUS_STYLE.get(status)
    return f"[{style}]{status}[/]" if style else status


def _session(store: Any, ref: str | None):
    """A session by id or name, created when a new name is given; none given: the default one."""
    return actions.session_for(store, ref, create=True, choose=CHOOSE_SESSION)


# ---------------------------------------------------------------- live display


class RunMonitor:
    """Follows a run's events (pushed by the store) and shows them: plan, DAG, steps, files."""

    def __init__(self, ss: Any, run_id: str, *, live: bool):
        self.ss = ss
        self.run_id = run_id
        self.live = live
        self.events: queue.Queue = queue.Queue()
        self.steps: dict[str, dict[str, Any]] = {}
        self.plan_shown = False
        self.shown_seq = 0  # the run's events are numbered; each is shown once
        self.sub = ss.subscribe(run_id=run_id, since_gseq=0, callback=self.events.put)

    def close(self) -> None:
        self.sub.close()

    def follow(self, done: threading.Event) -> None:
        """Show events until the run has finished and every event it made has been shown
        (the last ones are read from the store: its push may still be on the way)."""
        if self.live:
            with Live(self._table(), console=console, refresh_per_second=4, transient=True) as live:
                while not done.is_set():
                    self._show(self._drain(0.25), live)
                    live.update(self._table())
                self._show(self._rest(), live)
                live.update(self._table())
        else:
            while not done.is_set():
                self._show(self._drain(0.25), None)
            self._show(self._rest(), None)

    def _show(self, events: list[dict], live: Live | None) -> None:
        for ev in events:
            if ev.get("seq") is not None and ev["seq"] <= self.shown_seq:
                continue
            self.shown_seq = max(self.shown_seq, int(ev.get("seq") or 0))
            self._handle(ev, live)

    def _rest(self) -> list[dict]:
        """What is queued, then what the store holds beyond it."""
        queued = self._drain(0)
        seen = max([self.shown_seq, *(int(e.get("seq") or 0) for e in queued)])
        later = [e.model_dump(mode="json") for e in self.ss.events(run_id=self.run_id, since_seq=seen)]
        return sorted(queued + later, key=lambda e: int(e.get("seq") or 0))

    def _drain(self, timeout: float) -> list[dict]:
        out = []
        try:
            out.append(self.events.get(timeout=timeout) if timeout else self.events.get_nowait())
            while True:
                out.append(self.events.get_nowait())
        except queue.Empty:
            pass
        return out

    def _print(self, live: Live | None, *things: Any) -> None:
        (live.console if live else console).print(*things, highlight=False)

    def _handle(self, ev: dict, live: Live | None) -> None:
        t, p = ev["type"], ev.get("payload") or {}
        stamp = datetime.fromisoformat(ev["ts"]).astimezone().strftime("%H:%M:%S")
        if t == "dag.created" and not self.plan_shown:
            self.plan_shown = True
            for node in (p.get("dag") or {}).get("nodes", []):
                if node.get("kind") == "agent":
                    self.steps[node["id"]] = {"number": node.get("number"), "agent": node.get("agent"),
                                              "label": node.get("label"), "status": "pending", "level": node["level"]}
            self._print(live, _plan_table(p.get("dag") or {}))
            self._print(live, _dag_text(p.get("dag") or {}))
        elif t in ("step.started", "step.completed", "step.failed", "step.state_changed"):
            key = p.get("key")
            if key in self.steps:
                self.steps[key]["status"] = p.get("to")
            verb = {"step.started": "started", "step.completed": "completed", "step.failed": "failed"}.get(
                t, p.get("to"))
            line = f"[dim]{stamp}[/] step {p.get('number')} {key} ({p.get('agent')}) {_styled(str(verb))}"
            if t == "step.failed" and p.get("error"):
                line += f": {str(p['error']).splitlines()[0][:200]}"
            self._print(live, line)
        elif t == "agent.message" and p.get("agent") in ("planner", "plan_reviewer") and not self.live:
            self._print(live, f"[dim]{stamp}[/] {p['agent']} replied ({len(p.get('content') or '')} characters)")
        elif t in ("workflow.paused", "workflow.completed", "workflow.failed", "workflow.resumed",
                   "workflow.state_changed", "workflow.started"):
            if p.get("to"):
                reason = f" ({p['reason']})" if p.get("reason") else ""
                self._print(live, f"[dim]{stamp}[/] run {_styled(p['to'])}{reason}")
        elif t == "checkpoint.saved" and p.get("kind") in ("timed", "emergency"):
            self._print(live, f"[dim]{stamp}[/] {p['kind']} checkpoint {p.get('checkpoint_id')}")

    def _table(self) -> Table:
        t = Table("#", "step", "agent", "status", "sub-task", title="steps", title_justify="left")
        for key, s in sorted(self.steps.items(), key=lambda kv: kv[1]["number"] or 0):
            t.add_row(str(s["number"]), key, str(s["agent"]), _styled(s["status"]), str(s["label"])[:70])
        return t


def _plan_table(dag: dict[str, Any]) -> Table:
    t = Table("#", "step", "agent", "depends on", "sub-task", title="plan", title_justify="left")
    deps: dict[str, list[str]] = {}
    for e in dag.get("edges", []):
        if e["source"] not in ("planning",) and e["target"] != "end":
            deps.setdefault(e["target"], []).append(e["source"])
    for n in dag.get("nodes", []):
        if n.get("kind") == "agent":
            t.add_row(str(n.get("number")), n["id"], str(n.get("agent")), ", ".join(deps.get(n["id"], [])) or "-",
                      str(n.get("label")))
    return t


def _dag_text(dag: dict[str, Any]) -> str:
    lines = ["DAG (steps on one level can run in parallel):"]
    for i, level in enumerate(dag.get("levels") or [], start=1):
        lines.append(f"  level {i}: {', '.join(level)}")
    return "\n".join(lines)


# ---------------------------------------------------------------- executing here


def follow_here(store: Any, execution: Execution, *, as_json: bool) -> None:
    """Follow a run executing in this process to its end, live, with SIGINT/SIGTERM turned into
    interrupts (emergency checkpoint, run interrupted); exits with the run's outcome."""
    engine = execution.engine
    monitor = None if as_json else RunMonitor(store.session(engine.run.session_id), execution.run_id,
                                              live=console.is_terminal)
    received: list[int] = []

    def on_signal(signum: int, _frame: Any) -> None:
        received.append(signum)
        name = signal.Signals(signum).name
        err_console.print(f"[bold]{name}[/]: writing an emergency checkpoint and stopping (again to force)")
        engine.request_stop("interrupt", f"{name} received")
        signal.signal(signum, signal.SIG_DFL)

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    done = threading.Event()
    execution.future.add_done_callback(lambda _f: done.set())
    try:
        if monitor is not None:
            monitor.follow(done)
        else:
            done.wait()
        run = execution.future.result()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        if monitor is not None:
            monitor.close()
    _report(store, run, as_json=as_json, timed=engine.timed_checkpoints)
    if received:
        raise typer.Exit(128 + received[0])
    raise typer.Exit(EXIT_CODES.get(run.status, 0))


def _report(store: Any, run: Any, *, as_json: bool, timed: int = 0) -> None:
    ss = store.session(run.session_id)
    steps = ss.list_steps(run.id)
    costs = ss.cost_summary(run_id=run.id, group_by=["agent", "model"])
    files = sorted({f for s in steps for f in s.outputs.get("files", [])})
    if as_json:
        print_json({"run": run, "steps": steps, "files": files, "costs": costs})
        return
    console.print(_steps_table(steps))
    control = Path(run.path) / "control"
    if files:
        console.print("outputs:")
        for f in files:
            console.print(f"  {control / f}", highlight=False, soft_wrap=True)
    console.print(_cost_table(costs, title="cost"))
    line = f"run {run.id} {_styled(run.status.value)}"
    if run.status == RunStatus.completed:
        line += f": {sum(s.status.value == 'completed' for s in steps)}/{len(steps)} steps completed"
    elif run.status in (RunStatus.paused, RunStatus.interrupted, RunStatus.failed):
        line += f"; continue with: cmbagent resume {run.id}"
    if run.error:
        line += f"\n[red]{run.error.splitlines()[0][:300]}[/]"
    console.print(line, highlight=False, soft_wrap=True)
    console.print(f"run folder: {run.path}", highlight=False, soft_wrap=True)


def _steps_table(steps: list[Any]) -> Table:
    t = Table("#", "step", "agent", "status", "tries", "depends on", "outputs", title="steps", title_justify="left")
    for s in steps:
        outs = ", ".join(s.outputs.get("files", [])[:4])
        t.add_row(str(s.number), s.key, s.agent, _styled(s.status.value), str(s.attempts), ", ".join(s.depends_on)
                  or "-", outs)
    return t


def _cost_table(rows: list[CostRow], *, title: str = "cost", keys: tuple[str, ...] = ("agent", "model")) -> Table:
    t = Table(*keys, "calls", "prompt tokens", "completion tokens", "total tokens", "cost $", title=title,
              title_justify="left")
    tot = {"calls": 0, "prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0, "cost_usd": 0.0}
    for r in rows:
        mark = "" if r.priced else " (unpriced)"
        t.add_row(*(str(getattr(r, k) or "-") for k in keys), str(r.calls), str(r.prompt_tokens),
                  str(r.completion_tokens), str(r.total_tokens), f"{r.cost_usd:.6f}{mark}")
        for k in tot:
            tot[k] += getattr(r, k)
    t.add_row("Total", *([""] * (len(keys) - 1)), str(tot["calls"]), str(tot["prompt_tokens"]),
              str(tot["completion_tokens"]), str(tot["total_tokens"]), f"{tot['cost_usd']:.6f}", style="bold")
    return t


# ---------------------------------------------------------------- commands


def run_cmd(
    task: str = typer.Argument(..., help="What to do, in words."),
    session: Optional[str] = typer.Option(None, "--session", "-s", help="Session id or name (created if new)."),
    model: Optional[str] = typer.Option(None, "--model", "-m",
                                        help="provider/model, or scripted[:SCENARIO]; default: from models.yaml or "
                                             "your keys, else the scripted offline model."),
    mode: str = typer.Option("deep_research", "--mode", help="deep_research, control or one_shot."),
    max_parallel: Optional[int] = typer.Option(None, "--max-parallel", "-p", help="Steps running at once (default 4)."),
    scenario: Optional[str] = typer.Option(None, "--scenario", help="Scenario of the scripted model (name or file)."),
    plan: Optional[Path] = typer.Option(None, "--plan", help="Plan JSON file for --mode control."),
    agent: Optional[str] = typer.Option(None, "--agent", help="Agent of a one_shot run (engineer, researcher)."),
    n_plan_reviews: Optional[int] = typer.Option(None, "--n-plan-reviews", help="Plan review rounds (default 1)."),
    max_plan_steps: Optional[int] = typer.Option(None, "--max-plan-steps", help="Largest plan accepted (default 8)."),
    max_n_attempts: Optional[int] = typer.Option(None, "--max-n-attempts", help="Code attempts per step (default 3)."),
    record: Optional[Path] = typer.Option(None, "--record", help="Record the model's responses into this scenario "
                                                                 "file, to replay offline later."),
    checkpoint_interval: Optional[float] = typer.Option(None, "--checkpoint-interval",
                                                        help="Seconds between timed checkpoints in a long step "
                                                             "(default 600)."),
    approval_mode: Optional[str] = typer.Option(None, "--approval-mode",
                                                help="Where to wait for a human, comma-separated: after_planning, "
                                                     "before_each_step, before_code_execution, on_error, on_budget."),
    approval_steps: Optional[str] = typer.Option(None, "--approval-steps",
                                                 help="Gate only these steps (keys or numbers, comma-separated)."),
    approval_timeout: Optional[float] = typer.Option(None, "--approval-timeout",
                                                     help="Seconds an approval waits before its default action."),
    approval_default: Optional[str] = typer.Option(None, "--approval-default",
                                                   help="Decision taken at the timeout (approve, reject, ...)."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Run a task and follow it live.  Example: cmbagent run "Fit a toy CMB power spectrum" --max-parallel 4"""
    with fail_cleanly(), open_store() as store:
        s = _session(store, session)
        started = actions.start_run(
            store, s.id, task, executor=InProcess(store), actor=ACTOR, mode=mode, model=model,
            max_parallel=max_parallel, scenario=scenario, plan=plan, record=record,
            checkpoint_interval_s=checkpoint_interval, agent=agent, n_plan_reviews=n_plan_reviews,
            max_plan_steps=max_plan_steps, max_n_attempts=max_n_attempts, approval_mode=approval_mode,
            approval_steps=[x.strip() for x in approval_steps.split(",") if x.strip()] if approval_steps else None,
            approval_timeout_s=approval_timeout, approval_default_action=approval_default)
        out = err_console if as_json else console
        out.print(f"[bold]{started.announcement}[/]", highlight=False)
        out.print(f"run {started.run.id} in session {s.name} ({s.id}), mode {started.run.mode.value}", highlight=False)
        follow_here(store, started.execution, as_json=as_json)


def resume_cmd(
    run_id: str = typer.Argument(..., help="The run to continue."),
    max_parallel: Optional[int] = typer.Option(None, "--max-parallel", "-p", help="Steps running at once."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Continue with another model."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Continue a paused, interrupted, failed or stalled run here, from its last checkpoint.
    Example: cmbagent resume run_0123456789abcdef0123"""
    with fail_cleanly(), open_store() as store:
        resumed = actions.resume(store, run_id, executor=InProcess(store), model=model, max_parallel=max_parallel)
        out = err_console if as_json else console
        out.print(f"[bold]{resumed.announcement}[/]", highlight=False)
        out.print(f"resuming run {resumed.run.id} ({resumed.described}); {resumed.steps_completed} step(s) already "
                  f"completed", highlight=False)
        follow_here(store, resumed.execution, as_json=as_json)


def status_cmd(
    run_id: Optional[str] = typer.Argument(None, help="A run id for its details; none lists runs."),
    session: Optional[str] = typer.Option(None, "--session", "-s", help="Only this session (id or name)."),
    limit: int = typer.Option(50, "--limit", help="Most recent runs listed."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Runs and how they stand: stalled runs (owner gone) are marked resumable.
    Example: cmbagent status --session "Project X" """
    with fail_cleanly(), open_store() as store:
        if run_id:
            _run_status(store, run_id, as_json)
            return
        session_id = store.resolve_session(session).id if session else None
        rows = [r.model_dump(mode="json") for r in store.runs_overview(session_id=session_id, limit=limit)]
        for r in rows:
            live = liveness(r)
            r.update(state=live.state, resumable=live.resumable, owner_alive=live.owner_alive,
                     heartbeat_age_s=live.heartbeat_age_s)
        if as_json:
            print_json(rows)
            return
        t = Table("run", "session", "status", "steps", "mode", "model", "cost $", "heartbeat", "resumable", "task")
        for r in rows:
            hb = "-" if r["heartbeat_age_s"] is None else f"{r['heartbeat_age_s']:.0f} s ago"
            t.add_row(r["id"], r["session_name"], _styled(r["state"]), f"{r['steps_completed']}/{r['steps_total']}",
                      r["mode"], str(r["model"] or "-"), f"{r['cost_usd']:.4f}", hb,
                      "yes" if r["resumable"] else "-", r["task"][:40])
        console.print(t)
        stalled = [r["id"] for r in rows if r["state"] in ("stalled", "orphaned")]
        if stalled:
            console.print(f"{len(stalled)} run(s) lost their process; continue one with: cmbagent resume {stalled[0]}",
                          highlight=False)


def _run_status(store: Any, run_id: str, as_json: bool) -> None:
    run = store.find_run(run_id)
    ss = store.session(run.session_id)
    steps = ss.list_steps(run.id)
    live = liveness(run)
    costs = ss.cost_summary(run_id=run.id, group_by=["agent", "model"])
    cp = ss.latest_checkpoint(run.id)
    if as_json:
        print_json({"run": run, "state": live.state, "resumable": live.resumable, "owner_alive": live.owner_alive,
                    "heartbeat_age_s": live.heartbeat_age_s, "steps": steps, "costs": costs,
                    "latest_checkpoint": cp.model_dump(mode="json", exclude={"context"}) if cp else None})
        return
    console.print(f"run {run.id} ({run.mode.value}) in session {run.session_id}: {_styled(live.state)}"
                  f"{' - resumable: cmbagent resume ' + run.id if live.resumable else ''}", highlight=False)
    console.print(f"task: {run.task}", highlight=False, soft_wrap=True)
    console.print(f"model: {run.model}; owner pid {run.owner_pid or '-'}; {live.describe()}", highlight=False)
    if run.error:
        console.print(f"[red]error:[/] {run.error[:500]}", highlight=False)
    if cp:
        console.print(f"last checkpoint: {cp.kind.value} at {cp.created_at.astimezone():%Y-%m-%d %H:%M:%S}",
                      highlight=False)
    console.print(_steps_table(steps))
    console.print(_cost_table(costs))


def pause_cmd(run_id: str = typer.Argument(..., help="The run to pause."), as_json: bool = JSON_OPTION) -> None:
    """Pause a run at its next step boundary (steps in flight finish first).  Example: cmbagent pause run_..."""
    with fail_cleanly(), open_store() as store:
        run = actions.pause(store, run_id, actor=ACTOR)
        if as_json:
            print_json(run)
        elif run.status == RunStatus.paused:
            console.print(f"run {run.id} is paused (its process was gone); continue with: cmbagent resume {run.id}",
                          highlight=False)
        else:
            console.print(f"pause requested: run {run.id} pauses after the steps in flight; then continue with: "
                          f"cmbagent resume {run.id}", highlight=False)


def cancel_cmd(run_id: str = typer.Argument(..., help="The run to cancel."), as_json: bool = JSON_OPTION) -> None:
    """Cancel a run: its running steps are stopped and it cannot be resumed.  Example: cmbagent cancel run_..."""
    with fail_cleanly(), open_store() as store:
        run = actions.cancel(store, run_id, actor=ACTOR)
        if as_json:
            print_json(run)
        else:
            console.print(f"run {run.id} is cancelled; a process executing it stops at its next heartbeat",
                          highlight=False)


def cost_cmd(
    session: Optional[str] = typer.Option(None, "--session", "-s", help="Only this session (id or name)."),
    run: Optional[str] = typer.Option(None, "--run", "-r", help="Only this run."),
    by: str = typer.Option("agent,model", "--by", help="Group by any of run_id, step_id, agent, model, session_id."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Tokens and dollars per agent and model (CMBAgent's cost table).  Example: cmbagent cost --run run_..."""
    keys = tuple(k.strip() for k in by.split(",") if k.strip())
    with fail_cleanly(), open_store() as store:
        session_id = store.resolve_session(session).id if session and not run else None
        report = actions.costs(store, session_id=session_id, run_id=run, group_by=list(keys))
        if as_json:
            print_json(report.rows)
            return
        console.print(_cost_table(report.rows, title="cost", keys=keys))
        if report.unpriced:
            err_console.print(f"[yellow]warning:[/] no price known for {', '.join(report.unpriced)}: recorded at $0",
                              highlight=False)


def register(app: typer.Typer) -> None:
    app.command("run")(run_cmd)
    app.command("resume")(resume_cmd)
    app.command("status")(status_cmd)
    app.command("pause")(pause_cmd)
    app.command("cancel")(cancel_cmd)
    app.command("cost")(cost_cmd)
