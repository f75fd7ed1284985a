-- File drops (warehouse_elt): raw tables, append-only, every row with its file's lineage.
-- The loading session names the file (set_config) so that COPY fills the lineage columns.
create table if not exists raw.crm__customers (
    customer_id    bigint not null,
    email          text,
    full_name      text,
    country        text,
    signup_at      timestamptz not null,
    utm_campaign   text,
    updated_at     timestamptz not null,
    _file_key      text not null default current_setting('mage_project.file_key'),
    _file_checksum text not null default current_setting('mage_project.file_checksum'),
    _row_number    bigint not null,
    _loaded_at     timestamptz not null default now()
);

create table if not exists raw.billing__payments (
    payment_id     text not null,
    customer_id    bigint not null,
    amount         numeric(18,2) not null,
    status         text not null,
    paid_at        timestamptz not null,
    updated_at     timestamptz not null,
    _file_key      text not null default current_setting('mage_project.file_key'),
    _file_checksum text not null default current_setting('mage_project.file_checksum'),
    _row_number    bigint not null,
    _loaded_at     timestamptz not null default now()
);

create table if not exists raw.marketing__ad_spend (
    date           date not null,
    campaign       text not null,
    channel        text not null,
    spend          numeric(18,2) not null,
    impressions    bigint not null,
    clicks         bigint not null,
    _file_key      text not null default current_setting('mage_project.file_key'),
    _file_checksum text not null default current_setting('mage_project.file_checksum'),
    _row_number    bigint not null,
    _loaded_at     timestamptz not null default now()
);

-- Rows of a file that do not fit their declared types.
create table if not exists raw.load_rejects (
    file_key      text not null,
    file_checksum text not null,
    row_number    bigint not null,
    reason        text not null,
    raw_line      text not null,
    rejected_at   timestamptz not null default now(),
    primary key (file_key, file_checksum, row_number)
);

-- One row per version of each landing file: loaded with its rows, or failed with why.
create table if not exists ops.file_manifest (
    file_key      text not null,
    version       integer not null,
    entity        text not null,
    size_bytes    bigint not null,
    checksum      text not null,
    status        text not null check (status in ('loaded', 'failed')),
    rows_total    bigint,
    rows_loaded   bigint,
    rows_rejected bigint,
    error         text,
    notes         text,
    run_id        text not null,
    recorded_at   timestamptz not null default now(),
    primary key (file_key, version)
);
