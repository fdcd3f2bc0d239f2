"""Pydantic records shared by every layer: the store, the engine, widgets, REST, MCP.

One `Event` envelope carries every change; its JSON Schema is exported by
`cmbagent schema events` and versioned by `EVENT_SCHEMA_VERSION`.
"""

from __future__ import annotations

import os
import re
import threading
import unicodedata
from datetime import datetime, timezone
from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

EVENT_SCHEMA_VERSION = 1

ID_PREFIXES = {
    "session": "ses",
    "run": "run",
    "step": "stp",
    "attempt": "att",
    "event": "evt",
    "checkpoint": "ckp",
    "approval": "apr",
    "cost": "cst",
    "branch": "brn",
    "decision": "pol",
    "transition": "trn",
    "request": "req",
}
_ID_RE = re.compile(r"^(?P<prefix>[a-z]{3})_(?P<hex>[0-9a-f]{12,32})$")


class InvalidInput(ValueError):
    """Bad input from a user or a client, with a message that says what was wrong."""


class _RandomBytes:
    """The operating system's random bytes, fetched a few kilobytes at a time: a run makes
    an id for every event and checkpoint, and a system call for each (which also lets
    other threads take the interpreter) costs more than the rest of making it."""

    CHUNK = 4000

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pool = b""
        self._at = 0
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        self._lock = threading.Lock()
        self._pool, self._at = b"", 0  # a child never hands out its parent's ids

    def take(self, n: int) -> bytes:
        with self._lock:
            if self._at + n > len(self._pool):
                self._pool, self._at = os.urandom(max(self.CHUNK, n)), 0
            out = self._pool[self._at:self._at + n]
            self._at += n
            return out


_RANDOM = _RandomBytes()


def new_id(kind: str) -> str:
    """A fresh id: the kind's prefix and 80 random bits in hex."""
    return f"{ID_PREFIXES[kind]}_{_RANDOM.take(10).hex()}"


def new_ids(kind: str, n: int) -> list[str]:
    """`n` fresh ids of one kind (`new_id`), from one draw of random bytes."""
    prefix, raw = f"{ID_PREFIXES[kind]}_", _RANDOM.take(10 * n).hex()
    return [prefix + raw[i:i + 20] for i in range(0, 20 * n, 20)]


def check_id(kind: str, value: Any) -> str:
    """Validate an id of the given kind; the error names the kind and the value."""
    prefix = ID_PREFIXES[kind]
    if not isinstance(value, str):
        raise InvalidInput(f"{kind} id must be a string like '{prefix}_0123456789abcdef', got {type(value).__name__}")
    m = _ID_RE.match(value)
    if not m or m.group("prefix") != prefix:
        shown = value if len(value) <= 64 else value[:61] + "..."
        raise InvalidInput(f"malformed {kind} id {shown!r}: expected '{prefix}_' followed by 12-32 lowercase hex digits")
    return value


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def validate_name(value: str, what: str = "name", max_len: int = 120) -> str:
    """Names reach file systems, shells and HTML: refuse what could escape any of them."""
    if not isinstance(value, str):
        raise InvalidInput(f"{what} must be text")
    value = unicodedata.normalize("NFC", value).strip()
    if not value:
        raise InvalidInput(f"{what} must not be empty")
    if len(value) > max_len:
        raise InvalidInput(f"{what} is {len(value)} characters long; at most {max_len} are allowed")
    bad = [c for c in value if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp")]
    if bad:
        raise InvalidInput(f"{what} contains control characters ({', '.join(repr(c) for c in bad[:3])})")
    if "/" in value or "\\" in value or value in (".", "..") or value.startswith("."):
        raise InvalidInput(f"{what} {value!r} must not contain path separators or start with '.'")
    return value


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid", use_enum_values=False)


# ---------------------------------------------------------------- states


class SessionStatus(str, Enum):
    active = "active"
    archived = "archived"
    deleted = "deleted"


class RunStatus(str, Enum):
    draft = "draft"
    planning = "planning"
    executing = "executing"
    paused = "paused"
    waiting_approval = "waiting_approval"
    interrupted = "interrupted"
    completed = "completed"
    failed = "failed"
    cancelled = "cancelled"


class StepStatus(str, Enum):
    pending = "pending"
    running = "running"
    paused = "paused"
    waiting_approval = "waiting_approval"
    completed = "completed"
    failed = "failed"
    skipped = "skipped"
    cancelled = "cancelled"


class RunMode(str, Enum):
    one_shot = "one_shot"
    deep_research = "deep_research"
    planning_and_control = "planning_and_control"
    control = "control"


class CheckpointKind(str, Enum):
    step_complete = "step_complete"
    timed = "timed"
    manual = "manual"
    error = "error"
    emergency = "emergency"


class ApprovalStatus(str, Enum):
    pending = "pending"
    approved = "approved"
    rejected = "rejected"
    modified = "modified"
    expired = "expired"


# ---------------------------------------------------------------- records


class Quotas(Record):
    max_cost_usd: float = Field(100.0, ge=0)
    max_disk_mb: float = Field(10_240.0, ge=0)
    max_concurrent_runs: int = Field(3, ge=0)
    max_memory_mb: float = Field(4_096.0, ge=0)


class Session(Record):
    id: str
    name: str
    status: SessionStatus = SessionStatus.active
    quotas: Quotas = Field(default_factory=Quotas)
    created_at: datetime
    updated_at: datetime
    path: str


class Run(Record):
    id: str
    session_id: str
    task: str
    mode: RunMode = RunMode.deep_research
    status: RunStatus = RunStatus.draft
    model: str | None = None
    config: dict[str, Any] = Field(default_factory=dict)
    parent_run_id: str | None = None
    branch_from_step: int | None = None
    created_at: datetime
    started_at: datetime | None = None
    completed_at: datetime | None = None
    last_heartbeat_at: datetime | None = None
    checkpoint_interval_s: float = 600.0
    error: str | None = None
    owner_pid: int | None = None
    pause_requested: bool = False
    path: str


class Step(Record):
    id: str
    session_id: str
    run_id: str
    number: int
    key: str
    agent: str
    status: StepStatus = StepStatus.pending
    description: str = ""
    depends_on: list[str] = Field(default_factory=list)
    progress: float = 0.0
    inputs: dict[str, Any] = Field(default_factory=dict)
    outputs: dict[str, Any] = Field(default_factory=dict)
    error: str | None = None
    attempts: int = 0
    started_at: datetime | None = None
    completed_at: datetime | None = None


class StepAttempt(Record):
    id: str
    session_id: str
    run_id: str
    step_id: str
    attempt: int
    status: StepStatus
    error_type: str | None = None
    error: str | None = None
    traceback: str | None = None
    output: str | None = None
    feedback: str | None = None
    cost_usd: float = 0.0
    started_at: datetime
    ended_at: datetime | None = None


class Checkpoint(Record):
    id: str
    session_id: str
    run_id: str
    step_id: str | None = None
    kind: CheckpointKind
    context: dict[str, Any] = Field(default_factory=dict)
    pickle_path: str | None = None
    created_at: datetime


class StateTransition(Record):
    id: str
    session_id: str
    entity_type: Literal["session", "run", "step"]
    entity_id: str
    from_state: str | None
    to_state: str
    reason: str | None = None
    actor: str | None = None
    at: datetime


class ApprovalRequest(Record):
    id: str
    session_id: str
    run_id: str
    step_id: str | None = None
    kind: str
    status: ApprovalStatus = ApprovalStatus.pending
    request: dict[str, Any] = Field(default_factory=dict)
    options: list[str] = Field(default_factory=lambda: ["approve", "reject", "modify"])
    decision: str | None = None
    feedback: str | None = None
    resolved_by: str | None = None
    created_at: datetime
    resolved_at: datetime | None = None
    timeout_at: datetime | None = None
    default_action: str | None = None


class CostRecord(Record):
    id: str
    session_id: str
    run_id: str | None = None
    step_id: str | None = None
    agent: str | None = None
    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cost_usd: float = 0.0
    priced: bool = True
    at: datetime


class Branch(Record):
    id: str
    session_id: str
    parent_run_id: str
    parent_step: int
    child_run_id: str
    name: str
    hypothesis: str | None = None
    created_at: datetime


class PolicyDecision(Record):
    id: str
    session_id: str | None = None
    run_id: str | None = None
    policy: str
    action: str
    allowed: bool
    reason: str | None = None
    input: dict[str, Any] = Field(default_factory=dict)
    at: datetime


class AgentRecord(Record):
    name: str
    version: str = "1.0.0"
    role: str
    instructions: str
    source: str = "builtin"
    tags: list[str] = Field(default_factory=list)
    capabilities: list[str] = Field(default_factory=list)
    enabled: bool = True


# ---------------------------------------------------------------- events


class EventType(str, Enum):
    connected = "connected"
    reconnected = "reconnected"
    heartbeat = "heartbeat"
    pong = "pong"
    error = "error"
    session_created = "session.created"
    session_state_changed = "session.state_changed"
    workflow_created = "workflow.created"
    workflow_started = "workflow.started"
    workflow_state_changed = "workflow.state_changed"
    workflow_paused = "workflow.paused"
    workflow_resumed = "workflow.resumed"
    workflow_completed = "workflow.completed"
    workflow_failed = "workflow.failed"
    workflow_heartbeat = "workflow.heartbeat"
    step_started = "step.started"
    step_progress = "step.progress"
    step_completed = "step.completed"
    step_failed = "step.failed"
    step_state_changed = "step.state_changed"
    dag_created = "dag.created"
    dag_updated = "dag.updated"
    dag_node_status_changed = "dag.node_status_changed"
    agent_message = "agent.message"
    agent_thinking = "agent.thinking"
    agent_tool_call = "agent.tool_call"
    approval_requested = "approval.requested"
    approval_received = "approval.received"
    retry_started = "retry.started"
    retry_backoff = "retry.backoff"
    retry_succeeded = "retry.succeeded"
    retry_exhausted = "retry.exhausted"
    cost_update = "cost.update"
    budget_alert = "budget.alert"
    metric_update = "metric.update"
    checkpoint_saved = "checkpoint.saved"
    file_created = "file.created"
    file_updated = "file.updated"
    policy_decision = "policy.decision"
    log = "log"


class Event(Record):
    """The one envelope: store rows, widget messages, WebSocket frames and MCP results."""

    schema_version: int = EVENT_SCHEMA_VERSION
    id: str = Field(default_factory=lambda: new_id("event"))
    type: EventType
    session_id: str
    run_id: str | None = None
    seq: int | None = Field(None, description="monotonic per run (per session for session-level events); set by the store")
    gseq: int | None = Field(None, description="store-wide order; set by the store, used to replay with since=")
    ts: datetime = Field(default_factory=utcnow)
    payload: dict[str, Any] = Field(default_factory=dict)

    @field_validator("session_id")
    @classmethod
    def _session_id(cls, v: str) -> str:
        return check_id("session", v)

    @field_validator("run_id")
    @classmethod
    def _run_id(cls, v: str | None) -> str | None:
        return None if v is None else check_id("run", v)


def event_json_schema() -> dict[str, Any]:
    schema = Event.model_json_schema()
    schema["$id"] = f"https://cmbagent-jupyter/schemas/event/v{EVENT_SCHEMA_VERSION}.json"
    schema["title"] = "cmbagent-jupyter Event"
    return schema


RECORD_TYPES: dict[str, type[Record]] = {
    "session": Session,
    "run": Run,
    "step": Step,
    "attempt": StepAttempt,
    "checkpoint": Checkpoint,
    "transition": StateTransition,
    "approval": ApprovalRequest,
    "cost": CostRecord,
    "branch": Branch,
    "decision": PolicyDecision,
    "agent": AgentRecord,
    "event": Event,
}
