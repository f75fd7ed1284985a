-- The user-activity tables (user_activity_ingest) and the run bookkeeping on Snowflake: the
-- same columns as on PostgreSQL (sql/postgres/001_foundation.sql), in Snowflake's types.
-- Snowflake enforces no primary key or check constraint: one row per key is kept by the
-- loader (update, then insert the keys not there yet), under the pipeline's write lock
-- (ops.run_locks).

-- properties is a VARIANT, as jsonb is on PostgreSQL: stored parsed, so that an unchanged
-- re-delivery compares equal whatever its key order or spacing, and queryable as
-- properties:key. The loader stages it as text and converts it with parse_json.
create table if not exists raw.user_activity (
    event_id     varchar not null,
    user_id      number(19,0) not null,
    event_type   varchar not null,
    occurred_at  timestamp_tz not null,
    session_id   varchar,
    page_url     varchar,
    properties   variant,
    amount       number(38,10),
    _run_id      varchar not null,
    _loaded_at   timestamp_tz not null default current_timestamp(),
    _source_file varchar not null
);

-- One row per distinct bad record (payload_md5 is the key): the same record fetched again
-- by a re-run is not stored twice (its run's counts are in ops.pipeline_runs).
create table if not exists raw.user_activity_rejects (
    payload_md5 varchar not null,
    run_id      varchar not null,
    source_file varchar not null,
    row_number  number(19,0) not null,
    reason      varchar not null,
    raw_payload varchar not null,
    rejected_at timestamp_tz not null default current_timestamp()
);

-- One row per (pipeline, entity).
create table if not exists ops.watermarks (
    pipeline    varchar not null,
    entity      varchar not null,
    watermark   timestamp_tz not null,
    run_id      varchar not null,
    updated_at  timestamp_tz not null default current_timestamp()
);

-- One row per run_id; status is 'success' or 'failed'.
create table if not exists ops.pipeline_runs (
    run_id           varchar not null,
    pipeline         varchar not null,
    window_start     timestamp_tz,
    window_end       timestamp_tz,
    status           varchar not null,
    rows_fetched     number(19,0),
    rows_loaded      number(19,0),
    rows_rejected    number(19,0),
    rows_duplicate   number(19,0),
    rows_changed     number(19,0),
    started_at       timestamp_tz,
    finished_at      timestamp_tz not null default current_timestamp(),
    duration_seconds float,
    error            varchar
);
