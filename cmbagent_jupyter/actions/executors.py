"""How a run continues once an action has let it (start, resume, retry, branch, play-from).

The caller chooses: `InProcess` runs it on this process's engine loop (the Python API,
the widgets, `cmbagent ... --wait`); `Detached` starts `cmbagent resume RUN_ID` in a
process of its own that outlives the caller (the CLI without --wait, the Jupyter
server); passing no executor records the change and leaves the run stopped.
"""

from __future__ import annotations

import concurrent.futures
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from pydantic import BaseModel, PrivateAttr

from cmbagent_jupyter.core import Run, StateConflict
from cmbagent_jupyter.core.home import home_path
from cmbagent_jupyter.engine.loop import EngineLoop
from cmbagent_jupyter.store import StorePort, open_store

if TYPE_CHECKING:
    from cmbagent_jupyter.llm.providers import ModelChoice

PACKAGE_ROOT = Path(__file__).resolve().parents[2]


class Execution(BaseModel):
    """Where a run now executes: `here` (this process's engine loop) or `detached`."""

    run_id: str
    where: Literal["here", "detached"]
    pid: int
    command: list[str] | None = None
    log: str | None = None
    _engine: Any = PrivateAttr(None)
    _future: concurrent.futures.Future | None = PrivateAttr(None)

    @property
    def engine(self) -> Any:
        """The `RunEngine` of a run executing here (None when detached)."""
        return self._engine

    @property
    def future(self) -> concurrent.futures.Future | None:
        """Completes with the settled run when a run executing here stops."""
        return self._future

    @property
    def done(self) -> bool:
        return self._future is None or self._future.done()


class Executor(Protocol):
    def execute(self, store: StorePort, run: Run, *, choice: ModelChoice,
                max_parallel: int | None = None) -> Execution: ...


# ---------------------------------------------------------------- in this process

PROCESS_STORES: dict[str, StorePort] = {}
_STORES_LOCK = threading.Lock()
_HERE: dict[str, Execution] = {}
_HERE_LOCK = threading.Lock()


def process_store(home: str | os.PathLike | None = None) -> StorePort:
    """This process's long-lived client of a home: a run executing here outlives the widget
    or command that started it, so it never uses a client its caller may close."""
    key = str(home_path(home))
    with _STORES_LOCK:
        store = PROCESS_STORES.get(key)
        if store is None or store.closed:
            store = PROCESS_STORES[key] = open_store(key)
        return store


def executing_here(run_id: str) -> Execution | None:
    """The run's execution on this process's engine loop, while it lasts."""
    with _HERE_LOCK:
        found = _HERE.get(run_id)
    return found if found is not None and not found.done else None


def stop_here(run_id: str, kind: str, reason: str) -> bool:
    """Tell the engine executing the run here, if any, to stop (cancel, interrupt) now."""
    found = executing_here(run_id)
    if found is not None:
        found.engine.request_stop(kind, reason)
    return found is not None


class InProcess:
    """Runs on this process's engine thread (never the caller's: a kernel stays responsive).

    `store`: the client the engine uses; by default this process's own client of the home.
    """

    def __init__(self, store: StorePort | None = None):
        self.store = store

    def execute(self, store: StorePort, run: Run, *, choice: ModelChoice,
                max_parallel: int | None = None) -> Execution:
        # the engine loads AG2 and the agents: the first run here pays for it, not `import cmbagent_jupyter.api`
        from cmbagent_jupyter.engine.runner import RunEngine

        own = self.store or process_store(store.home)
        with _HERE_LOCK:
            running = _HERE.get(run.id)
            if running is not None and not running.done:
                raise StateConflict(f"run {run.id} is already executing in this process")
            engine = RunEngine(own, run, model=choice, max_parallel=max_parallel)
            execution = Execution(run_id=run.id, where="here", pid=os.getpid())
            execution._engine = engine
            execution._future = EngineLoop.get().submit(engine.execute())
            _HERE[run.id] = execution
        execution._future.add_done_callback(lambda _f: _forget(execution))
        return execution


def _forget(execution: Execution) -> None:
    with _HERE_LOCK:
        if _HERE.get(execution.run_id) is execution:
            del _HERE[execution.run_id]


# ---------------------------------------------------------------- in a process of its own


def default_resume_command() -> list[str]:
    """`cmbagent resume {run_id}` from this interpreter's environment."""
    script = Path(sys.executable).parent / "cmbagent"
    if script.exists():
        return [str(script), "resume", "{run_id}"]
    entry = "import sys; from cmbagent_jupyter.cli import main; sys.exit(main())"
    return [sys.executable, "-c", entry, "resume", "{run_id}"]


class Detached:
    """`cmbagent resume RUN_ID` in its own process group, so the run outlives its caller.

    `command`: the argv, with {run_id} and {session_id} filled in; `log_dir`: where its
    output goes (`resume-RUN_ID.log`), by default `resume.log` in the run's folder.
    """

    def __init__(self, home: str | os.PathLike, command: list[str] | None = None,
                 log_dir: str | os.PathLike | None = None):
        self.home = Path(home)
        self.command = command or default_resume_command()
        self.log_dir = Path(log_dir) if log_dir is not None else None

    def argv(self, run_id: str, session_id: str) -> list[str]:
        return [part.format(run_id=run_id, session_id=session_id) for part in self.command]

    def execute(self, store: StorePort, run: Run, *, choice: ModelChoice,
                max_parallel: int | None = None) -> Execution:
        argv = self.argv(run.id, run.session_id)
        if run.model and choice.ref != run.model:  # another model than the run's, chosen by the caller
            argv += ["--model", choice.ref]
        if max_parallel is not None:
            argv += ["--max-parallel", str(max_parallel)]
        folder = Path(run.path)
        if self.log_dir is None:
            log = folder / "resume.log"
        else:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            log = self.log_dir / f"resume-{run.id}.log"
        env = {**os.environ, "CMBAGENT_HOME": str(self.home), "PYTHONUNBUFFERED": "1"}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PACKAGE_ROOT), env.get("PYTHONPATH")) if p)
        with open(log, "ab") as out:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True, close_fds=True, env=env,
                                    cwd=str(folder if folder.is_dir() else self.home))
        threading.Thread(target=proc.wait, name=f"reap-resume-{run.id}", daemon=True).start()
        return Execution(run_id=run.id, where="detached", pid=proc.pid, command=argv, log=str(log))
