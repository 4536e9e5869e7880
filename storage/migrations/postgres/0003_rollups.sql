-- Hourly roll-ups, the dirty-hour marks that keep them exact, and the raw horizon
-- (PostgreSQL; mirrors migrations/sqlite/0003).  Definitions: storage/rollups.py.

-- One row per (project, hour) of probes.  Observed/up time in integer microseconds, so
-- sums are exact and match SQLite and the raw computation to the bit.
CREATE TABLE probe_hourly (
    project        text             NOT NULL,
    hour           timestamptz      NOT NULL,   -- start of the UTC hour
    probes         integer          NOT NULL,
    failed         integer          NOT NULL,
    observed_us    bigint           NOT NULL,
    up_us          bigint           NOT NULL,
    latency_avg_ms double precision,            -- non-failed probes only; NULL if none
    latency_max_ms double precision,
    PRIMARY KEY (project, hour)
);
-- uptime for the whole fleet over a time range reads by hour; INCLUDE makes it an
-- index-only scan (no heap visits).
CREATE INDEX probe_hourly_hour ON probe_hourly (hour) INCLUDE (project, observed_us, up_us);

-- probe_hourly summed per (project, UTC day), rewritten with its hours in one transaction:
-- long windows read a row per day (30 days x 1,000 projects = 30k rows, not 720k).
CREATE TABLE probe_daily (
    project     text        NOT NULL,
    day         timestamptz NOT NULL,           -- 00:00 UTC
    probes      bigint      NOT NULL,
    failed      bigint      NOT NULL,
    observed_us bigint      NOT NULL,
    up_us       bigint      NOT NULL,
    PRIMARY KEY (project, day)
);
CREATE INDEX probe_daily_day ON probe_daily (day) INCLUDE (project, observed_us, up_us);

CREATE TABLE metric_hourly (
    project text             NOT NULL,
    metric  text             NOT NULL,
    hour    timestamptz      NOT NULL,
    n       integer          NOT NULL,          -- finite samples (NaN and +-inf skipped)
    min     double precision NOT NULL,
    avg     double precision NOT NULL,
    max     double precision NOT NULL,
    PRIMARY KEY (project, metric, hour)
);
CREATE INDEX metric_hourly_hour ON metric_hourly (hour);

-- (project, hour) pairs with raw rows written since their last roll-up, upserted in the
-- transaction that writes the rows.  gen grows with every such write: a roll-up deletes
-- a mark only if gen is still what it read before computing, so rows committed while it
-- ran keep their mark (the upsert's row lock orders the two; see storage/postgres_rollups).
CREATE TABLE rollup_dirty (
    project text        NOT NULL,
    hour    timestamptz NOT NULL,
    gen     bigint      NOT NULL DEFAULT 0,
    PRIMARY KEY (project, hour)
);
CREATE INDEX rollup_dirty_hour ON rollup_dirty (hour);

-- Raw rows are complete from raw_kept_from on (the epoch: nothing deleted yet).  One row.
CREATE TABLE raw_horizon (
    id            integer     PRIMARY KEY CHECK (id = 1),
    raw_kept_from timestamptz NOT NULL
);
INSERT INTO raw_horizon (id, raw_kept_from) VALUES (1, '1970-01-01 00:00:00+00');

-- Rows written before this migration have never been rolled up.
INSERT INTO rollup_dirty (project, hour)
    SELECT DISTINCT project, date_trunc('hour', ts, 'UTC') FROM probes
    ON CONFLICT DO NOTHING;
INSERT INTO rollup_dirty (project, hour)
    SELECT DISTINCT project, date_trunc('hour', ts, 'UTC') FROM metric_samples
    ON CONFLICT DO NOTHING;
