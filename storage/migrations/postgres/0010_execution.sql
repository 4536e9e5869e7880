-- Running actions (PostgreSQL; mirrors migrations/sqlite/0010).  The states and why each
-- column exists: storage/execution_store.py.

ALTER TABLE actions
    ADD COLUMN incident_id text,
    ADD COLUMN origin      text NOT NULL DEFAULT 'user'
                           CHECK (origin IN ('user', 'operator', 'autofix', 'claude', 'rules')),
    ADD COLUMN outcome     text,
    ADD COLUMN error       text,
    ADD COLUMN executor    text,
    ADD COLUMN started_at  timestamptz,
    ADD COLUMN finished_at timestamptz;

-- Attempts per incident, and the incident's story for an escalation.
CREATE INDEX actions_incident ON actions (incident_id, created_at, seq)
    WHERE incident_id IS NOT NULL;
