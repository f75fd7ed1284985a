-- Every quality check a run made (Great Expectations on the raw loads, dbt tests on the
-- models), failed or passed: the evidence of why marts were or were not published.
create table if not exists ops.quality_results (
    id             bigint generated always as identity primary key,
    run_id         text not null,
    pipeline       text not null,
    check_name     text not null,
    check_kind     text not null,   -- 'great_expectations', 'dbt_test'
    table_name     text not null,   -- schema.table the check is about
    severity       text not null check (severity in ('error', 'warn')),
    passed         boolean,         -- null: the check did not run (a dbt test skipped)
    observed       jsonb not null,  -- e.g. element_count, unexpected_count, unexpected_percent
    failing_sample jsonb,           -- a few offending rows or values, with their file and row
    checked_at     timestamptz not null default now()
);
create index if not exists quality_results_run_idx on ops.quality_results (run_id);
create index if not exists quality_results_table_idx on ops.quality_results (table_name, checked_at desc);

-- The quality gate's verdict on each loaded file version: null until checked. Versions not
-- passed are checked again by the next run, and no marts are published while one is failed.
alter table ops.file_manifest
    add column if not exists quality_status text check (quality_status in ('passed', 'failed')),
    add column if not exists quality_run_id text;
