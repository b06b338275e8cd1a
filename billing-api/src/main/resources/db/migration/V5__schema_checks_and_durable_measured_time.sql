-- Schema checks (issue 9, item 7) and durable measured time (item 9).
--
-- 1. usage_records: finished_at >= started_at. Added on the partitioned table, so every partition
--    gets it and PostgreSQL validates the existing rows.
-- 2. device_time_minutely: a new unbilled_ns column (device time measured and handed out as shares
--    to sequences whose charge was never stored, because the process died: moved out of
--    charged_ns after the restart, see ledger_accrual) and measured_ns = charged_ns + system_ns +
--    unbilled_ns on every row.
-- 3. measured_batches: the claim table that makes the measured deltas idempotent. The ledger
--    writes each batch's measured deltas in the same transaction as its usage records (or fsyncs
--    them into the outbox with them), under a batch id claimed here, so a batch replayed from the
--    outbox, or retried after a lost commit reply, is added once.
-- 4. ledger_accrual: per ledger process (instance) and (model, device), the step time it handed out
--    as shares (accrued_ns) and the device time of the usage records it made durable
--    (recorded_ns), written in the same transactions. After a crash the successor on the same
--    outbox (owner_id) settles the difference of its dead predecessors as unbilled time.
-- 5. unbilled_time: the audit of every settlement, with its reason.
--
-- Existing rows are checked before the constraints are added; a violation stops the migration
-- with a message that says how many rows and how to find them (they are never rewritten here).

DO $$
DECLARE
  bad bigint;
BEGIN
  SELECT count(*) INTO bad FROM usage_records WHERE finished_at < started_at;
  IF bad > 0 THEN
    RAISE EXCEPTION 'V5: % usage_records rows have finished_at < started_at; find them with'
      ' SELECT request_id, started_at, finished_at FROM usage_records WHERE finished_at < started_at',
      bad;
  END IF;
  SELECT count(*) INTO bad FROM device_time_minutely WHERE measured_ns <> charged_ns + system_ns;
  IF bad > 0 THEN
    RAISE EXCEPTION 'V5: % device_time_minutely rows have measured_ns <> charged_ns + system_ns;'
      ' find them with SELECT * FROM device_time_minutely WHERE measured_ns <> charged_ns + system_ns',
      bad;
  END IF;
END $$;

ALTER TABLE usage_records
  ADD CONSTRAINT usage_records_finished_after_started CHECK (finished_at >= started_at);

ALTER TABLE device_time_minutely
  ADD COLUMN unbilled_ns bigint NOT NULL DEFAULT 0 CHECK (unbilled_ns >= 0);

ALTER TABLE device_time_minutely
  ADD CONSTRAINT device_time_minutely_balanced
    CHECK (measured_ns = charged_ns + system_ns + unbilled_ns);

CREATE TABLE measured_batches (
  batch_id     uuid        PRIMARY KEY,
  instance_id  uuid        NOT NULL,
  committed_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX measured_batches_committed_idx ON measured_batches (committed_at);

CREATE TABLE ledger_accrual (
  owner_id    uuid        NOT NULL,
  instance_id uuid        NOT NULL,
  model       text        NOT NULL,
  device      text        NOT NULL,
  accrued_ns  bigint      NOT NULL CHECK (accrued_ns >= 0),
  recorded_ns bigint      NOT NULL CHECK (recorded_ns >= 0),
  last_minute timestamptz NOT NULL CHECK (extract(epoch FROM last_minute) % 60 = 0),
  settled_at  timestamptz,
  unbilled_ns bigint      NOT NULL DEFAULT 0 CHECK (unbilled_ns >= 0),
  PRIMARY KEY (instance_id, model, device)
);
CREATE INDEX ledger_accrual_owner_idx ON ledger_accrual (owner_id) WHERE settled_at IS NULL;

CREATE TABLE unbilled_time (
  instance_id uuid        NOT NULL,
  model       text        NOT NULL,
  device      text        NOT NULL,
  minute      timestamptz NOT NULL,
  unbilled_ns bigint      NOT NULL CHECK (unbilled_ns > 0),
  reason      text        NOT NULL CHECK (reason IN ('crash')),
  recorded_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (instance_id, model, device, minute)
);
