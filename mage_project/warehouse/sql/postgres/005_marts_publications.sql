-- Every publish of the marts, with a fingerprint of what they were built from: a run whose
-- inputs are unchanged since the last publish does not rebuild them.
create table if not exists ops.marts_publications (
    run_id             text not null,
    inputs_fingerprint text not null,
    published_at       timestamptz not null default now()
);
create index if not exists marts_publications_published_idx
    on ops.marts_publications (published_at desc);
