-- Shared dependencies (SQLite; mirrors migrations/postgres/0012).  An incident of a project
-- whose declared dependency is down is recorded as usual and points at the dependency's
-- incident (its root cause): why, and when the link is set or cleared,
-- storage/incident_links.py and agents/dependencies.py.

ALTER TABLE incidents ADD COLUMN caused_by TEXT;

-- "Which incidents are folded into this one": every edit of the root's card asks.
CREATE INDEX incidents_caused_by ON incidents (caused_by, opened_at_us) WHERE caused_by IS NOT NULL;
