"""Resuming a run from the server: the engine's own `cmbagent resume RUN_ID`, detached.

A run outlives the request that resumed it and the Jupyter server too, so it runs in
its own process group with its output in the home's log folder; the server keeps no
handle on it beyond reaping it when it ends.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parents[2]


def default_resume_command() -> list[str]:
    """`cmbagent resume {run_id}` from this interpreter's environment."""
    script = Path(sys.executable).parent / "cmbagent"
    if script.exists():
        return [str(script), "resume", "{run_id}"]
    entry = "import sys; from cmbagent_jupyter.cli import main; sys.exit(main())"
    return [sys.executable, "-c", entry, "resume", "{run_id}"]


@dataclass(frozen=True)
class Launched:
    pid: int
    command: list[str]
    log: str


class ResumeLauncher:
    def __init__(self, home: Path, command: list[str] | None = None):
        self.home = home
        self.command = command or default_resume_command()

    def argv(self, run_id: str, session_id: str) -> list[str]:
        return [part.format(run_id=run_id, session_id=session_id) for part in self.command]

    def launch(self, run_id: str, session_id: str) -> Launched:
        argv = self.argv(run_id, session_id)
        log_dir = self.home / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        log = log_dir / f"resume-{run_id}.log"
        env = {**os.environ, "CMBAGENT_HOME": str(self.home), "PYTHONUNBUFFERED": "1"}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PACKAGE_ROOT), env.get("PYTHONPATH")) if p)
        with open(log, "ab") as out:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True, close_fds=True, env=env, cwd=str(self.home))
        threading.Thread(target=proc.wait, name=f"reap-resume-{run_id}", daemon=True).start()
        return Launched(proc.pid, argv, str(log))
