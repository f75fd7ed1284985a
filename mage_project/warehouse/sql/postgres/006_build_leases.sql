-- Who is building the marts (warehouse_elt's write-audit-publish): one run at a time builds
-- into the audit schema and publishes it. A run takes the lease before dbt starts and gives it
-- up when it publishes or fails; a run killed meanwhile holds it until expires_at, unless the
-- next run on its machine sees its process gone (quality_gates._bind_lease).
create table if not exists ops.build_leases (
    name        text primary key,
    run_id      text,
    acquired_at timestamptz,
    expires_at  timestamptz
);
insert into ops.build_leases (name) values ('warehouse_elt:marts') on conflict do nothing;
