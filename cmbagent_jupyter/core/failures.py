"""Why an attempt failed, in words a retry can use: the failure kinds and error categories
of the seed plan, read from an exception or a traceback, with a suggestion for each."""

from __future__ import annotations

import re
from enum import Enum


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
