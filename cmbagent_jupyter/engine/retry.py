"""Retries that learn: give the next attempt of a step what went wrong before (errors,
tracebacks, outputs, human feedback), classified by `core.failures`.

Code and validation errors are retried as new attempts of the step, each prompt carrying
the earlier attempts; transient provider errors are retried in place, around the model
call (llm/retrying.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cmbagent_jupyter.core.failures import (
    SUGGESTIONS,
    ErrorCategory,
    FailureKind,
    categorize_exception,
    categorize_traceback,
    is_transient,
)


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
