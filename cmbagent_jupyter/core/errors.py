"""The error types every layer raises and every front end turns into one clear line.

`InvalidInput` is bad input from a user or a client. The store's refusals are
`StoreError`s with a code, so they cross a socket (or a REST reply) and come back
as the same class (`from_wire`).
"""

from __future__ import annotations


class InvalidInput(ValueError):
    """Bad input from a user or a client, with a message that says what was wrong."""


class HomeError(OSError):
    """CMBAGENT_HOME cannot be used (missing rights, read-only)."""


class StoreError(Exception):
    code = "store_error"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def to_wire(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


class NotFound(StoreError):
    code = "not_found"


class Invalid(StoreError, InvalidInput):
    code = "invalid"


class Conflict(StoreError):
    code = "conflict"


class QuotaExceeded(StoreError):
    code = "quota_exceeded"


class StateConflict(Conflict, InvalidInput):
    """A well-formed request that the record's current state refuses (a run that cannot resume
    now, a step that did not fail): a conflict to a REST client, bad input to a Python caller."""


class StoreCorrupted(StoreError):
    code = "corrupted"


class StoreUnavailable(StoreError):
    code = "unavailable"


class Unauthorized(StoreError):
    code = "unauthorized"


class PayloadTooLarge(StoreError):
    code = "too_large"


_BY_CODE = {c.code: c for c in (StoreError, NotFound, Invalid, Conflict, QuotaExceeded, StoreCorrupted,
                                StoreUnavailable, Unauthorized, PayloadTooLarge)}


def from_wire(err: dict) -> StoreError:
    cls = _BY_CODE.get(err.get("code", ""), StoreError)
    return cls(err.get("message", "unknown store error"))
