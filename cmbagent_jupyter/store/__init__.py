"""Durable state: one store service owns the DuckDB file; everything else is its client."""

from cmbagent_jupyter.store.client import StoreClient, Subscription, service_pid, stop_service
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
from cmbagent_jupyter.store.repository import SessionStore, Store

__all__ = [
    "Conflict", "Invalid", "NotFound", "PayloadTooLarge", "QuotaExceeded", "SessionStore", "Store", "StoreClient",
    "StoreCorrupted", "StoreError", "StoreUnavailable", "Subscription", "Unauthorized", "service_pid", "stop_service",
]
