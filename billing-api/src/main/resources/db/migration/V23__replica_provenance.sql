-- V23: which replica measured each charge and each minute of device time (issue 14), so that
-- reconciliation reports drift per replica as well as per model and device and overall.
--
-- A replica is an outbox directory: its owner id (Outbox.ownerId, created once and kept in the
-- directory's ledger-owner file) is stable across restarts of the process on that directory, and
-- only a process holding the directory writes what it measured or replays what it held. So the
-- owner id is what ties a charge to the measured time it was split from, across a crash.
--
-- 1. usage_records.replica: the owner id of the ledger that stored the record. NULL for records
--    stored before V23 or by a store opened without an outbox (tools, benchmarks). Adding a
--    nullable column without a default to the partitioned table touches no row.
-- 2. device_time_minutely.replica: the owner id of the measured batch; part of the primary key, so
--    two replicas measuring the same model on the same device label ('cpu', 'cuda:0') keep their
--    own rows. Rows from before V23 get the nil UUID (not known).
-- Reconciliation groups the ledger side by coalesce(replica, nil), so old rows stay reconciled
-- against each other under the nil replica.

ALTER TABLE usage_records ADD COLUMN replica uuid;

ALTER TABLE device_time_minutely
  ADD COLUMN replica uuid NOT NULL DEFAULT '00000000-0000-0000-0000-000000000000';

ALTER TABLE device_time_minutely DROP CONSTRAINT device_time_minutely_pkey;
ALTER TABLE device_time_minutely ADD PRIMARY KEY (minute, model, device, replica);
