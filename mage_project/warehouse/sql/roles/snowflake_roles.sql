-- The project's roles on Snowflake and what each may do (README "Warehouse roles"), for an
-- administrator to run (as SECURITYADMIN, or a role that owns the database):
-- `python -m mage_project warehouse roles` prints it for the configured SNOWFLAKE_DATABASE and
-- SNOWFLAKE_WAREHOUSE. Then grant each role to its user, and set SNOWFLAKE_LOADER_ROLE,
-- SNOWFLAKE_TRANSFORMER_ROLE and SNOWFLAKE_ANALYST_ROLE: each connection of the project takes
-- its role at login. Every statement may run again.
--
--   MAGE_LOADER       writes RAW and OPS (the loads, their stage and bookkeeping)
--   MAGE_TRANSFORMER  dbt: reads RAW, builds STAGING, INTERMEDIATE and MARTS, records its runs in OPS
--   MAGE_ANALYST      reads MARTS: the tables whose contract holds no pii column (Snowflake has
--                     no column privileges; granted table by table at each publish)
create role if not exists MAGE_LOADER;
create role if not exists MAGE_TRANSFORMER;
create role if not exists MAGE_ANALYST;

grant usage on warehouse {warehouse} to role MAGE_LOADER;
grant usage on warehouse {warehouse} to role MAGE_TRANSFORMER;
grant usage on warehouse {warehouse} to role MAGE_ANALYST;
grant usage on database {database} to role MAGE_LOADER;
grant usage on database {database} to role MAGE_TRANSFORMER;
grant usage on database {database} to role MAGE_ANALYST;

create schema if not exists {database}.RAW;
create schema if not exists {database}.OPS;
create schema if not exists {database}.STAGING;
create schema if not exists {database}.INTERMEDIATE;
create schema if not exists {database}.MARTS;

-- The loader: its loads' temporary tables and stage are in RAW.
grant usage, create table, create stage on schema {database}.RAW to role MAGE_LOADER;
grant usage, create table on schema {database}.OPS to role MAGE_LOADER;
grant select, insert, update, delete on all tables in schema {database}.RAW to role MAGE_LOADER;
grant select, insert, update, delete on all tables in schema {database}.OPS to role MAGE_LOADER;
grant select, insert, update, delete on future tables in schema {database}.RAW to role MAGE_LOADER;
grant select, insert, update, delete on future tables in schema {database}.OPS to role MAGE_LOADER;
grant read, write on all stages in schema {database}.RAW to role MAGE_LOADER;

-- The transformer: the audit schemas of write-audit-publish (MARTS__AUDIT) are its own.
grant create schema on database {database} to role MAGE_TRANSFORMER;
grant usage on schema {database}.RAW to role MAGE_TRANSFORMER;
grant usage, create table on schema {database}.OPS to role MAGE_TRANSFORMER;
grant select on all tables in schema {database}.RAW to role MAGE_TRANSFORMER;
grant select on future tables in schema {database}.RAW to role MAGE_TRANSFORMER;
grant select, insert, update, delete on all tables in schema {database}.OPS to role MAGE_TRANSFORMER;
grant select, insert, update, delete on future tables in schema {database}.OPS to role MAGE_TRANSFORMER;
grant usage, create table, create view on schema {database}.STAGING to role MAGE_TRANSFORMER;
grant usage, create table, create view on schema {database}.INTERMEDIATE to role MAGE_TRANSFORMER;
grant usage, create table, create view on schema {database}.MARTS to role MAGE_TRANSFORMER;

-- The analyst: the published schema only.
grant usage on schema {database}.MARTS to role MAGE_ANALYST;
