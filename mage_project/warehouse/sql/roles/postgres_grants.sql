-- What each of the project's roles (postgres_roles.sql) may do, granted by the owner of the
-- schemas: the migrations apply this file after the numbered migrations, whenever it has changed
-- and the roles exist. Every statement may run again.

create schema if not exists raw;
create schema if not exists ops;
create schema if not exists staging;
create schema if not exists intermediate;
create schema if not exists marts;

-- The loader.
grant usage on schema raw, ops to mage_loader;
grant select, insert, update, delete on all tables in schema raw, ops to mage_loader;
grant usage, select on all sequences in schema raw, ops to mage_loader;
alter default privileges in schema raw, ops grant select, insert, update, delete on tables to mage_loader;
alter default privileges in schema raw, ops grant usage, select on sequences to mage_loader;

-- The transformer.
grant usage on schema raw, ops to mage_transformer;
grant select on all tables in schema raw to mage_transformer;
alter default privileges in schema raw grant select on tables to mage_transformer;
grant select, insert, update, delete on all tables in schema ops to mage_transformer;
grant usage, select on all sequences in schema ops to mage_transformer;
alter default privileges in schema ops grant select, insert, update, delete on tables to mage_transformer;
alter default privileges in schema ops grant usage, select on sequences to mage_transformer;
grant usage, create on schema staging, intermediate, marts to mage_transformer;

-- The analyst: the published schema only (its tables' columns are granted at each publish).
grant usage on schema marts to mage_analyst;

do $ownership$
declare
    relation record;
begin
    -- Each build creates and drops the audit schemas of write-audit-publish (marts__audit).
    execute format('grant create on database %I to mage_transformer', current_database());
    -- What dbt built before these roles existed becomes the transformer's, so its builds can
    -- replace it.
    for relation in
        select c.oid::regclass as name, case c.relkind when 'v' then 'view'
               when 'm' then 'materialized view' else 'table' end as kind
        from pg_class as c join pg_namespace as n on n.oid = c.relnamespace
        where (n.nspname in ('staging', 'intermediate', 'marts') or n.nspname like '%\_\_audit')
          and c.relkind in ('r', 'v', 'm', 'p')
          and c.relowner <> 'mage_transformer'::regrole
    loop
        begin
            execute format('alter %s %s owner to mage_transformer', relation.kind, relation.name);
        exception when insufficient_privilege then
            raise warning '% stays %''s: only a member of mage_transformer may give it to it',
                relation.name, current_user;
        end;
    end loop;
    for relation in
        select nspname as name from pg_namespace
        where nspname like '%\_\_audit' and nspowner <> 'mage_transformer'::regrole
    loop
        execute format('alter schema %I owner to mage_transformer', relation.name);
    end loop;
end
$ownership$;
