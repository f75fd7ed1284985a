-- What the store said of the file when it was last seen (size and modification time or
-- ETag): a sensor compares listings with it, without reading any file.
alter table ops.file_manifest add column if not exists source_tag text;
