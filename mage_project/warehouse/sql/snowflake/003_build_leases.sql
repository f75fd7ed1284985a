-- Who is building the marts (warehouse_elt's write-audit-publish): one run at a time builds
-- into the audit schema and publishes it. A run takes the lease before dbt starts and gives it
-- up when it publishes or fails; a run killed meanwhile holds it until expires_at, unless the
-- next run on its machine sees its process gone (quality_gates._bind_lease).
create table if not exists ops.build_leases (
    name        varchar not null,
    run_id      varchar,
    acquired_at timestamp_tz,
    expires_at  timestamp_tz
);
insert into ops.build_leases (name)
    select 'warehouse_elt:marts'
    where not exists (select 1 from ops.build_leases where name = 'warehouse_elt:marts');
