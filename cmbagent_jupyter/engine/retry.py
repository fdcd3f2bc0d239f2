"""Retries that learn: classify a failure, back off from transient ones, and give the
next attempt what went wrong before (errors, tracebacks, outputs, human feedback).

Transient provider errors (rate limits, timeouts, dropped connections, 5xx) are
retried in place with exponential backoff and jitter (tenacity), capped at 60 s.
Code and validation errors are retried as new attempts of the step, each prompt
carrying the earlier attempts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Awaitable, Callable, TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt, wait_exponential_jitter

T = TypeVar("T")


class FailureKind(str, Enum):
    transient = "transient"
    code = "code"
    validation = "validation"
    policy = "policy"


class ErrorCategory(str, Enum):
    file_not_found = "file_not_found"
    api_error = "api_error"
    rate_limit = "rate_limit"
    timeout = "timeout"
    import_error = "import_error"
    type = "type"
    value = "value"
    key = "key"
    attribute = "attribute"
    index = "index"
    permission = "permission"
    connection = "connection"
    memory = "memory"
    syntax = "syntax"
    name = "name"
    zero_division = "zero_division"
    assertion = "assertion"
    validation = "validation"
    unknown = "unknown"


_BY_EXCEPTION = {
    "FileNotFoundError": ErrorCategory.file_not_found,
    "ModuleNotFoundError": ErrorCategory.import_error,
    "ImportError": ErrorCategory.import_error,
    "TypeError": ErrorCategory.type,
    "ValueError": ErrorCategory.value,
    "KeyError": ErrorCategory.key,
    "AttributeError": ErrorCategory.attribute,
    "IndexError": ErrorCategory.index,
    "PermissionError": ErrorCategory.permission,
    "ConnectionError": ErrorCategory.connection,
    "ConnectionResetError": ErrorCategory.connection,
    "ConnectionRefusedError": ErrorCategory.connection,
    "MemoryError": ErrorCategory.memory,
    "TimeoutError": ErrorCategory.timeout,
    "SyntaxError": ErrorCategory.syntax,
    "IndentationError": ErrorCategory.syntax,
    "NameError": ErrorCategory.name,
    "ZeroDivisionError": ErrorCategory.zero_division,
    "AssertionError": ErrorCategory.assertion,
    "ValidationError": ErrorCategory.validation,
    "JSONDecodeError": ErrorCategory.validation,
    "RateLimitError": ErrorCategory.rate_limit,
    "APITimeoutError": ErrorCategory.timeout,
    "APIConnectionError": ErrorCategory.connection,
    "InternalServerError": ErrorCategory.api_error,
    "ServiceUnavailableError": ErrorCategory.api_error,
    "APIStatusError": ErrorCategory.api_error,
}

SUGGESTIONS = {
    ErrorCategory.file_not_found: "Check the path: write outputs under the step's data directory and read inputs "
                                  "from paths earlier steps reported; create directories before writing.",
    ErrorCategory.import_error: "Use only installed packages (numpy, matplotlib, the standard library) or guard the "
                                "import with a fallback.",
    ErrorCategory.type: "Check argument types and array shapes at the failing line.",
    ErrorCategory.value: "Check the values passed at the failing line (ranges, shapes, empty inputs).",
    ErrorCategory.key: "The dictionary key does not exist: print the available keys or use .get().",
    ErrorCategory.attribute: "The object lacks that attribute: check its type and the library's current API.",
    ErrorCategory.index: "An index is out of range: check lengths before indexing.",
    ErrorCategory.permission: "Write only inside the step's working directory.",
    ErrorCategory.memory: "Process the data in chunks or use smaller arrays.",
    ErrorCategory.syntax: "The code does not parse: return one complete, valid Python program.",
    ErrorCategory.name: "A name is used before it is defined: define or import it.",
    ErrorCategory.zero_division: "Guard the division against zero.",
    ErrorCategory.timeout: "The call took too long: reduce the work or retry later.",
    ErrorCategory.rate_limit: "The provider is rate limiting: wait and retry.",
    ErrorCategory.connection: "The connection dropped: retry.",
    ErrorCategory.api_error: "The provider failed: retry.",
    ErrorCategory.validation: "The answer did not match the expected structure: follow the schema exactly.",
    ErrorCategory.assertion: "An assertion failed: check the assumption it tests.",
}

_TRANSIENT = {ErrorCategory.rate_limit, ErrorCategory.timeout, ErrorCategory.connection, ErrorCategory.api_error}
_TRACE_LAST = re.compile(r"^(?P<type>[A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt))\s*:?\s*(?P<msg>.*)$", re.M)


def _exception_names(exc: BaseException) -> list[str]:
    return [c.__name__ for c in type(exc).__mro__]


def categorize_exception(exc: BaseException) -> ErrorCategory:
    for name in _exception_names(exc):
        if name in _BY_EXCEPTION:
            return _BY_EXCEPTION[name]
    status = getattr(exc, "status_code", None) or getattr(exc, "status", None)
    if isinstance(status, int):
        if status == 429:
            return ErrorCategory.rate_limit
        if status >= 500:
            return ErrorCategory.api_error
    text = str(exc).lower()
    if "rate limit" in text or "too many requests" in text:
        return ErrorCategory.rate_limit
    return ErrorCategory.unknown


def is_transient(exc: BaseException) -> bool:
    """Provider hiccups worth retrying in place; a code or validation error is not."""
    if getattr(exc, "transient", False):
        return True
    return categorize_exception(exc) in _TRANSIENT


def categorize_traceback(text: str) -> tuple[str | None, ErrorCategory, str]:
    """(exception type, category, message) from the last exception line of a traceback."""
    matches = list(_TRACE_LAST.finditer(text or ""))
    if not matches:
        lines = (text or "").strip().splitlines()
        return None, ErrorCategory.unknown, lines[-1] if lines else ""
    m = matches[-1]
    etype = m.group("type").split(".")[-1]
    return etype, _BY_EXCEPTION.get(etype, ErrorCategory.unknown), m.group("msg").strip()


@dataclass
class AttemptFailure:
    attempt: int
    kind: FailureKind
    category: ErrorCategory
    error_type: str | None
    message: str
    traceback: str | None = None
    output: str | None = None
    code: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"attempt": self.attempt, "kind": self.kind.value, "category": self.category.value,
                "error_type": self.error_type, "message": self.message, "traceback": self.traceback,
                "output": self.output}


def failure_from_execution(attempt: int, stderr: str, stdout: str = "", code: str | None = None) -> AttemptFailure:
    etype, category, message = categorize_traceback(stderr)
    return AttemptFailure(attempt, FailureKind.code, category, etype, message or "the program failed",
                          traceback=stderr[-8000:], output=stdout[-4000:], code=code)


def failure_from_exception(attempt: int, exc: BaseException, kind: FailureKind | None = None) -> AttemptFailure:
    category = categorize_exception(exc)
    if kind is None:
        kind = FailureKind.transient if is_transient(exc) else (
            FailureKind.validation if category == ErrorCategory.validation else FailureKind.code)
    return AttemptFailure(attempt, kind, category, type(exc).__name__, str(exc)[:4000])


@dataclass
class RetryContext:
    """What a retried step is told: earlier failures and human guidance."""

    failures: list[AttemptFailure] = field(default_factory=list)
    feedback: list[str] = field(default_factory=list)

    def prompt_section(self, max_chars: int = 12_000) -> str:
        if not self.failures and not self.feedback:
            return ""
        parts = []
        if self.failures:
            parts.append(f"This step has been attempted {len(self.failures)} time(s) before and failed. "
                         "Do not repeat the same mistake.")
            for f in self.failures[-3:]:
                parts.append(f"--- Attempt {f.attempt}: {f.error_type or f.category.value}: {f.message}")
                if f.traceback:
                    parts.append("Traceback (last lines):\n" + "\n".join(f.traceback.strip().splitlines()[-15:]))
                if f.output:
                    parts.append("Output before the failure:\n" + f.output.strip()[-1500:])
                hint = SUGGESTIONS.get(f.category)
                if hint:
                    parts.append(f"Suggestion: {hint}")
        if self.feedback:
            parts.append("Guidance from the user (follow it):\n" + "\n".join(f"- {t}" for t in self.feedback))
        text = "\n".join(parts)
        return text if len(text) <= max_chars else text[-max_chars:]


def backoff_seconds(attempt: int, cap: float = 60.0) -> float:
    """min(2^n, 60) seconds before retry n (n from 1), before jitter."""
    return float(min(2 ** attempt, cap))


async def call_with_backoff(
    func: Callable[[], Awaitable[T]],
    *,
    max_attempts: int = 5,
    initial: float = 1.0,
    cap: float = 60.0,
    on_backoff: Callable[[int, float, BaseException], None] | None = None,
) -> T:
    """Run `func`, retrying transient errors with exponential backoff and jitter."""

    def before_sleep(state: RetryCallState) -> None:
        if on_backoff is not None and state.outcome is not None:
            exc = state.outcome.exception()
            delay = state.next_action.sleep if state.next_action else 0.0
            on_backoff(state.attempt_number, delay, exc)

    retrying = AsyncRetrying(
        retry=retry_if_exception(is_transient),
        wait=wait_exponential_jitter(multiplier=initial, exp_base=2, max=cap, jitter=initial),
        stop=stop_after_attempt(max_attempts),
        before_sleep=before_sleep,
        reraise=True,
    )
    async for attempt in retrying:
        with attempt:
            return await func()
    raise AssertionError("unreachable")
