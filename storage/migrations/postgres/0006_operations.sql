-- Silences, incident acknowledgement and action requests (PostgreSQL; mirrors
-- migrations/sqlite/0006).  Why each exists: storage/operations_store.py; how replicas
-- stay consistent: storage/postgres_operations.py.  Times come from the server's now().

CREATE TABLE silences (
    id         text        PRIMARY KEY,
    project    text        NOT NULL,
    starts_at  timestamptz NOT NULL,
    ends_at    timestamptz NOT NULL,
    reason     text        NOT NULL DEFAULT '',
    created_by text        NOT NULL,
    ended_at   timestamptz,                     -- NULL until ended (running out leaves it)
    ended_by   text,
    CHECK (ends_at > starts_at)
);
-- At most one open silence per project: creating one closes the previous row first.
CREATE UNIQUE INDEX silences_one_open ON silences (project) WHERE ended_at IS NULL;
-- active_silences: the open rows that have not run out.
CREATE INDEX silences_open_ends ON silences (ends_at) WHERE ended_at IS NULL;
CREATE INDEX silences_project_starts ON silences (project, starts_at);

-- Who took an incident on (NULL: nobody yet).
ALTER TABLE incidents ADD COLUMN acked_at timestamptz;
ALTER TABLE incidents ADD COLUMN acked_by text;

-- Action requests.  state is not CHECK-constrained: issue "Autonomy" adds approval and
-- execution states (kept alike on both backends; SQLite cannot change a CHECK in place).
CREATE TABLE actions (
    id             text        PRIMARY KEY,
    project        text        NOT NULL,
    action         text        NOT NULL,
    requested_by   text        NOT NULL,
    reason         text        NOT NULL DEFAULT '',
    state          text        NOT NULL DEFAULT 'requested',
    needs_approval boolean     NOT NULL,
    created_at     timestamptz NOT NULL,
    -- Insertion order: breaks ties between equal created_at (SQLite's rowid).
    seq            bigint      GENERATED ALWAYS AS IDENTITY
);
CREATE INDEX actions_project_created ON actions (project, created_at, seq);
CREATE INDEX actions_created ON actions (created_at, seq);
CREATE INDEX actions_state ON actions (state, created_at);
