"""Store commands: schema, states, recover, import-context, store status|stop."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from cmbagent_jupyter.cli.common import JSON_OPTION, console, fail_cleanly, open_store, print_json, resolve_session
from cmbagent_jupyter.core.states import RUN_GUARDS, transition_table
from cmbagent_jupyter.core.home import home_path
from cmbagent_jupyter.core import EVENT_SCHEMA_VERSION, event_json_schema
from cmbagent_jupyter.core.schema import frontend_schema
from cmbagent_jupyter.core import StoreUnavailable
from cmbagent_jupyter.store.local import StoreClient, service_pid, stop_service
from cmbagent_jupyter.store.local.protocol import read_runtime

schema_app = typer.Typer(help="JSON Schemas of what cmbagent-jupyter exchanges.", no_args_is_help=True)
store_app = typer.Typer(help="The store service that owns this home's database.", no_args_is_help=True)


@schema_app.command("events")
def schema_events(out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write to FILE instead of stdout.")) -> None:
    """The JSON Schema of the Event envelope.  Example: cmbagent schema events --out event.schema.json"""
    text = json.dumps(event_json_schema(), indent=2) + "\n"
    if out is None:
        sys.stdout.write(text)
        return
    out.write_text(text)
    console.print(f"wrote the event schema v{EVENT_SCHEMA_VERSION} to {out}", highlight=False)


def frontend_schema_text() -> str:
    """The front-end schema as committed in packages/core/schema/."""
    return json.dumps(frontend_schema(), indent=2) + "\n"


@schema_app.command("frontend")
def schema_frontend(out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write to FILE instead of stdout.")) -> None:
    """The JSON Schema the front ends' TypeScript types are generated from: events, records, state sets.
    Example: cmbagent schema frontend --out packages/core/schema/cmbagent.schema.json"""
    text = frontend_schema_text()
    if out is None:
        sys.stdout.write(text)
        return
    out.write_text(text)
    console.print(f"wrote the front-end schema to {out}", highlight=False)


def guards() -> list[dict[str, Optional[str]]]:
    """Each guard with the condition it enforces (its refusal message, asked with facts it rejects)."""
    hostile = {"task": "", "mode": "", "step_count": 0, "pending_approvals": 1}
    return [{"from": src.value if src else None, "to": dst.value, "requires": guard(hostile)}
            for (src, dst), guard in RUN_GUARDS.items()]


def states(as_json: bool = JSON_OPTION) -> None:
    """The run and step state machines: every allowed move and its guards.  Example: cmbagent states --json"""
    table = transition_table()
    if as_json:
        print_json({**table, "guards": guards()})
        return
    for entity in ("run", "step"):
        t = Table("from", "may move to", title=f"{entity} states")
        for src, dsts in table[entity].items():
            t.add_row(src, ", ".join(dsts) or "(terminal)")
        console.print(t)
    g = Table("from", "to", "requires", title="run guards")
    for row in guards():
        g.add_row(row["from"] or "any", row["to"], row["requires"] or "")
    console.print(g)


def recover_cmd(
    yes: bool = typer.Option(False, "--yes", "-y", help="Move a corrupt database aside without asking."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Rebuild the store from the session, run and checkpoint files.  Example: cmbagent recover --yes

    Stops the store service; a database that cannot be opened is kept as
    store.duckdb.corrupt-<timestamp> and a new one is built from the files."""
    from cmbagent_jupyter.store.local.recover import check_database, database_file, recover  # opens DuckDB itself

    with fail_cleanly():
        home = home_path()
        stop_service(home)
        problem = check_database(home)
        if problem is not None and not yes:
            console.print(f"[bold]{problem.message}[/]", highlight=False)
            if not typer.confirm(f"Move {database_file(home)} aside and rebuild the store from the files?"):
                raise typer.Exit(1)
        report = recover(home)
        if as_json:
            print_json(report.to_dict())
            return
        for path in report.moved_aside:
            console.print(f"kept the unreadable database as {path}", highlight=False)
        t = Table("restored", "count", title=f"recovered {home}")
        for key in ("sessions", "runs", "steps", "checkpoints"):
            t.add_row(key, str(getattr(report, key)))
        console.print(t)
        if report.interrupted:
            console.print(f"{len(report.interrupted)} run(s) were active and are now interrupted; "
                          f"resume them with `cmbagent resume RUN_ID`: {', '.join(report.interrupted)}", highlight=False)
        for s in report.skipped:
            console.print(f"skipped {s['path']}: {s['reason']}", highlight=False)


def import_context_cmd(
    path: Path = typer.Argument(..., help="A CMBAgent context pickle, e.g. context/context_step_2.pkl."),
    session: Optional[str] = typer.Option(None, "--session", "-s", help="Session id or name."),
    task: Optional[str] = typer.Option(None, "--task", help="The run's task (default: the context's main_task)."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Start a draft run from a CMBAgent context pickle.  Example: cmbagent import-context ctx.pkl --session "Project X" """
    from cmbagent_jupyter.store.recovery import import_context

    with fail_cleanly(), open_store() as store:
        s = resolve_session(store, session)
        ss = store.session(s.id)
        run = import_context(ss, path, task)
        steps = ss.list_steps(run.id)
        if as_json:
            print_json({"run": run.model_dump(mode="json"), "steps": len(steps)})
            return
        console.print(f"imported {path} as run {run.id} in session {s.name} ({len(steps)} plan step(s), "
                      f"status {run.status.value})", highlight=False)


@store_app.command("status")
def store_status(as_json: bool = JSON_OPTION) -> None:
    """Whether the store service runs, its pid and socket, schema version and database size."""
    with fail_cleanly():
        home = home_path()
        db = home / "store.duckdb"
        info = {"home": str(home), "running": False, "pid": None, "socket": None, "schema": None,
                "database": str(db), "db_bytes": db.stat().st_size if db.exists() else 0}
        pid = service_pid(home)  # also found while the service is still starting
        runtime = read_runtime(home)
        info["pid"] = pid
        if pid is not None and runtime:
            try:
                with StoreClient(home, autostart=False, timeout=10) as client:
                    ping = client.call("store.ping")
                info.update(running=True, pid=ping["pid"], socket=runtime.get("socket"), schema=ping["version"])
            except StoreUnavailable:
                pass
        if as_json:
            print_json(info)
            return
        state = (f"running (pid {info['pid']}) on {info['socket']}" if info["running"]
                 else f"starting (pid {info['pid']})" if info["pid"] else "not running")
        console.print(f"store service for {home}: {state}", highlight=False)
        console.print(f"database {db}: {info['db_bytes'] / 1e6:.2f} MB"
                      + (f", schema version {info['schema']}" if info["schema"] is not None else ""), highlight=False)


@store_app.command("stop")
def store_stop() -> None:
    """Stop the store service (clients start a new one when they need it)."""
    with fail_cleanly():
        home = home_path()
        stopped = stop_service(home)
        console.print(f"stopped the store service for {home}" if stopped else f"no store service runs for {home}",
                      highlight=False)


def register(app: typer.Typer) -> None:
    app.add_typer(schema_app, name="schema")
    app.add_typer(store_app, name="store")
    app.command("states")(states)
    app.command("recover")(recover_cmd)
    app.command("import-context")(import_context_cmd)
