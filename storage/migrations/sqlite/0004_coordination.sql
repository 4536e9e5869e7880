-- Replicas sharing the fleet (SQLite; mirrors migrations/postgres/0004).  SQLite is the
-- embedded, single-process store: the tables exist so the lease keeper runs the same code
-- on both stores, and "database time" is the store's injected clock.

CREATE TABLE replicas (
    replica_id   TEXT    PRIMARY KEY,
    started_us   INTEGER NOT NULL,
    heartbeat_us INTEGER NOT NULL,
    expires_us   INTEGER NOT NULL
);

-- owner and expires_us are NULL while free, fence grows at every acquisition (rows are
-- never deleted, so it never goes back).
CREATE TABLE leases (
    name        TEXT    PRIMARY KEY,
    owner       TEXT,
    expires_us  INTEGER,
    fence       INTEGER NOT NULL DEFAULT 0,
    acquired_us INTEGER
);
CREATE INDEX leases_owner ON leases (owner) WHERE owner IS NOT NULL;

CREATE TABLE job_runs (
    job        TEXT    NOT NULL,
    period_key TEXT    NOT NULL,
    replica_id TEXT    NOT NULL,
    claimed_us INTEGER NOT NULL,
    PRIMARY KEY (job, period_key)
) WITHOUT ROWID;
CREATE INDEX job_runs_claimed ON job_runs (claimed_us);
