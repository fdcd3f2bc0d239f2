"""The one place where failures become HTTP statuses (and WebSocket error frames)."""

from __future__ import annotations

from cmbagent_jupyter.core.home import HomeError
from cmbagent_jupyter.core import InvalidInput
from cmbagent_jupyter.core.errors import (
    Conflict,
    Invalid,
    NotFound,
    PayloadTooLarge,
    QuotaExceeded,
    StoreCorrupted,
    StoreError,
    StoreUnavailable,
    Unauthorized,
)


class ApiError(Exception):
    """A refusal with a status and a message meant for the user."""

    def __init__(self, status: int, message: str, reason: str):
        super().__init__(message)
        self.status = status
        self.message = message
        self.reason = reason

    def to_json(self) -> dict[str, str]:
        return {"message": self.message, "reason": self.reason}


# Subclasses before their bases: Invalid is also an InvalidInput.
_STORE_STATUS: list[tuple[type[Exception], int]] = [
    (NotFound, 404),
    (Invalid, 400),
    (Conflict, 409),
    (QuotaExceeded, 429),
    (Unauthorized, 403),
    (PayloadTooLarge, 413),
    (StoreUnavailable, 503),
    (StoreCorrupted, 503),
    (StoreError, 500),
    (InvalidInput, 400),
    (HomeError, 503),
]


def api_error(exc: BaseException) -> ApiError | None:
    """The ApiError for a known failure, or None for a bug (which should surface as one)."""
    if isinstance(exc, ApiError):
        return exc
    for cls, status in _STORE_STATUS:
        if isinstance(exc, cls):
            reason = exc.code if isinstance(exc, StoreError) else (
                "home_unusable" if isinstance(exc, HomeError) else "invalid")
            return ApiError(status, str(exc), reason)
    return None
