"""Is a run's owner still there? Heartbeats and process ids, for `status` and `resume`.

A run marked active whose owner process is gone (killed, crashed, machine rebooted)
is resumable at once; `status` calls it stalled once its heartbeat is also older
than `stall_after_s`. A pid reused by an unrelated later process does not count as
the owner: the owner started before its last heartbeat.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psutil

from cmbagent_jupyter.core.states import ACTIVE_RUN_STATES, RESUMABLE_RUN_STATES
from cmbagent_jupyter.core import RunStatus, utcnow

DEFAULT_HEARTBEAT_S = 5.0
STALL_AFTER_S = 30.0


def owner_alive(pid: int | None, last_seen: datetime | None = None) -> bool:
    if not pid:
        return False
    if pid == os.getpid():
        return True
    try:
        proc = psutil.Process(int(pid))
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        if last_seen is not None and proc.create_time() > last_seen.timestamp() + 2.0:
            return False
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return False
    return True


@dataclass(frozen=True)
class Liveness:
    state: str              # running | stalled | orphaned | paused | ... (the run status otherwise)
    resumable: bool
    heartbeat_age_s: float | None
    owner_alive: bool

    def describe(self) -> str:
        age = "" if self.heartbeat_age_s is None else f", heartbeat {self.heartbeat_age_s:.0f} s ago"
        return f"{self.state}{age}"


def liveness(run: Any, *, stall_after_s: float = STALL_AFTER_S, now: datetime | None = None) -> Liveness:
    """How a run stands, from its record (a `Run` or a row dict of `engine.runs`)."""
    get = (lambda k: run.get(k)) if isinstance(run, dict) else (lambda k: getattr(run, k))
    status = RunStatus(get("status"))
    hb = get("last_heartbeat_at")
    if isinstance(hb, str):
        hb = datetime.fromisoformat(hb)
    now = now or utcnow()
    age = (now - hb).total_seconds() if hb else None
    alive = owner_alive(get("owner_pid"), hb)
    if status in ACTIVE_RUN_STATES and status != RunStatus.paused:
        if alive:
            return Liveness("running", False, age, True)
        stalled = age is None or age > stall_after_s
        return Liveness("stalled" if stalled else "orphaned", True, age, False)
    return Liveness(status.value, status in RESUMABLE_RUN_STATES, age, alive)
