"""Running a step's Python code: a subprocess in the step's working directory.

The executor agent calls `run_python` as a tool; the engine reads the structured
`ExecutionResult` the tool leaves behind (never the model's paraphrase of it). Output
files are the files under the working directory that the script itself wrote (seen
by an audit hook in the child, so steps running in parallel in one folder are each
credited with their own); figures are the image files among them. Cancelling the
await kills the process group.
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import os
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

FIGURE_SUFFIXES = {".png", ".jpg", ".jpeg", ".svg", ".pdf", ".gif"}
MAX_CAPTURE = 20_000
BOOTSTRAP = Path(__file__).with_name("_step_bootstrap.py")


@dataclass
class ExecutionResult:
    filename: str
    exit_code: int | None
    stdout: str
    stderr: str
    files: list[str] = field(default_factory=list)
    figures: list[str] = field(default_factory=list)
    duration_s: float = 0.0
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out

    def summary(self) -> str:
        """What the model (and the next attempt of the engineer) is told."""
        state = "succeeded" if self.ok else ("timed out" if self.timed_out else f"failed with exit code {self.exit_code}")
        parts = [f"Execution of {self.filename} {state}."]
        if self.stdout.strip():
            parts.append("stdout:\n" + _tail(self.stdout, 4000))
        if self.stderr.strip() and not self.ok:
            parts.append("stderr:\n" + _tail(self.stderr, 4000))
        if self.files:
            parts.append("files written: " + ", ".join(self.files))
        return "\n".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {"filename": self.filename, "exit_code": self.exit_code, "stdout": self.stdout, "stderr": self.stderr,
                "files": self.files, "figures": self.figures, "timed_out": self.timed_out}


def _tail(text: str, n: int) -> str:
    return text if len(text) <= n else "...\n" + text[-n:]


async def run_python_file(path: Path, *, cwd: Path, timeout_s: float = 600.0,
                          env: dict[str, str] | None = None) -> ExecutionResult:
    cwd.mkdir(parents=True, exist_ok=True)
    fd, report = tempfile.mkstemp(prefix=".written_", suffix=".json", dir=cwd)
    os.close(fd)
    full_env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONUNBUFFERED": "1", "PYTHONHASHSEED": "0", **(env or {})}
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(BOOTSTRAP), str(path), report, cwd=str(cwd), env=full_env, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, start_new_session=True,
        preexec_fn=_die_with_parent)
    timed_out = False
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout=timeout_s)
    except asyncio.TimeoutError:
        timed_out = True
        _kill(proc)
        out, err = await proc.communicate()
    except BaseException:
        _kill(proc)
        Path(report).unlink(missing_ok=True)
        raise
    changed = _written_files(Path(report), cwd)
    return ExecutionResult(
        filename=path.name, exit_code=proc.returncode, stdout=out.decode(errors="replace")[-MAX_CAPTURE:],
        stderr=err.decode(errors="replace")[-MAX_CAPTURE:], files=changed,
        figures=[f for f in changed if Path(f).suffix.lower() in FIGURE_SUFFIXES],
        duration_s=time.monotonic() - started, timed_out=timed_out)


def _die_with_parent() -> None:
    """In the child: be killed when the engine's process dies, so a step never outlives its run's owner."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except OSError:
            pass


def _written_files(report: Path, cwd: Path) -> list[str]:
    try:
        paths = json.loads(report.read_text() or "[]")
    except (OSError, ValueError):
        paths = []
    finally:
        report.unlink(missing_ok=True)
    root = cwd.resolve()
    out = set()
    for p in paths:
        path = Path(p)
        try:
            rel = path.resolve().relative_to(root)
        except (OSError, ValueError):
            continue
        if path.is_file() and not rel.name.startswith(".written_") and "__pycache__" not in rel.parts:
            out.add(str(rel))
    return sorted(out)


def _kill(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run_python_tool(codebase: Path, workdir: Path, results: list[ExecutionResult], *, timeout_s: float = 600.0,
                    allowed: Callable[[str], bool] | None = None):
    """The executor's `run_python` tool, bound to one step's folders; results land in `results`."""

    async def run_python(filename: str) -> str:
        """Run a Python file of the codebase (e.g. step_3.py) and report its exit code, output and new files."""
        name = Path(filename).name
        target = codebase / name
        if not target.is_file():
            return f"No file {name} in the codebase; files: {', '.join(sorted(p.name for p in codebase.glob('*.py')))}"
        if allowed is not None and not allowed(name):
            return f"{name} is not the file of this step; run the file you were given."
        result = await run_python_file(target, cwd=workdir, timeout_s=timeout_s)
        results.append(result)
        return result.summary()

    return run_python
