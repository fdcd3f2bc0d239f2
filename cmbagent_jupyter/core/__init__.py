"""The pure core: records and ids, states, events and their payloads, the journal record,
the run graph, the widgets' views, the front ends' JSON Schema, the errors. It imports
nothing else of the package; everything else imports it (an import contract checks both).
"""

from cmbagent_jupyter.core.errors import (
    Conflict,
    HomeError,
    Invalid,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    QuotaExceeded,
    StateConflict,
    StoreCorrupted,
    StoreError,
    StoreUnavailable,
    Unauthorized,
)
from cmbagent_jupyter.core.events import EVENT_SCHEMA_VERSION, Event, EventType, event_json_schema
from cmbagent_jupyter.core.ids import ID_PREFIXES, check_id, new_id, new_ids, utcnow, validate_name
from cmbagent_jupyter.core.journal import JournalRecord
from cmbagent_jupyter.core.records import (
    AgentRecord,
    ApprovalRequest,
    Branch,
    Checkpoint,
    CostRecord,
    CostRow,
    PolicyDecision,
    Quotas,
    Record,
    RunOverview,
    Run,
    Session,
    StateTransition,
    Step,
    StepAttempt,
    Usage,
)
from cmbagent_jupyter.core.states import (
    ACTIVE_RUN_STATES,
    RESUMABLE_RUN_STATES,
    RETRY_FEEDBACK_KIND,
    RUNNING_RUN_STATES,
    STOPPED_RUN_STATES,
    TERMINAL_RUN_STATES,
    UNSETTLED_RUN_STATES,
    ApprovalStatus,
    CheckpointKind,
    IllegalTransition,
    RunMode,
    RunStatus,
    SessionStatus,
    StepStatus,
)

__all__ = [
    "ACTIVE_RUN_STATES", "AgentRecord", "ApprovalRequest", "ApprovalStatus", "Branch", "Checkpoint", "CheckpointKind",
    "Conflict", "CostRecord", "CostRow", "EVENT_SCHEMA_VERSION", "Event", "EventType", "HomeError", "ID_PREFIXES",
    "IllegalTransition", "Invalid", "InvalidInput", "JournalRecord", "NotFound", "PayloadTooLarge", "PolicyDecision",
    "QuotaExceeded", "Quotas", "RESUMABLE_RUN_STATES", "RETRY_FEEDBACK_KIND", "RUNNING_RUN_STATES", "Record", "Run",
    "RunMode", "RunOverview", "RunStatus", "STOPPED_RUN_STATES", "Session", "StateConflict", "SessionStatus",
    "StateTransition", "Step", "StepAttempt", "StepStatus", "StoreCorrupted", "StoreError", "StoreUnavailable",
    "TERMINAL_RUN_STATES", "UNSETTLED_RUN_STATES", "Unauthorized", "Usage", "check_id", "event_json_schema", "new_id",
    "new_ids", "utcnow", "validate_name",
]
