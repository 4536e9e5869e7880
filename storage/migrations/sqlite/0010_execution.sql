-- Running actions (SQLite; mirrors migrations/postgres/0010).  The states and why each
-- column exists: storage/execution_store.py.  Instants are INTEGER microseconds (UTC).
-- (0008 and 0009 are PostgreSQL-only time-series layouts; versions need not be contiguous.)

ALTER TABLE actions ADD COLUMN incident_id TEXT;
ALTER TABLE actions ADD COLUMN origin TEXT NOT NULL DEFAULT 'user'
    CHECK (origin IN ('user', 'operator', 'autofix', 'claude', 'rules'));
ALTER TABLE actions ADD COLUMN outcome TEXT;
ALTER TABLE actions ADD COLUMN error TEXT;
ALTER TABLE actions ADD COLUMN executor TEXT;
ALTER TABLE actions ADD COLUMN started_at_us INTEGER;
ALTER TABLE actions ADD COLUMN finished_at_us INTEGER;

-- Attempts per incident, and the incident's story for an escalation.
CREATE INDEX actions_incident ON actions (incident_id, created_at_us) WHERE incident_id IS NOT NULL;
