-- The project's roles (README "Warehouse roles"). The migrations create them when the owner may
-- create roles; elsewhere an administrator runs this file (`python -m mage_project warehouse
-- roles` prints it). The owner's next migration then grants them (postgres_grants.sql).
-- It may run again.
--
--   mage_loader       writes raw and ops (the loads and their bookkeeping); reads nothing else
--   mage_transformer  dbt: reads raw, builds staging, intermediate and marts (owning what it
--                     builds), records its runs in ops
--   mage_analyst      reads marts: the columns the contracts do not classify pii, granted table
--                     by table when a build is published (warehouse.grant_reads)
--
-- Each gets a login of its own, which the project connects as (POSTGRES_LOADER_USER, ...; the
-- embedded server's logins are the roles themselves), e.g. for the loader:
--   create role etl_loader login password '...' in role mage_loader;
--   alter role etl_loader set role mage_loader;  -- what it creates is the role's, not the login's
-- (the same for dbt's login with mage_transformer, and each analyst's with mage_analyst).

do $roles$
declare
    name text;
    may_create boolean := (select rolsuper or rolcreaterole from pg_roles where rolname = current_user);
begin
    foreach name in array array['mage_loader', 'mage_transformer', 'mage_analyst'] loop
        continue when exists (select from pg_roles where rolname = name);
        if not may_create then
            raise exception using errcode = 'insufficient_privilege',
                message = format('role %s does not exist, and %s may not create roles', name, current_user);
        end if;
        begin
            execute format('create role %I nologin', name);
        exception when duplicate_object or unique_violation then
            null;  -- another session created it meanwhile
        end;
    end loop;
end
$roles$;
