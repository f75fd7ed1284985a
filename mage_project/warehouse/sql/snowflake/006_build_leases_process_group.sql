-- The process group that holds a lease taken in a block process of Mage's scheduler (the
-- processes of one `mage start`: the server, the scheduler it restarts, its block processes), and
-- where that group id means something: the host, and the boot and pid namespace it ran in. The
-- next run on that host takes the lease over once no process of the group is left, or the host
-- booted again since (quality_gates._scheduler_gone). Null for a lease bound by flock.
alter table ops.build_leases add column if not exists holder_host varchar;
alter table ops.build_leases add column if not exists holder_boot varchar;
alter table ops.build_leases add column if not exists holder_process_group integer;
