-- Every OpenLineage event the lineage hub took, from any producer, once (event_key: a hash of the
-- run id, event type and event time; see sql/postgres/011_lineage_events.sql). Snowflake enforces
-- no primary key: the hub inserts an event only where its key is not there yet, under a write
-- lock (ops.run_locks). event is a VARIANT, as jsonb is on PostgreSQL: queryable as event:run.
create table if not exists ops.lineage_events (
    event_key       varchar not null,
    run_id          varchar,
    event_type      varchar,
    event_time      timestamp_tz not null,
    job_namespace   varchar,
    job_name        varchar,
    producer        varchar not null,
    output_datasets varchar not null,
    event           variant not null,
    received_at     timestamp_tz not null default current_timestamp()
);

-- The hub's write lock, there before the first two events arrive at once.
insert into ops.run_locks (pipeline)
    select 'lineage_hub'
    where not exists (select 1 from ops.run_locks where pipeline = 'lineage_hub');
