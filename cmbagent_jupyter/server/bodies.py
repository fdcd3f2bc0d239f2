"""What clients may send: one pydantic model per request body and WebSocket message.

Unknown fields are refused rather than ignored, so a typo (`feedbak`) is an error
the user sees instead of a silently lost value.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal, TypeVar, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from cmbagent_jupyter.core import InvalidInput, Quotas, check_id
from cmbagent_jupyter.server.errors import ApiError

MAX_BODY_BYTES = 1024 * 1024


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


def _optional_id(kind: str, value: str | None) -> str | None:
    return None if value is None else check_id(kind, value)


class SessionScoped(Body):
    """A body that may name its session (else the `session_id` query parameter does)."""

    session_id: str | None = None

    @field_validator("session_id")
    @classmethod
    def _session(cls, v: str | None) -> str | None:
        return _optional_id("session", v)


class NoBody(Body):
    """For actions that take no parameters: an empty object (or nothing) is all they accept."""


class CreateSession(Body):
    name: str = Field(min_length=1, max_length=120)
    quotas: Quotas | None = None


class RunControl(SessionScoped):
    """Pause or resume: nothing to say but which session the run is in."""


class CreateBranch(SessionScoped):
    from_step: int = Field(ge=1)
    name: str | None = Field(None, max_length=200)
    instructions: str | None = Field(None, max_length=100_000)
    hypothesis: str | None = Field(None, max_length=10_000)


class Decision(SessionScoped):
    feedback: str | None = Field(None, max_length=100_000)


DecisionName = Literal["approve", "reject", "modify", "retry", "skip", "abort"]


class Resolve(Decision):
    """Any of a gate's options (an on_error gate offers retry, modify, skip, abort)."""

    decision: DecisionName


# ---------------------------------------------------------------- WebSocket messages


class Ping(Body):
    type: Literal["ping"]
    id: str | int | None = None


class RequestState(Body):
    type: Literal["request_state"]
    id: str | int | None = None
    since: int | None = Field(None, ge=0)


class PauseRun(SessionScoped):
    type: Literal["pause"]
    id: str | int | None = None
    run_id: str

    @field_validator("run_id")
    @classmethod
    def _run(cls, v: str) -> str:
        return check_id("run", v)


class ResumeRun(PauseRun):
    type: Literal["resume"]  # type: ignore[assignment]


class ResolveApproval(SessionScoped):
    type: Literal["resolve_approval"]
    id: str | int | None = None
    approval_id: str
    decision: DecisionName
    feedback: str | None = Field(None, max_length=100_000)

    @field_validator("approval_id")
    @classmethod
    def _approval(cls, v: str) -> str:
        return check_id("approval", v)


ClientMessage = Annotated[Union[Ping, RequestState, PauseRun, ResumeRun, ResolveApproval], Field(discriminator="type")]
CLIENT_MESSAGE = TypeAdapter(ClientMessage)

B = TypeVar("B", bound=BaseModel)


def describe(exc: ValidationError) -> str:
    """One line per problem, naming the field: `from_step: Input should be a valid integer`."""
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(x) for x in err["loc"]) or "body"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        elif err["type"] == "union_tag_invalid" or err["type"] == "union_tag_not_found":
            msg = "unknown message type; expected ping, request_state, pause, resume or resolve_approval"
        parts.append(f"{where}: {msg.removeprefix('Value error, ')}")
    return "; ".join(parts)


def parse_json(raw: bytes | str, what: str = "request body") -> Any:
    if len(raw) > MAX_BODY_BYTES:
        raise ApiError(413, f"{what} is {len(raw)} bytes; at most {MAX_BODY_BYTES} are accepted", "too_large")
    if not raw or not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"{what} is not valid JSON: {exc}", "malformed_json") from None


def parse_body(model: type[B], raw: bytes | str) -> B:
    data = parse_json(raw)
    if not isinstance(data, dict):
        raise ApiError(400, f"request body must be a JSON object, not {type(data).__name__}", "invalid_body")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ApiError(400, describe(exc), "invalid_body") from None


def parse_message(raw: bytes | str) -> Ping | RequestState | PauseRun | ResumeRun | ResolveApproval:
    data = parse_json(raw, "message")
    if not isinstance(data, dict):
        raise ApiError(400, "a message must be a JSON object with a `type`", "invalid_message")
    try:
        return CLIENT_MESSAGE.validate_python(data)
    except ValidationError as exc:
        raise ApiError(400, describe(exc), "invalid_message") from None


def check_path_id(kind: str, value: str) -> str:
    """An id taken from a URL path or query: malformed is a 400 naming the id."""
    try:
        return check_id(kind, value)
    except InvalidInput as exc:
        raise ApiError(400, str(exc), "malformed_id") from None
