"""Finding what an action acts on: a run, one of its steps, an approval, a session.

With a session named, a record is looked for in that session only (another session's id
is simply not found); without one, by its id across the user's live sessions.
"""

from __future__ import annotations

from cmbagent_jupyter.core import ApprovalRequest, InvalidInput, NotFound, Run, Session, Step
from cmbagent_jupyter.store import SessionPort, StorePort


def run_in(store: StorePort, run_id: str, session_id: str | None = None) -> tuple[SessionPort, Run]:
    """The run and its session's port."""
    if session_id is None:
        run = store.find_run(run_id)
        return store.session(run.session_id), run
    ss = store.session(session_id)
    return ss, ss.get_run(run_id)


def step_in(ss: SessionPort, run: Run, ref: int | str) -> Step:
    """A step of the run by number, key or id."""
    steps = ss.list_steps(run.id)
    for s in steps:
        if s.id == ref or s.key == ref or (str(ref).isdigit() and s.number == int(ref)):
            return s
    listed = ", ".join(f"{s.number} ({s.key})" for s in steps) or "none yet"
    raise InvalidInput(f"run {run.id} has no step {ref!r}; its steps are {listed}")


def approval_in(store: StorePort, approval_id: str,
                session_id: str | None = None) -> tuple[SessionPort, ApprovalRequest]:
    """The approval and its session's port."""
    if session_id is None:
        approval = store.find_approval(approval_id)
        return store.session(approval.session_id), approval
    ss = store.session(session_id)
    return ss, ss.get_approval(approval_id)


def session_for(store: StorePort, ref: str | None = None, *, create: bool = True,
                choose: str = "name one") -> Session:
    """A session by name or id; a new name makes it when `create`. With no name: the session
    called 'default', else the only one, else a new 'default' when there is none.
    `choose` tells the user how to name a session when several exist."""
    if ref is None:
        sessions = store.list_sessions()
        found = next((s for s in sessions if s.name == "default"), sessions[0] if len(sessions) == 1 else None)
        if found is not None:
            return found
        if sessions:
            raise InvalidInput(f"several sessions exist: {choose}")
        return store.create_session("default")
    try:
        return store.resolve_session(ref)
    except NotFound:
        if not create or ref.startswith("ses_"):
            raise
        return store.create_session(ref)
