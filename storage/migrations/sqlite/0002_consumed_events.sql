-- Which bus consumer role has handled which event id: consumers skip ids they already
-- processed even when the bus redelivers after a crash or a reclaim (at-least-once).
CREATE TABLE consumed_events (
    role TEXT NOT NULL,
    event_id TEXT NOT NULL,
    consumed_at_us INTEGER NOT NULL,
    PRIMARY KEY (role, event_id)
);
CREATE INDEX consumed_events_at ON consumed_events (consumed_at_us);
