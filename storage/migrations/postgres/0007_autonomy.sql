-- Approvals, the audit log, the remediation budget and suspensions, analyses
-- (PostgreSQL; mirrors migrations/sqlite/0007).  Why each exists:
-- storage/autonomy_store.py; how replicas stay consistent: storage/postgres_autonomy.py.
-- Times come from the server's now().

CREATE TABLE approvals (
    id           text        PRIMARY KEY,
    action_id    text        NOT NULL REFERENCES actions (id),
    project      text        NOT NULL,
    action       text        NOT NULL,
    requested_by text        NOT NULL,
    reason       text        NOT NULL DEFAULT '',
    state        text        NOT NULL DEFAULT 'pending'
                 CHECK (state IN ('pending', 'granted', 'denied', 'expired')),
    expires_at   timestamptz NOT NULL,
    decided_by   text,
    decided_at   timestamptz,
    created_at   timestamptz NOT NULL,
    -- Insertion order: breaks ties between equal created_at (SQLite's rowid).
    seq          bigint      GENERATED ALWAYS AS IDENTITY
);
-- One pending approval per action: two could be granted, and the action run twice.
CREATE UNIQUE INDEX approvals_one_pending ON approvals (action_id) WHERE state = 'pending';
-- The expiry sweep and the pending list read only pending rows.
CREATE INDEX approvals_pending_expires ON approvals (expires_at) WHERE state = 'pending';

-- Append-only.  No foreign keys: the log records whatever happened, a click on an unknown
-- approval too.  details is JSON text, not jsonb (jsonb refuses NaN, as for events).
CREATE TABLE audit_log (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    actor       text        NOT NULL,
    actor_kind  text        NOT NULL CHECK (actor_kind IN ('user', 'agent', 'operator', 'claude')),
    project     text,
    action      text        NOT NULL,
    reason      text        NOT NULL DEFAULT '',
    decision    text        NOT NULL,
    outcome     text        NOT NULL DEFAULT '',
    approval_id text,
    action_id   text,
    details     text        NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_project ON audit_log (project, id);
CREATE INDEX audit_log_at ON audit_log (at);
-- The trigger refuses UPDATE, DELETE and TRUNCATE for every role, orch's own included
-- (statement-level: even a statement that would match no row is refused).  Only the
-- table's owner can drop or disable it, a deliberate DDL change; a runtime role that
-- does not own the table cannot do even that.
CREATE FUNCTION audit_log_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_refuse_change();

-- Every restart, automatic or not: the budget counts them over a sliding window.
CREATE TABLE remediation_attempts (
    id        bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    project   text        NOT NULL,
    action    text        NOT NULL,
    at        timestamptz NOT NULL,
    actor     text        NOT NULL,
    action_id text
);
CREATE INDEX remediation_attempts_window ON remediation_attempts (project, action, at);

-- One row per project whose auto-fix is off (history: the events and the audit log).
CREATE TABLE remediation_suspensions (
    project      text        PRIMARY KEY,
    reason       text        NOT NULL,
    suspended_by text        NOT NULL,
    since        timestamptz NOT NULL,
    until        timestamptz                        -- NULL: until resumed
);

CREATE TABLE analyses (
    id                 text             PRIMARY KEY,
    incident_id        text             NOT NULL,
    project            text             NOT NULL,
    engine             text             NOT NULL CHECK (engine IN ('claude', 'rules')),
    diagnosis          text             NOT NULL,
    recommended_action text,
    confidence         double precision NOT NULL,
    risk               text             NOT NULL,
    payload            text             NOT NULL,   -- JSON object
    input_tokens       integer          NOT NULL CHECK (input_tokens >= 0),
    output_tokens      integer          NOT NULL CHECK (output_tokens >= 0),
    latency_ms         double precision NOT NULL,
    cost_usd           double precision NOT NULL,
    created_at         timestamptz      NOT NULL,
    requested_by       text,                        -- NULL: automatic
    seq                bigint           GENERATED ALWAYS AS IDENTITY
);
CREATE INDEX analyses_incident ON analyses (incident_id, created_at, seq);
CREATE INDEX analyses_created ON analyses (created_at);
