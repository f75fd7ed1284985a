-- The rows of one load, found without reading the whole append-only table: a file version's
-- (its load's contract checks, the raw gate's expectations) and an API run's (its contract checks).
create index if not exists crm__customers_file_idx on raw.crm__customers (_file_key, _file_checksum);
create index if not exists billing__payments_file_idx on raw.billing__payments (_file_key, _file_checksum);
create index if not exists marketing__ad_spend_file_idx on raw.marketing__ad_spend (_file_key, _file_checksum);
create index if not exists user_activity_run_idx on raw.user_activity (_run_id);
