-- Replicas sharing the fleet (PostgreSQL; mirrors migrations/sqlite/0004).  Logic and
-- reasoning: storage/postgres_coordination.py and agents/coordination.py.
--
-- Every expiry is compared with the database's now(), never a replica's clock: a replica
-- whose clock is minutes off still neither extends nor cuts a lease.

-- One row per running replica, renewed by its heartbeat.  The live count (rows not yet
-- expired) sets each replica's fair share of the leases.
CREATE TABLE replicas (
    replica_id   text        PRIMARY KEY,
    started_at   timestamptz NOT NULL,
    heartbeat_at timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL
);

-- One row per leased name (for example 'project:email-blast').  Rows are never deleted, so
-- the fencing counter only grows: a released lease has owner and expires_at NULL.
-- fence is incremented at every acquisition, so (name, fence) names one holding and a
-- later write can refuse a holder whose lease has since changed hands.
CREATE TABLE leases (
    name        text        PRIMARY KEY,
    owner       text,
    expires_at  timestamptz,
    fence       bigint      NOT NULL DEFAULT 0,
    acquired_at timestamptz
);
-- renew / held / release read one replica's leases.
CREATE INDEX leases_owner ON leases (owner) WHERE owner IS NOT NULL;

-- Scheduled jobs that must run once fleet-wide: the primary key decides which replica
-- runs (job, period), for example ('retention', '2026-11-24T09').
CREATE TABLE job_runs (
    job        text        NOT NULL,
    period_key text        NOT NULL,
    replica_id text        NOT NULL,
    claimed_at timestamptz NOT NULL,
    PRIMARY KEY (job, period_key)
);
CREATE INDEX job_runs_claimed ON job_runs (claimed_at);
