"""`%cmbagent` / `%%cmbagent`: runs, approvals and costs from notebook cells.

A thin layer over the Python API (`cmbagent_jupyter.api`) and the actions every front
end shares (`cmbagent_jupyter.actions`): a run started here executes on the engine's
own thread, so the cell returns at once and its widget (a `RunView`) keeps updating
while other cells run. Errors are one line (`cmbagent: error: ...`) on stderr, never
a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from typing import Any

from IPython.core.magic import Magics, line_cell_magic, magics_class

from cmbagent_jupyter import actions, api
from cmbagent_jupyter.actions import InProcess
from cmbagent_jupyter.agents.specs import load_specs
from cmbagent_jupyter.core import RUNNING_RUN_STATES, HomeError, InvalidInput, StoreError
from cmbagent_jupyter.widgets import display_run

ACTOR = "notebook"

PROG = "cmbagent"

HELP = """Run and control CMBAgent-style research workflows from a notebook.

Line magic:  %cmbagent SUBCOMMAND [ARGS]      Cell magic:  %%cmbagent [OPTIONS]  (the task is the cell body)

Subcommands (RUN defaults to the last run started in this kernel):
  run "TASK" [--session S] [--mode M] [--model M] [--scenario S] [--approval-mode A] [--max-parallel N] [--wait]
                                   start a run; returns at once and shows it live
      %cmbagent run "Fit the CMB power spectrum" --scenario cmb_power_spectrum
      %cmbagent run "Plot the data" --session "Project X" --model openai/gpt-4o-mini --approval-mode after_planning
  status [RUN] [--json]            the run's state, steps and cost          %cmbagent status run_0123456789ab
  show [RUN]                       display the run's live widget            %cmbagent show
  wait [RUN] [--timeout S]         block until the run stops                %cmbagent wait --timeout 600
  pause [RUN] | resume [RUN] | cancel [RUN]
                                   pause at the next step boundary; continue from the last checkpoint; stop
  approvals [RUN] [--all]          approvals waiting for a decision
  approve [APPROVAL] [--feedback TEXT]
                                   approve (without an id: the only pending approval of RUN)
      %cmbagent approve --feedback "looks good"
  reject APPROVAL --feedback TEXT  reject; the plan or step is redone with the feedback
  modify APPROVAL --feedback TEXT  approve with a modification
  branch RUN --from-step N [--name NAME] [--instructions TEXT] [--hypothesis TEXT] [--no-start]
                                   a new run that keeps steps before N and redoes N onwards
      %cmbagent branch run_0123456789ab --from-step 3 --instructions "use 50 bins"
  sessions [--all]                 sessions with their runs and cost
  cost [RUN] [--session S] [--by agent,model]
                                   cost table of a run (or a whole session)
  agents                           the agents a plan can use

Cell magic:
  %%cmbagent --scenario cmb_power_spectrum --approval-mode after_planning
  Compute the CMB temperature power spectrum of a toy map and fit its amplitude.

Load with %load_ext cmbagent_jupyter. Runs live in CMBAGENT_HOME (default ~/.cmbagent).
"""


SUBCOMMANDS = ("run", "status", "show", "wait", "pause", "resume", "cancel", "approvals", "approve", "reject",
               "modify", "branch", "sessions", "cost", "agents")


class MagicError(Exception):
    """A usage or input error, shown as one line."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse would print usage and exit
        raise MagicError(message)

    def exit(self, status: int = 0, message: str | None = None) -> None:
        raise MagicError((message or "").strip() or "invalid arguments")

    def print_help(self, file: Any = None) -> None:
        print(HELP, file=file or sys.stdout)
        raise _HelpShown()


class _HelpShown(Exception):
    pass


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, add_help=True)
    sub = p.add_subparsers(dest="command", parser_class=_Parser)

    def run_options(q: argparse.ArgumentParser, task: bool) -> None:
        if task:
            q.add_argument("task", nargs="?", help="what to do")
        q.add_argument("--session", "-s")
        q.add_argument("--mode", default="deep_research")
        q.add_argument("--model")
        q.add_argument("--scenario")
        q.add_argument("--approval-mode", dest="approval_mode")
        q.add_argument("--max-parallel", dest="max_parallel", type=int)
        q.add_argument("--plan", help="plan JSON file (control mode)")
        q.add_argument("--wait", action="store_true", help="block until the run stops")

    run_options(sub.add_parser("run"), task=True)
    for name in ("status", "show", "pause", "resume", "cancel"):
        q = sub.add_parser(name)
        q.add_argument("run", nargs="?")
        if name == "status":
            q.add_argument("--json", action="store_true")
    q = sub.add_parser("wait")
    q.add_argument("run", nargs="?")
    q.add_argument("--timeout", type=float)
    q = sub.add_parser("approvals")
    q.add_argument("run", nargs="?")
    q.add_argument("--all", action="store_true")
    for name in ("approve", "reject", "modify"):
        q = sub.add_parser(name)
        q.add_argument("approval", nargs="?")
        q.add_argument("--feedback", "-f")
        q.add_argument("--run")
    q = sub.add_parser("branch")
    q.add_argument("run")
    q.add_argument("--from-step", dest="from_step", type=int, required=True)
    q.add_argument("--name")
    q.add_argument("--instructions")
    q.add_argument("--hypothesis")
    q.add_argument("--no-start", dest="start", action="store_false")
    q = sub.add_parser("sessions")
    q.add_argument("--all", action="store_true")
    q = sub.add_parser("cost")
    q.add_argument("run", nargs="?")
    q.add_argument("--session", "-s")
    q.add_argument("--by", default="agent,model")
    sub.add_parser("agents")
    return p


def _cell_parser() -> argparse.ArgumentParser:
    """The first line of a `%%cmbagent` cell: run options (an optional leading `run`)."""
    p = _Parser(prog=f"%%{PROG}", add_help=True)
    p.add_argument("command", nargs="?", choices=["run"])
    p.add_argument("--session", "-s")
    p.add_argument("--mode", default="deep_research")
    p.add_argument("--model")
    p.add_argument("--scenario")
    p.add_argument("--approval-mode", dest="approval_mode")
    p.add_argument("--max-parallel", dest="max_parallel", type=int)
    p.add_argument("--plan")
    p.add_argument("--wait", action="store_true")
    return p


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [[str(c) if c is not None else "" for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    line = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in cells)])


def _money(value: float) -> str:
    return f"${value:.4f}"


@magics_class
class CmbagentMagics(Magics):
    def __init__(self, shell: Any = None, home: Any = None):
        super().__init__(shell)
        self.home = home
        self.last_run: Any = None

    # -- entry point -----------------------------------------------------------------

    @line_cell_magic
    def cmbagent(self, line: str = "", cell: str | None = None) -> Any:
        try:
            if cell is not None:
                return self._cell(line, cell)
            return self._line(line)
        except _HelpShown:
            return None
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # noqa: BLE001 - every error is one line for the user
            print(f"{PROG}: error: {_one_line(exc)}", file=sys.stderr)
            return None

    # The docstring is what `%cmbagent?` shows.
    cmbagent.__doc__ = HELP

    def _line(self, line: str) -> Any:
        argv = _split(line)
        if not argv or argv[0] in ("help", "-h", "--help"):
            print(HELP)
            return None
        if argv[0] not in SUBCOMMANDS:
            raise MagicError(f"unknown subcommand {argv[0]!r}; use one of {', '.join(SUBCOMMANDS)} (see %cmbagent?)")
        args = _parser().parse_args(argv)
        handler = getattr(self, f"_cmd_{args.command}")
        return handler(args)

    def _cell(self, line: str, cell: str) -> Any:
        args = _cell_parser().parse_args(_split(line))
        args.task = cell.strip()
        return self._cmd_run(args)

    # -- helpers -----------------------------------------------------------------------

    def _run(self, run_id: str | None) -> Any:
        if run_id:
            return api.get_run(run_id, home=self.home)
        if self.last_run is None:
            self.last_run = self._latest_run_of_this_process()
        if self.last_run is None:
            raise MagicError("no run given and none started in this kernel: name one, e.g. %cmbagent status RUN_ID")
        return self.last_run

    def _latest_run_of_this_process(self) -> Any:
        """The newest run this kernel executed (also when started with `session.run(...)`)."""
        store = self._store()
        runs = [r for s in store.list_sessions() for r in store.session(s.id).list_runs() if r.owner_pid == os.getpid()]
        if not runs:
            return None
        latest = max(runs, key=lambda r: r.created_at)
        return api.get_run(latest.id, home=self.home)

    def _store(self) -> Any:
        return api._store(self.home)

    # -- subcommands -------------------------------------------------------------------

    def _cmd_run(self, args: argparse.Namespace) -> Any:
        task = (args.task or "").strip()
        if not task:
            raise MagicError('a run needs a task: %cmbagent run "TASK" (or the body of a %%cmbagent cell)')
        settings: dict[str, Any] = {}
        if args.approval_mode:
            settings["approval_mode"] = args.approval_mode
        session = api.open_session(args.session, home=self.home)
        handle = session.run(task, mode=args.mode, model=args.model, scenario=args.scenario,
                             max_parallel=args.max_parallel, plan=args.plan, **settings)
        self.last_run = handle
        if args.wait:
            handle.wait()
        return handle

    def _cmd_status(self, args: argparse.Namespace) -> None:
        handle = self._run(args.run)
        run = handle.status()
        steps = handle.steps()
        cost = sum(r.cost_usd for r in handle.cost(group_by=["run_id"]))
        if args.json:
            print(json.dumps({"run": run.model_dump(mode="json"), "steps": [s.model_dump(mode="json") for s in steps],
                              "cost_usd": cost}, indent=1))
            return
        done = sum(1 for s in steps if s.status.value == "completed")
        print(f"run {run.id}  {run.status.value}  ({run.mode.value}, model {run.model or 'default'})")
        print(f"task: {run.task}")
        print(f"steps: {done}/{len(steps)} completed   cost: {_money(cost)}")
        if run.error:
            print(f"error: {run.error.strip().splitlines()[0] if run.error.strip() else run.error}")
        if steps:
            print(_table(["#", "key", "agent", "status", "attempts"],
                         [[s.number, s.key, s.agent, s.status.value, s.attempts] for s in steps]))

    def _cmd_show(self, args: argparse.Namespace) -> Any:
        return display_run(self._run(args.run))

    def _cmd_wait(self, args: argparse.Namespace) -> None:
        run = self._run(args.run).wait(args.timeout)
        print(f"run {run.id} {run.status.value}" + (f": {run.error}" if run.error else ""))

    def _cmd_pause(self, args: argparse.Namespace) -> None:
        run = self._run(args.run).pause()
        print(f"run {run.id}: pause requested (it pauses at the next step boundary)"
              if run.status.value != "paused" else f"run {run.id} paused")

    def _cmd_resume(self, args: argparse.Namespace) -> Any:
        handle = self._run(args.run).resume()
        self.last_run = handle
        print(f"run {handle.id} resumed")
        return None

    def _cmd_cancel(self, args: argparse.Namespace) -> None:
        run = self._run(args.run).cancel()
        print(f"run {run.id} {run.status.value}")

    def _pending(self, run_id: str | None, include_resolved: bool = False) -> list[Any]:
        if run_id or self.last_run is not None:
            handle = self._run(run_id)
            return handle.ss.list_approvals(handle.id, pending_only=not include_resolved)
        return self._store().list_approvals(pending_only=not include_resolved)

    def _cmd_approvals(self, args: argparse.Namespace) -> None:
        rows = self._pending(args.run, include_resolved=args.all)
        if not rows:
            print("no approvals waiting" if not args.all else "no approvals")
            return
        print(_table(["id", "run", "kind", "step", "status", "feedback"],
                     [[a.id, a.run_id, a.kind, a.step_id or "", a.status.value, a.feedback or ""] for a in rows]))

    def _resolve(self, args: argparse.Namespace, decision: str) -> None:
        approval_id = args.approval
        if not approval_id:
            pending = self._pending(args.run)
            if len(pending) != 1:
                raise MagicError(f"{len(pending)} approvals are waiting: name one, e.g. %cmbagent {decision} APPROVAL_ID"
                                 if pending else "no approval is waiting")
            approval_id = pending[0].id
        a = actions.decide(self._store(), approval_id, decision, feedback=args.feedback, actor=ACTOR)
        print(f"approval {a.id} ({a.kind}) {a.status.value}" + (f": {a.feedback}" if a.feedback else ""))

    def _cmd_approve(self, args: argparse.Namespace) -> None:
        self._resolve(args, "approve")

    def _cmd_reject(self, args: argparse.Namespace) -> None:
        self._resolve(args, "reject")

    def _cmd_modify(self, args: argparse.Namespace) -> None:
        self._resolve(args, "modify")

    def _cmd_branch(self, args: argparse.Namespace) -> Any:
        parent = self._run(args.run)
        made = actions.branch(parent.store, parent.id, args.from_step, actor=ACTOR, name=args.name,
                              instructions=args.instructions, hypothesis=args.hypothesis, session_id=parent.session_id,
                              executor=InProcess() if args.start else None)
        kept = ", ".join(str(n) for n in made.reused_steps) or "none"
        print(f"branch {made.branch_id}: run {made.run.id} from step {made.from_step} of {parent.id} "
              f"(keeps steps {kept})")
        if not args.start:
            return None
        child = api.get_run(made.run.id, home=self.home)
        child._execution = made.execution
        self.last_run = child
        return child

    def _cmd_sessions(self, args: argparse.Namespace) -> None:
        store = self._store()
        sessions = store.list_sessions(include_archived=args.all)
        if not sessions:
            print("no sessions yet: %cmbagent run \"TASK\" creates one")
            return
        rows = []
        for s in sessions:
            runs = store.session(s.id).list_runs()
            usage = store.session(s.id).usage()
            active = sum(1 for r in runs if r.status in RUNNING_RUN_STATES)
            rows.append([s.name, s.id, s.status.value, len(runs), active, _money(usage.cost_usd)])
        print(_table(["name", "id", "status", "runs", "active", "cost"], rows))

    def _cmd_cost(self, args: argparse.Namespace) -> None:
        by = [b.strip() for b in args.by.split(",") if b.strip()]
        store = self._store()
        if args.session:
            report = actions.costs(store, session_id=store.resolve_session(args.session).id, run_id=args.run,
                                   group_by=by)
            scope = f"session {args.session}"
        else:
            handle = self._run(args.run)
            report = actions.costs(store, session_id=handle.session_id, run_id=handle.id, group_by=by)
            scope = f"run {handle.id}"
        rows = report.rows
        tokens = sum(r.total_tokens for r in rows)
        print(f"{scope}: {_money(report.total_usd)}, {tokens:,} tokens")
        if rows:
            print(_table([*by, "calls", "prompt", "completion", "cost"],
                         [[*(getattr(r, b) for b in by), r.calls, r.prompt_tokens, r.completion_tokens,
                           _money(r.cost_usd)] for r in rows]))

    def _cmd_agents(self, args: argparse.Namespace) -> None:
        specs = load_specs()
        print(_table(["agent", "output", "plan steps", "role"],
                     [[s.name, s.output.value, "yes" if s.step_agent else "", s.role] for s in specs.values()]))


def _split(line: str) -> list[str]:
    try:
        return shlex.split(line)
    except ValueError as exc:
        raise MagicError(f"cannot read the arguments: {exc}") from None


def _one_line(exc: BaseException) -> str:
    """The error's own message; the type too when it is not one of the expected ones."""
    text = str(getattr(exc, "message", None) or exc) or type(exc).__name__
    expected = (MagicError, StoreError, InvalidInput, HomeError, ValueError, TimeoutError, OSError)
    if not isinstance(exc, expected):
        text = f"{type(exc).__name__}: {text}"
    return " ".join(text.split())


def register(ipython: Any, home: Any = None) -> CmbagentMagics:
    """Register `%cmbagent` / `%%cmbagent` with an IPython shell (what %load_ext calls)."""
    magics = CmbagentMagics(ipython, home=home)
    ipython.register_magics(magics)
    return magics
