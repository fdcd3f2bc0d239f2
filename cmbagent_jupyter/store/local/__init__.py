"""The local backend: one store service per CMBAGENT_HOME owns its DuckDB file; every process is its client.

`LocalStore` is the store port on it; `service_pid` and `stop_service` manage the service.
"""

from cmbagent_jupyter.store.local.adapter import LocalSessionStore, LocalStore
from cmbagent_jupyter.store.local.client import StoreClient, service_pid, stop_service

__all__ = ["LocalSessionStore", "LocalStore", "StoreClient", "service_pid", "stop_service"]
