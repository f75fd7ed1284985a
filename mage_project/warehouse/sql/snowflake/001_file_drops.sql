-- The project's schemas and the file-drop tables (warehouse_elt) on Snowflake: the same
-- columns as on PostgreSQL (mage_project/warehouse/sql/postgres), in Snowflake's types.
-- Snowflake does not enforce primary keys: uniqueness is kept by the loader, under the
-- pipeline's write lock (ops.run_locks).
create schema if not exists raw;
create schema if not exists ops;

create table if not exists raw.crm__customers (
    customer_id    number(19,0) not null,
    email          varchar,
    full_name      varchar,
    country        varchar,
    signup_at      timestamp_tz not null,
    utm_campaign   varchar,
    updated_at     timestamp_tz not null,
    _file_key      varchar not null,
    _file_checksum varchar not null,
    _row_number    number(19,0) not null,
    _loaded_at     timestamp_tz not null default current_timestamp()
);

create table if not exists raw.billing__payments (
    payment_id     varchar not null,
    customer_id    number(19,0) not null,
    amount         number(18,2) not null,
    status         varchar not null,
    paid_at        timestamp_tz not null,
    updated_at     timestamp_tz not null,
    _file_key      varchar not null,
    _file_checksum varchar not null,
    _row_number    number(19,0) not null,
    _loaded_at     timestamp_tz not null default current_timestamp()
);

create table if not exists raw.marketing__ad_spend (
    date           date not null,
    campaign       varchar not null,
    channel        varchar not null,
    spend          number(18,2) not null,
    impressions    number(19,0) not null,
    clicks         number(19,0) not null,
    _file_key      varchar not null,
    _file_checksum varchar not null,
    _row_number    number(19,0) not null,
    _loaded_at     timestamp_tz not null default current_timestamp()
);

create table if not exists raw.load_rejects (
    file_key      varchar not null,
    file_checksum varchar not null,
    row_number    number(19,0) not null,
    reason        varchar not null,
    raw_line      varchar not null,
    rejected_at   timestamp_tz not null default current_timestamp()
);

create table if not exists ops.file_manifest (
    file_key      varchar not null,
    version       integer not null,
    entity        varchar not null,
    size_bytes    number(19,0) not null,
    checksum      varchar not null,
    status        varchar not null,
    rows_total    number(19,0),
    rows_loaded   number(19,0),
    rows_rejected number(19,0),
    error         varchar,
    notes         varchar,
    run_id        varchar not null,
    recorded_at   timestamp_tz not null default current_timestamp(),
    source_tag    varchar,
    quality_status varchar,   -- the raw quality gate's verdict: passed, failed, null until checked
    quality_run_id varchar
);

-- Every quality check a run made (expectations on the raw loads, dbt tests). observed and
-- failing_sample hold JSON text: a VALUES list cannot call parse_json(); query them with
-- parse_json(observed):unexpected_count.
create table if not exists ops.quality_results (
    id             integer autoincrement,
    run_id         varchar not null,
    pipeline       varchar not null,
    check_name     varchar not null,
    check_kind     varchar not null,
    table_name     varchar not null,
    severity       varchar not null,
    passed         boolean,
    observed       varchar not null,
    failing_sample varchar,
    checked_at     timestamp_tz not null default current_timestamp()
);

-- One row per pipeline: a writer updates its row first thing in its transaction, which
-- holds the row's table lock until commit, so two runs of a pipeline never write at once.
create table if not exists ops.run_locks (
    pipeline    varchar not null,
    locked_by   varchar,
    locked_at   timestamp_tz
);

-- Every publish of the marts, with a fingerprint of what they were built from.
create table if not exists ops.marts_publications (
    run_id             varchar not null,
    inputs_fingerprint varchar not null,
    published_at       timestamp_tz not null default current_timestamp()
);
