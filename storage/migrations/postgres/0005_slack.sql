-- The Slack outbox (PostgreSQL; mirrors migrations/sqlite/0005).  Why each table exists:
-- storage/slack_store.py; the claim (FOR UPDATE SKIP LOCKED on slack_channels):
-- storage/postgres_slack.py.  Every deadline is compared with the server's now().

-- One row per channel: pacing/back-off deadline and which outbox instance holds it.
CREATE TABLE slack_channels (
    channel    text        PRIMARY KEY,
    not_before timestamptz NOT NULL,
    held_by    text,
    held_until timestamptz,
    last_error text
);

-- Grouped messages: the cards folded while a channel storms.
CREATE TABLE slack_storms (
    id             bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    channel        text        NOT NULL,
    started        timestamptz NOT NULL,
    last_joined    timestamptz NOT NULL,
    posted_channel text,
    ts             text
);
CREATE INDEX slack_storms_channel ON slack_storms (channel, last_joined);

-- payload is JSON text, as events.payload (the sender parses it; nothing queries it).
CREATE TABLE slack_outbox (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    channel     text        NOT NULL,
    kind        text        NOT NULL
                CHECK (kind IN ('post_card', 'update_card', 'thread_reply', 'storm')),
    incident_id text,
    storm_id    bigint      REFERENCES slack_storms (id),
    dedupe_key  text        NOT NULL UNIQUE,
    payload     text        NOT NULL,
    state       text        NOT NULL DEFAULT 'pending'
                CHECK (state IN ('pending', 'sent', 'failed', 'folded')),
    attempts    integer     NOT NULL DEFAULT 0,
    order_at    timestamptz NOT NULL,
    not_before  timestamptz NOT NULL,
    created     timestamptz NOT NULL,
    sent_at     timestamptz,
    ts          text,
    last_error  text
);
CREATE INDEX slack_outbox_pending ON slack_outbox (channel, order_at, id) WHERE state = 'pending';
CREATE INDEX slack_outbox_incident ON slack_outbox (incident_id, kind);
CREATE INDEX slack_outbox_cards ON slack_outbox (channel, created) WHERE kind = 'post_card';

CREATE TABLE slack_messages (
    incident_id text        PRIMARY KEY,
    channel     text        NOT NULL,
    ts          text,
    thread_ts   text,
    storm_id    bigint      REFERENCES slack_storms (id),
    created     timestamptz NOT NULL
);
CREATE INDEX slack_messages_storm ON slack_messages (storm_id) WHERE storm_id IS NOT NULL;
