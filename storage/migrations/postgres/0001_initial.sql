-- orch production store, initial schema (PostgreSQL); mirrors migrations/sqlite/0001.
--
-- Instants are timestamptz (microsecond resolution, UTC inside); the store passes and
-- returns only timezone-aware UTC datetimes, because asyncpg reads a naive datetime as
-- the client's local time.  Tables are created unqualified: they land in the first schema
-- of the connection's search_path (the store's ``schema`` option), so one database can
-- hold several isolated orch schemas (tests do).
--
-- probes and metric_samples are the large, append-only time series.  They are written
-- with COPY and have no primary key: ``id`` (an identity, unique by construction) only
-- breaks ties between equal timestamps, and a unique index would cost every insert and
-- would block TimescaleDB, which requires the time column in every unique index.
-- Rows arrive in time order, so a BRIN index on ts (a few pages per table, nearly free to
-- maintain) serves time-range scans and retention; the btree indexes serve the
-- per-project "recent" queries, which read a handful of rows newest first.

CREATE TABLE probes (
    id          bigint GENERATED ALWAYS AS IDENTITY,
    project     text             NOT NULL,
    ts          timestamptz      NOT NULL,
    level       text             NOT NULL,          -- pass | warn | fail
    latency_ms  double precision NOT NULL,
    reason      text             NOT NULL DEFAULT '',
    http_status integer,
    probe       text             NOT NULL DEFAULT 'health'
);
-- recent_probes: WHERE project = $1 ORDER BY ts DESC, id DESC LIMIT n: a backward scan;
-- id is left out of the key (smaller, cheaper to maintain at COPY rates): equal
-- timestamps are rare and an incremental sort orders them.
CREATE INDEX probes_project_ts ON probes (project, ts);
CREATE INDEX probes_ts_brin ON probes USING brin (ts);

CREATE TABLE metric_samples (
    id      bigint GENERATED ALWAYS AS IDENTITY,
    project text             NOT NULL,
    metric  text             NOT NULL,
    ts      timestamptz      NOT NULL,
    -- double precision stores NaN natively (SQLite needs NULL for it); NULL is unused.
    value   double precision NOT NULL
);
-- metric_series: one metric of one project since a time, oldest first.
CREATE INDEX metric_samples_project_metric_ts ON metric_samples (project, metric, ts);
CREATE INDEX metric_samples_ts_brin ON metric_samples USING brin (ts);

-- The outbox.  An identity value is drawn when the row is inserted, not when it commits,
-- so on its own seq order is NOT commit order.  The store makes it so: every transaction
-- that inserts events first takes a transaction-scoped advisory lock keyed on this table
-- (storage/postgres_sql.py, insert_events), so event-inserting transactions run their
-- insert-to-commit stretch one at a time and a later seq always commits later.
-- payload is the JSON text exactly as written (as in SQLite), not jsonb: jsonb refuses
-- NaN/Infinity and \u0000, which an event payload may carry; cast for ad-hoc queries.
-- No foreign key to incidents: the event log must record whatever it is given.
CREATE TABLE events (
    seq          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id           text        NOT NULL UNIQUE,
    type         text        NOT NULL,
    ts           timestamptz NOT NULL,
    source       text        NOT NULL,
    project      text,
    incident_id  text,
    payload      text        NOT NULL,                -- JSON object
    published_at timestamptz                          -- NULL until the relay published it
);
-- The relay's query: unpublished rows in seq order; stays tiny as rows get published.
CREATE INDEX events_unpublished ON events (seq) WHERE published_at IS NULL;
CREATE INDEX events_project_ts ON events (project, ts, seq);
CREATE INDEX events_ts ON events (ts, seq);

CREATE TABLE incidents (
    id          text        PRIMARY KEY,
    fingerprint text        NOT NULL,                 -- project:condition
    project     text        NOT NULL,
    condition   text        NOT NULL,
    severity    text        NOT NULL,
    summary     text        NOT NULL,
    state       text        NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'resolved')),
    opened_at   timestamptz NOT NULL,
    resolved_at timestamptz,
    duration_s  double precision,
    -- Insertion order (SQLite's rowid): breaks ties between equal opened_at.
    seq         bigint      GENERATED ALWAYS AS IDENTITY
);
-- At most one open incident per fingerprint, enforced by the engine so that replicas
-- racing to open the same incident get exactly one row (INSERT ... ON CONFLICT DO NOTHING).
CREATE UNIQUE INDEX incidents_one_open ON incidents (fingerprint) WHERE state = 'open';
CREATE INDEX incidents_project_opened ON incidents (project, opened_at, seq);
CREATE INDEX incidents_opened ON incidents (opened_at, seq);

-- TimescaleDB, when the server offers it: probes and metric_samples become hypertables
-- (daily chunks) whose chunks are compressed after 7 days, segmented by project.
-- NOTE: TimescaleDB is not installable on the machines this was developed and tested on
-- (DESIGN §9), so this branch has never run; without the extension (the usual case) the
-- plain tables and BRIN indexes above carry the load.  Any failure (no privilege to
-- create the extension, library not preloaded, ...) is a WARNING and leaves plain tables:
-- the inner block is a subtransaction, so nothing of a half-done conversion survives.
DO $$
DECLARE
    ns text;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb') THEN
        RETURN;
    END IF;
    BEGIN
        CREATE EXTENSION IF NOT EXISTS timescaledb;
        -- The extension may live in a schema outside our search_path: qualify its calls.
        SELECT extnamespace::regnamespace::text INTO ns
            FROM pg_extension WHERE extname = 'timescaledb';
        EXECUTE format('SELECT %s.create_hypertable(%L, %L, chunk_time_interval => %L::interval)',
                       ns, 'probes', 'ts', '1 day');
        EXECUTE format('SELECT %s.create_hypertable(%L, %L, chunk_time_interval => %L::interval)',
                       ns, 'metric_samples', 'ts', '1 day');
        ALTER TABLE probes SET (timescaledb.compress,
            timescaledb.compress_segmentby = 'project', timescaledb.compress_orderby = 'ts, id');
        ALTER TABLE metric_samples SET (timescaledb.compress,
            timescaledb.compress_segmentby = 'project, metric',
            timescaledb.compress_orderby = 'ts, id');
        EXECUTE format('SELECT %s.add_compression_policy(%L, %L::interval)',
                       ns, 'probes', '7 days');
        EXECUTE format('SELECT %s.add_compression_policy(%L, %L::interval)',
                       ns, 'metric_samples', '7 days');
    EXCEPTION WHEN OTHERS THEN
        RAISE WARNING 'orch: timescaledb is available but was not used (%); plain tables',
            SQLERRM;
    END;
END
$$;
