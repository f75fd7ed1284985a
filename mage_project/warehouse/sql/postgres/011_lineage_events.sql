-- Every OpenLineage event the lineage hub took (`python -m mage_project lineage serve`), from any
-- producer (this project, Airflow's provider, dbt-ol, Spark), once: event_key is a hash of the
-- run id, event type and event time (a JobEvent or DatasetEvent, which have no run: the job's or
-- dataset's name), so the same event posted again is not stored twice.
create table if not exists ops.lineage_events (
    event_key       text primary key,
    run_id          text,             -- null for a JobEvent or DatasetEvent
    event_type      text,             -- START, RUNNING, COMPLETE, ABORT, FAIL, OTHER; null as above
    event_time      timestamptz not null,
    job_namespace   text,             -- null for a DatasetEvent
    job_name        text,
    producer        text not null,
    -- The outputs' namespace and name (a tab between), a line each, each line ended by a newline:
    -- what the runs that wrote a product's tables are found by, without reading every event.
    output_datasets text not null,
    event           jsonb not null,
    received_at     timestamptz not null default now()
);
create index if not exists lineage_events_run_idx on ops.lineage_events (run_id, event_time);
create index if not exists lineage_events_job_idx
    on ops.lineage_events (job_namespace, job_name, event_time desc);
