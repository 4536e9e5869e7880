-- The daily digest (SQLite; mirrors migrations/postgres/0011).  Why each change exists:
-- storage/report_store.py (digest_runs) and storage/slack_store.py (the two new kinds).
-- Instants are INTEGER microseconds (UTC) from the store's clock.

-- One row per orchestrator group and local day: the digest is queued once fleet-wide.
CREATE TABLE digest_runs (
    grp           TEXT    NOT NULL,
    day           TEXT    NOT NULL,             -- the group's local date, YYYY-MM-DD
    state         TEXT    NOT NULL CHECK (state IN ('claimed', 'queued')),
    claimed_by    TEXT    NOT NULL,
    claimed_at_us INTEGER NOT NULL,
    queued_at_us  INTEGER,
    PRIMARY KEY (grp, day)
) WITHOUT ROWID;

-- Report queries: approvals decided in a window (actions and analyses have theirs).
CREATE INDEX approvals_decided ON approvals (decided_at_us) WHERE decided_at_us IS NOT NULL;

-- The Slack outbox learns two kinds: 'message' (a message of its own, e.g. the digest) and
-- 'upload' (a file shared after its message, files_upload_v2).  SQLite cannot change a
-- CHECK in place: the table is rebuilt with the same columns, rows and ids.  Nothing
-- references slack_outbox, so dropping the old table breaks no foreign key.
CREATE TABLE slack_outbox_0011 (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    channel       TEXT    NOT NULL,
    kind          TEXT    NOT NULL
                  CHECK (kind IN ('post_card', 'update_card', 'thread_reply', 'storm',
                                  'message', 'upload')),
    incident_id   TEXT,
    storm_id      INTEGER REFERENCES slack_storms (id),
    dedupe_key    TEXT    NOT NULL UNIQUE,
    payload       TEXT    NOT NULL,           -- JSON
    state         TEXT    NOT NULL DEFAULT 'pending'
                  CHECK (state IN ('pending', 'sent', 'failed', 'folded')),
    attempts      INTEGER NOT NULL DEFAULT 0,
    order_us      INTEGER NOT NULL,
    not_before_us INTEGER NOT NULL,
    created_us    INTEGER NOT NULL,
    sent_at_us    INTEGER,
    ts            TEXT,
    last_error    TEXT
);
INSERT INTO slack_outbox_0011 (id, channel, kind, incident_id, storm_id, dedupe_key, payload,
                               state, attempts, order_us, not_before_us, created_us,
                               sent_at_us, ts, last_error)
    SELECT id, channel, kind, incident_id, storm_id, dedupe_key, payload, state, attempts,
           order_us, not_before_us, created_us, sent_at_us, ts, last_error
    FROM slack_outbox;
DROP TABLE slack_outbox;
ALTER TABLE slack_outbox_0011 RENAME TO slack_outbox;
CREATE INDEX slack_outbox_pending ON slack_outbox (channel, order_us, id) WHERE state = 'pending';
CREATE INDEX slack_outbox_incident ON slack_outbox (incident_id, kind);
CREATE INDEX slack_outbox_cards ON slack_outbox (channel, created_us) WHERE kind = 'post_card';
