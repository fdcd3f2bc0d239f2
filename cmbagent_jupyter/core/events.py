"""The one event envelope, and one payload model per event type.

Every change (a run moving, a step finishing, an approval asked and answered, a cost
recorded, an agent's message) is an `Event`: the same JSON goes to the store, the
widgets, the WebSocket, MCP and `--follow`. The envelope carries the payload as the
JSON object it is on the wire; `PAYLOADS` says what each type's payload holds, and
`event_json_schema()` (`cmbagent schema events`) is generated from them, one variant
per type, so the TypeScript types of the front ends are generated too. A payload may
carry more than its model names (readers take what they know); what it names must
have the type given. Events a client appends are checked against their model.
"""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, create_model, field_validator

from cmbagent_jupyter.core.errors import InvalidInput
from cmbagent_jupyter.core.ids import check_id, new_id, utcnow
from cmbagent_jupyter.core.records import Record

EVENT_SCHEMA_VERSION = 1


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


# ---------------------------------------------------------------- payloads


class Payload(BaseModel):
    """A payload: the fields its type always or sometimes carries."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)


class Empty(Payload):
    pass


class Transition(Payload):
    """A move of a run or a session from one state to another."""

    from_: str | None = Field(None, alias="from")
    to: str | None = None
    reason: str | None = None
    actor: str | None = None
    error: str | None = None
    history: bool | None = Field(None, description="the move's entry in the state history")
    pause_requested: bool | None = None
    recovered: bool | None = None


class SessionCreated(Payload):
    name: str
    recovered: bool | None = None


class WorkflowCreated(Payload):
    task: str
    mode: str


class StepMove(Payload):
    """A step moving from one state to another."""

    step_id: str
    key: str | None = None
    number: int | None = None
    agent: str | None = None
    from_: str | None = Field(None, alias="from")
    to: str | None = None
    reason: str | None = None
    actor: str | None = None
    error: str | None = None
    journal_seq: int | None = Field(None, description="the step-journal record that made the move")
    checkpoint_id: str | None = Field(None, description="the checkpoint of the completions of that record")
    pickle_path: str | None = None


class StepProgress(Payload):
    step_id: str
    progress: float
    message: str | None = None


class DagCreated(Payload):
    dag: dict[str, Any] | None = None
    mermaid: str | None = None
    branch_of: str | None = None
    from_step: int | None = None


class NodeStatus(Payload):
    step_id: str | None = None
    key: str | None = None
    from_: str | None = Field(None, alias="from")
    to: str


class AgentMessage(Payload):
    agent: str | None = None
    step: str | None = None
    step_id: str | None = None
    content: str = ""
    truncated: bool = False
    tool_calls: list[str] = Field(default_factory=list)


class ToolCall(Payload):
    agent: str | None = None
    step_id: str | None = None
    tool: str | None = None
    arguments: dict[str, Any] | None = None
    result: Any = None
    error: str | None = None


class ApprovalRequested(Payload):
    approval_id: str
    kind: str
    step_id: str | None = None
    options: list[str]
    request: dict[str, Any] = Field(default_factory=dict)
    timeout_at: str | None = None
    resume_status: str | None = None


class ApprovalReceived(Payload):
    approval_id: str
    decision: str
    status: str
    feedback: str | None = None
    resolved_by: str | None = None
    kind: str | None = None
    step_id: str | None = None


class RetryStarted(Payload):
    step_id: str
    attempt: int
    feedback: str | None = None


class RetryBackoff(Payload):
    agent: str | None = None
    step: str | None = None
    attempt: int
    delay_s: float
    error: str | None = None


class RetryEnded(Payload):
    step_id: str
    attempt: int
    error: str | None = None


class CostLine(Payload):
    agent: str | None = None
    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    step_id: str | None = None


class CostUpdate(Payload):
    records: list[CostLine]
    cost_usd: float


class BudgetAlert(Payload):
    scope: str
    threshold: float
    spent_usd: float
    limit_usd: float


class MetricUpdate(Payload):
    name: str
    value: float


class CheckpointSaved(Payload):
    checkpoint_id: str
    kind: str
    step_id: str | None = None
    pickle_path: str | None = None


class FileChanged(Payload):
    path: str
    kind: str | None = None
    size: int | None = None
    step_id: str | None = None


class PolicyDecided(Payload):
    policy: str
    action: str
    allowed: bool
    reason: str | None = None


class LogLine(Payload):
    level: str = "info"
    message: str = ""


class ErrorPayload(Payload):
    message: str


E = EventType

PAYLOADS: dict[EventType, type[Payload]] = {
    E.connected: Empty, E.reconnected: Empty, E.heartbeat: Empty, E.pong: Empty, E.error: ErrorPayload,
    E.session_created: SessionCreated, E.session_state_changed: Transition,
    E.workflow_created: WorkflowCreated, E.workflow_started: Transition, E.workflow_state_changed: Transition,
    E.workflow_paused: Transition, E.workflow_resumed: Transition, E.workflow_completed: Transition,
    E.workflow_failed: Transition, E.workflow_heartbeat: Empty,
    E.step_started: StepMove, E.step_progress: StepProgress, E.step_completed: StepMove, E.step_failed: StepMove,
    E.step_state_changed: StepMove,
    E.dag_created: DagCreated, E.dag_updated: DagCreated, E.dag_node_status_changed: NodeStatus,
    E.agent_message: AgentMessage, E.agent_thinking: AgentMessage, E.agent_tool_call: ToolCall,
    E.approval_requested: ApprovalRequested, E.approval_received: ApprovalReceived,
    E.retry_started: RetryStarted, E.retry_backoff: RetryBackoff, E.retry_succeeded: RetryEnded,
    E.retry_exhausted: RetryEnded,
    E.cost_update: CostUpdate, E.budget_alert: BudgetAlert, E.metric_update: MetricUpdate,
    E.checkpoint_saved: CheckpointSaved, E.file_created: FileChanged, E.file_updated: FileChanged,
    E.policy_decision: PolicyDecided, E.log: LogLine,
}


# ---------------------------------------------------------------- the envelope


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

    def typed(self) -> Payload:
        """The payload as its type's model."""
        return PAYLOADS[self.type].model_validate(self.payload)


def check_payload(type: EventType | str, payload: Any) -> dict[str, Any]:
    """`payload` if it is what events of `type` carry; InvalidInput naming the type and the field if not."""
    try:
        kind = EventType(type)
    except ValueError:
        raise InvalidInput(f"unknown event type {type!r}") from None
    if not isinstance(payload, dict):
        raise InvalidInput(f"the payload of a {kind.value} event must be an object")
    try:
        PAYLOADS[kind].model_validate(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "payload"
        raise InvalidInput(f"{kind.value} event: payload field {where!r}: {first['msg']}") from None
    return payload


def unknown_fields(type: EventType | str, payload: dict[str, Any]) -> set[str]:
    """The payload's keys its type's model does not name (a test keeps emitters and models in step)."""
    model = PAYLOADS[EventType(type)]
    named = {f.alias or name for name, f in model.model_fields.items()}
    return set(payload) - named


def _variant(kind: EventType) -> type[BaseModel]:
    model = PAYLOADS[kind]
    name = "".join(part.capitalize() for part in kind.value.replace(".", "_").split("_")) + "Event"
    return create_model(name, __base__=_EnvelopeSchema, type=(Literal[kind.value], ...), payload=(model, ...))


class _EnvelopeSchema(BaseModel):
    """The envelope's fields, for the schema (its payload and type are set per variant)."""

    schema_version: int = EVENT_SCHEMA_VERSION
    id: str
    session_id: str
    run_id: str | None = None
    seq: int | None = None
    gseq: int | None = None
    ts: datetime


def event_json_schema() -> dict[str, Any]:
    """The JSON Schema of the envelope: one variant per event type, told apart by `type`."""
    variants = tuple(_variant(kind) for kind in EventType)
    union = Annotated[Union[variants], Field(discriminator="type")]  # type: ignore[valid-type]
    schema = TypeAdapter(union).json_schema(by_alias=True)
    schema["$id"] = f"https://cmbagent-jupyter/schemas/event/v{EVENT_SCHEMA_VERSION}.json"
    schema["title"] = "cmbagent-jupyter Event"
    schema["x-event-schema-version"] = EVENT_SCHEMA_VERSION
    return schema
