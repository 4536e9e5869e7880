-- Silences, incident acknowledgement and action requests (SQLite; mirrors
-- migrations/postgres/0006).  Why each exists: storage/operations_store.py.  Instants are
-- INTEGER microseconds (UTC) from the store's clock.

CREATE TABLE silences (
    id           TEXT    PRIMARY KEY,
    project      TEXT    NOT NULL,
    starts_at_us INTEGER NOT NULL,
    ends_at_us   INTEGER NOT NULL,
    reason       TEXT    NOT NULL DEFAULT '',
    created_by   TEXT    NOT NULL,
    ended_at_us  INTEGER,                    -- NULL until ended (running out leaves it NULL)
    ended_by     TEXT,
    CHECK (ends_at_us > starts_at_us)
);
-- At most one open silence per project: creating one closes the previous row first.
CREATE UNIQUE INDEX silences_one_open ON silences (project) WHERE ended_at_us IS NULL;
-- active_silences: the open rows that have not run out.
CREATE INDEX silences_open_ends ON silences (ends_at_us) WHERE ended_at_us IS NULL;
CREATE INDEX silences_project_starts ON silences (project, starts_at_us);

-- Who took an incident on (NULL: nobody yet).
ALTER TABLE incidents ADD COLUMN acked_at_us INTEGER;
ALTER TABLE incidents ADD COLUMN acked_by TEXT;

-- Action requests.  state is not CHECK-constrained: issue "Autonomy" adds approval and
-- execution states, and SQLite cannot change a CHECK without rebuilding the table.
CREATE TABLE actions (
    id             TEXT    PRIMARY KEY,
    project        TEXT    NOT NULL,
    action         TEXT    NOT NULL,
    requested_by   TEXT    NOT NULL,
    reason         TEXT    NOT NULL DEFAULT '',
    state          TEXT    NOT NULL DEFAULT 'requested',
    needs_approval INTEGER NOT NULL CHECK (needs_approval IN (0, 1)),
    created_at_us  INTEGER NOT NULL
);
CREATE INDEX actions_project_created ON actions (project, created_at_us);
CREATE INDEX actions_created ON actions (created_at_us);
CREATE INDEX actions_state ON actions (state, created_at_us);
