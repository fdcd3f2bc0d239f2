"""The store's schema as an ordered list of migrations.

A file records the highest version applied in `schema_meta`; opening an older file
applies the rest in place, each migration in its own transaction. Never edit a
released migration: add a new one.
"""

from __future__ import annotations

MIGRATIONS: list[tuple[int, str, list[str]]] = [
    (
        1,
        "sessions, runs, steps, events, checkpoints, state history, idempotency ledger",
        [
            """CREATE TABLE sessions (
                id VARCHAR PRIMARY KEY, name VARCHAR NOT NULL, status VARCHAR NOT NULL,
                quotas JSON NOT NULL, created_at TIMESTAMP NOT NULL, updated_at TIMESTAMP NOT NULL,
                path VARCHAR NOT NULL)""",
            """CREATE TABLE runs (
                id VARCHAR PRIMARY KEY, session_id VARCHAR NOT NULL, task VARCHAR NOT NULL,
                mode VARCHAR NOT NULL, status VARCHAR NOT NULL, model VARCHAR, config JSON,
                parent_run_id VARCHAR, branch_from_step INTEGER,
                created_at TIMESTAMP NOT NULL, started_at TIMESTAMP, completed_at TIMESTAMP,
                last_heartbeat_at TIMESTAMP, checkpoint_interval_s DOUBLE NOT NULL DEFAULT 600,
                error VARCHAR, path VARCHAR NOT NULL)""",
            "CREATE INDEX runs_session ON runs(session_id)",
            """CREATE TABLE steps (
                id VARCHAR PRIMARY KEY, session_id VARCHAR NOT NULL, run_id VARCHAR NOT NULL,
                number INTEGER NOT NULL, key VARCHAR NOT NULL, agent VARCHAR NOT NULL,
                status VARCHAR NOT NULL, description VARCHAR, depends_on JSON, progress DOUBLE,
                inputs JSON, outputs JSON, error VARCHAR, attempts INTEGER NOT NULL DEFAULT 0,
                started_at TIMESTAMP, completed_at TIMESTAMP)""",
            "CREATE INDEX steps_run ON steps(run_id)",
            """CREATE TABLE events (
                id VARCHAR NOT NULL, session_id VARCHAR NOT NULL, run_id VARCHAR,
                seq BIGINT NOT NULL, gseq BIGINT NOT NULL, type VARCHAR NOT NULL,
                ts TIMESTAMP NOT NULL, payload JSON)""",
            "CREATE INDEX events_session ON events(session_id)",
            """CREATE TABLE checkpoints (
                id VARCHAR PRIMARY KEY, session_id VARCHAR NOT NULL, run_id VARCHAR NOT NULL,
                step_id VARCHAR, kind VARCHAR NOT NULL, context JSON, pickle_path VARCHAR,
                created_at TIMESTAMP NOT NULL)""",
            """CREATE TABLE state_history (
                id VARCHAR NOT NULL, session_id VARCHAR NOT NULL, entity_type VARCHAR NOT NULL,
                entity_id VARCHAR NOT NULL, from_state VARCHAR, to_state VARCHAR NOT NULL,
                reason VARCHAR, actor VARCHAR, "at" TIMESTAMP NOT NULL)""",
            """CREATE TABLE applied_requests (
                rid VARCHAR NOT NULL, result JSON, "at" TIMESTAMP NOT NULL)""",
        ],
    ),
    (
        2,
        "attempts, costs, approvals, branches, messages, metrics, files, policy, agents, DAG, projects",
        [
            "ALTER TABLE runs ADD COLUMN owner_pid INTEGER",
            "ALTER TABLE runs ADD COLUMN pause_requested BOOLEAN DEFAULT FALSE",
            "ALTER TABLE runs ADD COLUMN project_id VARCHAR",
            """CREATE TABLE step_attempts (
                id VARCHAR PRIMARY KEY, session_id VARCHAR NOT NULL, run_id VARCHAR NOT NULL,
                step_id VARCHAR NOT NULL, attempt INTEGER NOT NULL, status VARCHAR NOT NULL,
                error_type VARCHAR, error VARCHAR, traceback VARCHAR, output VARCHAR,
                feedback VARCHAR, cost_usd DOUBLE DEFAULT 0, started_at TIMESTAMP NOT NULL,
                ended_at TIMESTAMP)""",
            """CREATE TABLE cost_records (
                id VARCHAR NOT NULL, session_id VARCHAR NOT NULL, run_id VARCHAR, step_id VARCHAR,
                agent VARCHAR, model VARCHAR NOT NULL, prompt_tokens BIGINT, completion_tokens BIGINT,
                total_tokens BIGINT, cost_usd DOUBLE NOT NULL, priced BOOLEAN NOT NULL,
                "at" TIMESTAMP NOT NULL)""",
            """CREATE TABLE approvals (
                id VARCHAR PRIMARY KEY, session_id VARCHAR NOT NULL, run_id VARCHAR NOT NULL,
                step_id VARCHAR, kind VARCHAR NOT NULL, status VARCHAR NOT NULL, request JSON,
                options JSON, decision VARCHAR, feedback VARCHAR, resolved_by VARCHAR,
                created_at TIMESTAMP NOT NULL, resolved_at TIMESTAMP, timeout_at TIMESTAMP,
                default_action VARCHAR)""",
            """CREATE TABLE branches (
                id VARCHAR PRIMARY KEY, session_id VARCHAR NOT NULL, parent_run_id VARCHAR NOT NULL,
                parent_step INTEGER NOT NULL, child_run_id VARCHAR NOT NULL, name VARCHAR NOT NULL,
                hypothesis VARCHAR, created_at TIMESTAMP NOT NULL)""",
            """CREATE TABLE messages (
                id VARCHAR NOT NULL, session_id VARCHAR NOT NULL, run_id VARCHAR, step_id VARCHAR,
                sender VARCHAR, recipient VARCHAR, content VARCHAR, tokens BIGINT,
                "at" TIMESTAMP NOT NULL)""",
            """CREATE TABLE metrics (
                session_id VARCHAR NOT NULL, run_id VARCHAR, name VARCHAR NOT NULL,
                value DOUBLE, "at" TIMESTAMP NOT NULL)""",
            """CREATE TABLE files (
                id VARCHAR NOT NULL, session_id VARCHAR NOT NULL, run_id VARCHAR, step_id VARCHAR,
                path VARCHAR NOT NULL, kind VARCHAR NOT NULL, size BIGINT, "at" TIMESTAMP NOT NULL)""",
            """CREATE TABLE policy_decisions (
                id VARCHAR NOT NULL, session_id VARCHAR, run_id VARCHAR, policy VARCHAR NOT NULL,
                action VARCHAR NOT NULL, allowed BOOLEAN NOT NULL, reason VARCHAR, input JSON,
                "at" TIMESTAMP NOT NULL)""",
            """CREATE TABLE agents (
                name VARCHAR NOT NULL, version VARCHAR NOT NULL, role VARCHAR, instructions VARCHAR,
                source VARCHAR, tags JSON, capabilities JSON, enabled BOOLEAN,
                calls BIGINT DEFAULT 0, updated_at TIMESTAMP)""",
            """CREATE TABLE dag_nodes (
                session_id VARCHAR NOT NULL, run_id VARCHAR NOT NULL, node_id VARCHAR NOT NULL,
                kind VARCHAR NOT NULL, label VARCHAR, status VARCHAR, level INTEGER)""",
            """CREATE TABLE dag_edges (
                session_id VARCHAR NOT NULL, run_id VARCHAR NOT NULL, source VARCHAR NOT NULL,
                target VARCHAR NOT NULL, kind VARCHAR NOT NULL)""",
            """CREATE TABLE projects (
                id VARCHAR PRIMARY KEY, session_id VARCHAR NOT NULL, name VARCHAR NOT NULL,
                created_at TIMESTAMP NOT NULL)""",
        ],
    ),
    (
        3,
        "step journal: the highest journal record of each run applied to the store",
        [
            "ALTER TABLE runs ADD COLUMN journal_seq BIGINT DEFAULT 0",
        ],
    ),
]

LATEST_VERSION = MIGRATIONS[-1][0]
