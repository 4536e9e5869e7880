-- The Slack outbox (SQLite; mirrors migrations/postgres/0005).  Why each table exists:
-- storage/slack_store.py.  Instants are INTEGER microseconds (UTC) from the store's clock.

CREATE TABLE slack_channels (
    channel       TEXT    PRIMARY KEY,
    not_before_us INTEGER NOT NULL,          -- pacing and back-off deadline
    held_by       TEXT,                      -- the outbox instance sending on it, if any
    held_until_us INTEGER,
    last_error    TEXT
);

CREATE TABLE slack_storms (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    channel        TEXT    NOT NULL,
    started_us     INTEGER NOT NULL,
    last_joined_us INTEGER NOT NULL,
    posted_channel TEXT,
    ts             TEXT
);
CREATE INDEX slack_storms_channel ON slack_storms (channel, last_joined_us);

CREATE TABLE slack_outbox (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    channel       TEXT    NOT NULL,
    kind          TEXT    NOT NULL
                  CHECK (kind IN ('post_card', 'update_card', 'thread_reply', 'storm')),
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
-- The claim: each channel's pending rows in order.
CREATE INDEX slack_outbox_pending ON slack_outbox (channel, order_us, id) WHERE state = 'pending';
CREATE INDEX slack_outbox_incident ON slack_outbox (incident_id, kind);
-- The storm rule counts a channel's recent cards.
CREATE INDEX slack_outbox_cards ON slack_outbox (channel, created_us) WHERE kind = 'post_card';

CREATE TABLE slack_messages (
    incident_id TEXT    PRIMARY KEY,
    channel     TEXT    NOT NULL,
    ts          TEXT,                          -- NULL until Slack answered the post
    thread_ts   TEXT,
    storm_id    INTEGER REFERENCES slack_storms (id),
    created_us  INTEGER NOT NULL
);
CREATE INDEX slack_messages_storm ON slack_messages (storm_id) WHERE storm_id IS NOT NULL;
