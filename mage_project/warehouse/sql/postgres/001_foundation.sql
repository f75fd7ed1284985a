-- The project's own schemas and bookkeeping tables, plus the user-activity tables.
create schema if not exists raw;
create schema if not exists ops;

create table if not exists raw.user_activity (
    event_id     text primary key,
    user_id      bigint not null,
    event_type   text not null,
    occurred_at  timestamptz not null,
    session_id   text,
    page_url     text,
    properties   jsonb,
    amount       numeric,
    -- The bulk path COPYs landing files straight in: these come from the loading session.
    _run_id      text not null default current_setting('mage_project.run_id'),
    _loaded_at   timestamptz not null default now(),
    _source_file text not null default current_setting('mage_project.source_file')
);

-- One row per distinct bad record: the same record fetched again by a re-run is not
-- stored twice (its run's counts are in ops.pipeline_runs).
create table if not exists raw.user_activity_rejects (
    payload_md5 text primary key,
    run_id      text not null,
    source_file text not null,
    row_number  bigint not null,
    reason      text not null,
    raw_payload text not null,
    rejected_at timestamptz not null default now()
);

create table if not exists ops.watermarks (
    pipeline    text not null,
    entity      text not null,
    watermark   timestamptz not null,
    run_id      text not null,
    updated_at  timestamptz not null default now(),
    primary key (pipeline, entity)
);

create table if not exists ops.pipeline_runs (
    run_id          text primary key,
    pipeline        text not null,
    window_start    timestamptz,
    window_end      timestamptz,
    status          text not null check (status in ('success', 'failed')),
    rows_fetched    bigint,
    rows_loaded     bigint,
    rows_rejected   bigint,
    rows_duplicate  bigint,
    rows_changed    bigint,
    started_at      timestamptz,
    finished_at     timestamptz not null default now(),
    duration_seconds double precision,
    error           text
);
create index if not exists pipeline_runs_pipeline_idx on ops.pipeline_runs (pipeline, finished_at desc);
