-- Five-minute buckets of probe coverage and their dirty marks (PostgreSQL only: SQLite
-- reads the hours not rolled up from raw probes, so there is no migrations/sqlite/0009).
-- What a bucket holds, when it is dirty and how the job keeps it exact:
-- storage/postgres_buckets.py.

-- One row per (project, 5-minute bucket): the spans of storage/rollups.py clipped to the
-- bucket, in integer microseconds, so a bucket's sums are exact and twelve of them make
-- their hour's probe_hourly figures.  Kept as long as the raw rows.
CREATE TABLE probe_bucket (
    project     text        NOT NULL,
    bucket      timestamptz NOT NULL,   -- start of the bucket: :00, :05, ... of a UTC hour
    probes      integer     NOT NULL,   -- probes with ts inside the bucket
    failed      integer     NOT NULL,
    observed_us bigint      NOT NULL,
    up_us       bigint      NOT NULL,
    -- The bucket's last probe (by ts, id; NULL if none): the only probe before the next
    -- bucket whose span can reach into it, so reading that bucket raw needs no older rows.
    last_ts     timestamptz,
    last_level  text,
    PRIMARY KEY (project, bucket)
);
-- uptime for the whole fleet reads a range of buckets; INCLUDE makes it index-only.
CREATE INDEX probe_bucket_bucket ON probe_bucket (bucket) INCLUDE (project, observed_us, up_us);

-- Buckets whose rows are missing or stale, for the whole fleet: a batch of probes marks
-- the bucket of each probe and the next one of its hour, in the transaction that writes
-- them.  gen as in rollup_dirty (0003): the job deletes a mark only if gen is what it
-- read before computing.
CREATE TABLE bucket_dirty (
    bucket timestamptz PRIMARY KEY,
    gen    bigint      NOT NULL DEFAULT 0
);

-- Probes written before this migration have no buckets yet.  (Marks older than the raw
-- horizon are dropped by the job without computing.)
INSERT INTO bucket_dirty (bucket)
    SELECT DISTINCT v.bucket
    FROM (SELECT DISTINCT date_bin('5 minutes', ts, timestamptz '2000-01-01 00:00:00+00')
                          AS bucket
          FROM probes) x
    CROSS JOIN LATERAL (VALUES (x.bucket), (x.bucket + interval '5 minutes')) AS v (bucket)
    WHERE v.bucket < date_trunc('hour', x.bucket, 'UTC') + interval '1 hour';
