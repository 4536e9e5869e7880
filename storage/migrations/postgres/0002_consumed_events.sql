-- Which bus consumer role has handled which event id: consumers skip ids they already
-- processed even when the bus redelivers after a crash or a reclaim (at-least-once).
-- claim_event is INSERT ... ON CONFLICT DO NOTHING on the primary key, so of replicas
-- racing on one (role, event id) exactly one wins.
CREATE TABLE consumed_events (
    role        text        NOT NULL,
    event_id    text        NOT NULL,
    consumed_at timestamptz NOT NULL,
    PRIMARY KEY (role, event_id)
);
CREATE INDEX consumed_events_at ON consumed_events (consumed_at);
