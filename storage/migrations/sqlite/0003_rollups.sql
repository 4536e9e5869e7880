-- Hourly roll-ups, the dirty-hour marks that keep them exact, and the raw horizon
-- (SQLite).  Definitions and the reasoning behind them: storage/rollups.py.

-- One row per (project, hour) of probes; times are INTEGER microseconds so sums are exact.
-- WITHOUT ROWID: the primary key is the table, no second copy of the key.
CREATE TABLE probe_hourly (
    project        TEXT    NOT NULL,
    hour_us        INTEGER NOT NULL,      -- start of the UTC hour
    probes         INTEGER NOT NULL,
    failed         INTEGER NOT NULL,
    observed_us    INTEGER NOT NULL,
    up_us          INTEGER NOT NULL,
    latency_avg_ms REAL,                  -- non-failed probes only; NULL if none
    latency_max_ms REAL,
    PRIMARY KEY (project, hour_us)
) WITHOUT ROWID;
-- uptime over a time range for the whole fleet reads by hour; covering, so the table
-- itself is never visited.
CREATE INDEX probe_hourly_hour ON probe_hourly (hour_us, project, observed_us, up_us);

-- probe_hourly summed per (project, UTC day), rewritten with its hours in one transaction:
-- long windows read a row per day (30 days x 1,000 projects = 30k rows, not 720k).
CREATE TABLE probe_daily (
    project     TEXT    NOT NULL,
    day_us      INTEGER NOT NULL,         -- 00:00 UTC
    probes      INTEGER NOT NULL,
    failed      INTEGER NOT NULL,
    observed_us INTEGER NOT NULL,
    up_us       INTEGER NOT NULL,
    PRIMARY KEY (project, day_us)
) WITHOUT ROWID;
CREATE INDEX probe_daily_day ON probe_daily (day_us, project, observed_us, up_us);

CREATE TABLE metric_hourly (
    project TEXT    NOT NULL,
    metric  TEXT    NOT NULL,
    hour_us INTEGER NOT NULL,
    n       INTEGER NOT NULL,             -- finite samples (NaN and +-inf are skipped)
    min     REAL    NOT NULL,
    avg     REAL    NOT NULL,
    max     REAL    NOT NULL,
    PRIMARY KEY (project, metric, hour_us)
) WITHOUT ROWID;
CREATE INDEX metric_hourly_hour ON metric_hourly (hour_us);

-- (project, hour) pairs with raw rows written since their last roll-up.  The store adds
-- them in the transaction that writes the rows, so a late row re-opens its hour.
CREATE TABLE rollup_dirty (
    project TEXT    NOT NULL,
    hour_us INTEGER NOT NULL,
    PRIMARY KEY (project, hour_us)
) WITHOUT ROWID;
CREATE INDEX rollup_dirty_hour ON rollup_dirty (hour_us);

-- Raw rows are complete from raw_kept_from_us on (0: nothing deleted yet).  One row.
CREATE TABLE raw_horizon (
    id               INTEGER PRIMARY KEY CHECK (id = 1),
    raw_kept_from_us INTEGER NOT NULL
);
INSERT INTO raw_horizon (id, raw_kept_from_us) VALUES (1, 0);

-- Rows written before this migration have never been rolled up.
INSERT OR IGNORE INTO rollup_dirty (project, hour_us)
    SELECT DISTINCT project, ts_us - ts_us % 3600000000 FROM probes;
INSERT OR IGNORE INTO rollup_dirty (project, hour_us)
    SELECT DISTINCT project, ts_us - ts_us % 3600000000 FROM metric_samples;

-- Retention deletes raw rows by time, and a roll-up reads one hour of every project's
-- samples: both need the time first (the existing indexes lead with the project).
CREATE INDEX probes_ts ON probes (ts_us);
CREATE INDEX metric_samples_ts ON metric_samples (ts_us);
