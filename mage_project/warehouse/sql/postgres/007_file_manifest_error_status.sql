-- A file version whose load failed for a reason of ours (a full disk, permissions, the
-- warehouse connection), not of its content: 'error', pending again for the next run, which
-- loads it as the next version. 'failed' stays the file's own fault (tried again when rewritten).
alter table ops.file_manifest drop constraint if exists file_manifest_status_check;
alter table ops.file_manifest
    add constraint file_manifest_status_check check (status in ('loaded', 'failed', 'error'));
