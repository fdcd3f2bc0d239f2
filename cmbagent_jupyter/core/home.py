"""Where a user's data lives: `CMBAGENT_HOME` (default ~/.cmbagent) and its layout.

    store.duckdb                       the store service's database
    run/store.json, run/store.sock     the live service's address and token (0600)
    logs/store.log                     the service's log
    sessions/<session_id>/session.json
    sessions/<session_id>/runs/<run_id>/{run.json, planning/, control/, context/}
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from cmbagent_jupyter.core.errors import HomeError
from cmbagent_jupyter.core.ids import check_id


def home_path(home: str | os.PathLike | None = None) -> Path:
    raw = home or os.environ.get("CMBAGENT_HOME") or "~/.cmbagent"
    return Path(raw).expanduser().resolve()


def ensure_home(home: str | os.PathLike | None = None) -> Path:
    root = home_path(home)
    for sub in ("", "run", "logs", "sessions"):
        d = root / sub
        try:
            d.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise HomeError(exc.errno or errno.EACCES, f"CMBAGENT_HOME {root} is not usable: cannot create {d} ({exc.strerror})") from exc
    try:
        os.chmod(root / "run", 0o700)
    except OSError:
        pass
    if not os.access(root, os.W_OK) or not os.access(root / "run", os.W_OK):
        raise HomeError(errno.EACCES, f"CMBAGENT_HOME {root} is read-only; set CMBAGENT_HOME to a writable directory")
    return root


def session_dir(root: Path, session_id: str) -> Path:
    return root / "sessions" / check_id("session", session_id)


def run_dir(root: Path, session_id: str, run_id: str) -> Path:
    return session_dir(root, session_id) / "runs" / check_id("run", run_id)


def is_inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
        return True
    except ValueError:
        return False


def dir_size_mb(path: Path) -> float:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_size
            except OSError:
                pass
    return total / (1024 * 1024)
