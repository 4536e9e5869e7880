-- orch embedded store, initial schema (SQLite).
--
-- Every instant is an INTEGER of microseconds since 1970-01-01T00:00:00Z (columns
-- suffixed _us).  Integers order and compare exactly, round-trip a Python datetime
-- without loss, take 8 bytes instead of a 32-byte ISO string in the large time-series
-- tables, and let SQL compute durations exactly.  storage/sqlite_codec.py converts.
-- Enumerated values (probe level, severity) are not CHECK-constrained: the store records
-- what the agents decide; only incident state, which the store itself manages and the
-- partial unique index depends on, is.

CREATE TABLE probes (
    id          INTEGER PRIMARY KEY,
    project     TEXT    NOT NULL,
    ts_us       INTEGER NOT NULL,
    level       TEXT    NOT NULL,          -- pass | warn | fail
    latency_ms  REAL    NOT NULL,
    reason      TEXT    NOT NULL DEFAULT '',
    http_status INTEGER,
    probe       TEXT    NOT NULL DEFAULT 'health'
);
-- recent_probes: newest first per project (the rowid in the index breaks ties).
CREATE INDEX probes_project_ts ON probes (project, ts_us);

CREATE TABLE metric_samples (
    id      INTEGER PRIMARY KEY,
    project TEXT    NOT NULL,
    metric  TEXT    NOT NULL,
    ts_us   INTEGER NOT NULL,
    -- NULL stands for NaN: SQLite cannot store a NaN REAL (it binds as NULL), and a
    -- Prometheus exporter may legitimately report NaN.
    value   REAL
);
-- metric_series: one metric of one project since a time, oldest first.
CREATE INDEX metric_samples_project_metric_ts ON metric_samples (project, metric, ts_us);

-- The outbox.  seq is the commit order: SQLite has one writer at a time, so a row's seq
-- is assigned inside the only open write transaction and seq order is commit order.
-- AUTOINCREMENT so a seq is never reused after old rows are pruned.
-- No foreign key to incidents: the event log must record whatever it is given.
CREATE TABLE events (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    id              TEXT    NOT NULL UNIQUE,
    type            TEXT    NOT NULL,
    ts_us           INTEGER NOT NULL,
    source          TEXT    NOT NULL,
    project         TEXT,
    incident_id     TEXT,
    payload         TEXT    NOT NULL,      -- JSON object
    published_at_us INTEGER                -- NULL until the relay has published it
);
-- The relay's query: unpublished rows in seq order; stays tiny as rows get published.
CREATE INDEX events_unpublished ON events (seq) WHERE published_at_us IS NULL;
CREATE INDEX events_project_ts ON events (project, ts_us);
CREATE INDEX events_ts ON events (ts_us);

CREATE TABLE incidents (
    id             TEXT    PRIMARY KEY,
    fingerprint    TEXT    NOT NULL,       -- project:condition
    project        TEXT    NOT NULL,
    condition      TEXT    NOT NULL,
    severity       TEXT    NOT NULL,
    summary        TEXT    NOT NULL,
    state          TEXT    NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'resolved')),
    opened_at_us   INTEGER NOT NULL,
    resolved_at_us INTEGER,
    duration_s     REAL
);
-- At most one open incident per fingerprint, enforced by the engine so that two tasks
-- or two processes racing to open the same incident get exactly one row.
CREATE UNIQUE INDEX incidents_one_open ON incidents (fingerprint) WHERE state = 'open';
CREATE INDEX incidents_project_opened ON incidents (project, opened_at_us);
CREATE INDEX incidents_opened ON incidents (opened_at_us);
