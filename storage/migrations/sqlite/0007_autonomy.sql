-- Approvals, the audit log, the remediation budget and suspensions, analyses (SQLite;
-- mirrors migrations/postgres/0007).  Why each exists: storage/autonomy_store.py.
-- Instants are INTEGER microseconds (UTC) from the store's clock.

CREATE TABLE approvals (
    id            TEXT    PRIMARY KEY,
    action_id     TEXT    NOT NULL REFERENCES actions (id),
    project       TEXT    NOT NULL,
    action        TEXT    NOT NULL,
    requested_by  TEXT    NOT NULL,
    reason        TEXT    NOT NULL DEFAULT '',
    state         TEXT    NOT NULL DEFAULT 'pending'
                  CHECK (state IN ('pending', 'granted', 'denied', 'expired')),
    expires_at_us INTEGER NOT NULL,
    decided_by    TEXT,
    decided_at_us INTEGER,
    created_at_us INTEGER NOT NULL
);
-- One pending approval per action: two could be granted, and the action run twice.
CREATE UNIQUE INDEX approvals_one_pending ON approvals (action_id) WHERE state = 'pending';
-- The expiry sweep and the pending list read only pending rows.
CREATE INDEX approvals_pending_expires ON approvals (expires_at_us) WHERE state = 'pending';

-- Append-only: the triggers refuse any change to a written row.  No foreign keys: the log
-- records whatever happened, a click on an unknown approval too.
CREATE TABLE audit_log (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: ids only grow
    at_us       INTEGER NOT NULL,
    actor       TEXT    NOT NULL,
    actor_kind  TEXT    NOT NULL CHECK (actor_kind IN ('user', 'agent', 'operator', 'claude')),
    project     TEXT,
    action      TEXT    NOT NULL,
    reason      TEXT    NOT NULL DEFAULT '',
    decision    TEXT    NOT NULL,
    outcome     TEXT    NOT NULL DEFAULT '',
    approval_id TEXT,
    action_id   TEXT,
    details     TEXT    NOT NULL DEFAULT '{}'       -- JSON object
);
CREATE INDEX audit_log_project ON audit_log (project, id);
CREATE INDEX audit_log_at ON audit_log (at_us);
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only: UPDATE refused');
END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only: DELETE refused');
END;

-- Every restart, automatic or not: the budget counts them over a sliding window.
CREATE TABLE remediation_attempts (
    id        INTEGER PRIMARY KEY,
    project   TEXT    NOT NULL,
    action    TEXT    NOT NULL,
    at_us     INTEGER NOT NULL,
    actor     TEXT    NOT NULL,
    action_id TEXT
);
CREATE INDEX remediation_attempts_window ON remediation_attempts (project, action, at_us);

-- One row per project whose auto-fix is off (history: the events and the audit log).
CREATE TABLE remediation_suspensions (
    project      TEXT    PRIMARY KEY,
    reason       TEXT    NOT NULL,
    suspended_by TEXT    NOT NULL,
    since_us     INTEGER NOT NULL,
    until_us     INTEGER                            -- NULL: until resumed
);

CREATE TABLE analyses (
    id                 TEXT    PRIMARY KEY,
    incident_id        TEXT    NOT NULL,
    project            TEXT    NOT NULL,
    engine             TEXT    NOT NULL CHECK (engine IN ('claude', 'rules')),
    diagnosis          TEXT    NOT NULL,
    recommended_action TEXT,
    confidence         REAL    NOT NULL,
    risk               TEXT    NOT NULL,
    payload            TEXT    NOT NULL,            -- JSON object
    input_tokens       INTEGER NOT NULL CHECK (input_tokens >= 0),
    output_tokens      INTEGER NOT NULL CHECK (output_tokens >= 0),
    latency_ms         REAL    NOT NULL,
    cost_usd           REAL    NOT NULL,
    created_at_us      INTEGER NOT NULL,
    requested_by       TEXT                         -- NULL: automatic
);
CREATE INDEX analyses_incident ON analyses (incident_id, created_at_us);
CREATE INDEX analyses_created ON analyses (created_at_us);
