-- metric_samples becomes one row per probe instant (PostgreSQL only: SQLite keeps its row
-- per sample, so there is no migrations/sqlite/0008; versions need not be contiguous).
--
-- Why: ingest was bounded by the btree on (project, metric, ts), one index insert per
-- sample.  A probe yields several samples at one instant, so a row per (project, ts) that
-- holds them all as two parallel arrays takes one btree entry and one heap tuple header
-- for all of them: names[i] is the metric of vals[i].  The store writes the consecutive
-- samples of one (project, ts) of a batch as one row; a (project, ts) may still have
-- several rows (later batches, samples not given consecutively), and a row may name one
-- metric twice: duplicate samples are kept, as before.  Order is (ts, id, position in
-- the arrays), the insertion order of samples with equal timestamps, as before.
-- metric_series (one metric of one project since a time) reads the project's rows from
-- (project, ts) and unnests them; a probe's 5-10 metrics make that a few times more
-- reading than the old per-metric index, for a query that reads a short range.
--
-- The arrays are checked as the narrow columns were (NOT NULL): no NULL name or value
-- (double precision stores NaN natively), as many values as names, at least one.
-- Existing samples are copied (grouped per (project, ts), in id order: their order and
-- NaNs are kept), the old table dropped; the indexes are built after the copy.

CREATE TABLE metric_samples_wide (
    id      bigint GENERATED ALWAYS AS IDENTITY,
    project text               NOT NULL,
    ts      timestamptz        NOT NULL,
    names   text[]             NOT NULL,
    vals    double precision[] NOT NULL,
    CONSTRAINT metric_samples_arrays CHECK (
        cardinality(names) > 0 AND cardinality(vals) = cardinality(names)
        AND array_position(names, NULL) IS NULL AND array_position(vals, NULL) IS NULL)
);

-- min(id) keeps the table in the order its rows were written (time order: BRIN stays
-- tight).
INSERT INTO metric_samples_wide (project, ts, names, vals)
    SELECT project, ts, array_agg(metric ORDER BY id), array_agg(value ORDER BY id)
    FROM metric_samples
    GROUP BY project, ts
    ORDER BY min(id);

DROP TABLE metric_samples;
ALTER TABLE metric_samples_wide RENAME TO metric_samples;
ALTER SEQUENCE metric_samples_wide_id_seq RENAME TO metric_samples_id_seq;

-- metric_series: one project since a time, oldest first.
CREATE INDEX metric_samples_project_ts ON metric_samples (project, ts);
CREATE INDEX metric_samples_ts_brin ON metric_samples USING brin (ts);

-- TimescaleDB, as in 0001: when the server offers it, the new table becomes a hypertable
-- (daily chunks, its existing rows moved into them) compressed after 7 days, segmented
-- by project.  Never run here (TimescaleDB is not installable on the machines this was
-- developed on); any failure is a WARNING and leaves the plain table.
DO $$
DECLARE
    ns text;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb') THEN
        RETURN;
    END IF;
    BEGIN
        CREATE EXTENSION IF NOT EXISTS timescaledb;
        SELECT extnamespace::regnamespace::text INTO ns
            FROM pg_extension WHERE extname = 'timescaledb';
        EXECUTE format('SELECT %s.create_hypertable(%L, %L, chunk_time_interval => %L::interval,'
                       ' migrate_data => true)', ns, 'metric_samples', 'ts', '1 day');
        ALTER TABLE metric_samples SET (timescaledb.compress,
            timescaledb.compress_segmentby = 'project', timescaledb.compress_orderby = 'ts, id');
        EXECUTE format('SELECT %s.add_compression_policy(%L, %L::interval)',
                       ns, 'metric_samples', '7 days');
    EXCEPTION WHEN OTHERS THEN
        RAISE WARNING 'orch: timescaledb is available but was not used (%); plain table',
            SQLERRM;
    END;
END
$$;
