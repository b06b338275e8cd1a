-- Raw usage records partitioned by month of finished_at (UTC), so whole months can be dropped
-- once they are older than the retention (at least 90 days). usage_hourly is not touched: the
-- rollups are kept for good.
--
-- Idempotency across partitions. A partitioned table's primary key must include the partition
-- key, so usage_records' key becomes (request_id, finished_at), which alone would let the same
-- request id with two different finished_at values be stored twice. The ledger therefore claims
-- each request id in usage_request_ids (unpartitioned, request_id PRIMARY KEY) in the same
-- statement as the raw insert: INSERT ... ON CONFLICT (request_id) DO NOTHING RETURNING
-- request_id decides which records are new, and only those reach usage_records and usage_hourly.
-- Claims are pruned with the raw rows (MaintenanceTask), never before them.
--
-- Existing rows are kept: the old table is renamed, its rows copied into the partitioned table
-- (a partition for every month that has data, plus this month and the next two) and their
-- request ids claimed, then the old table is dropped. Rows of months not yet partitioned would
-- land in usage_records_default; MaintenanceTask moves them into their month when it creates it.

ALTER TABLE usage_records RENAME TO usage_records_v2;
ALTER INDEX usage_records_pkey RENAME TO usage_records_v2_pkey;
ALTER INDEX usage_records_key_finished_idx RENAME TO usage_records_v2_key_finished_idx;

CREATE TABLE usage_records (
  request_id        text        NOT NULL,
  api_key_id        bigint      NOT NULL,
  account_id        bigint      NOT NULL,
  model             text        NOT NULL,
  device            text        NOT NULL,
  device_name       text        NOT NULL,
  device_uuid       text        NOT NULL,
  timer_kind        text        NOT NULL,
  driver_version    text        NOT NULL,
  cuda_version      text        NOT NULL,
  weight_policy     text        NOT NULL,
  device_ns         bigint      NOT NULL CHECK (device_ns >= 0),
  prefill_ns        bigint      NOT NULL CHECK (prefill_ns >= 0),
  decode_ns         bigint      NOT NULL CHECK (decode_ns >= 0),
  prompt_tokens     integer     NOT NULL CHECK (prompt_tokens >= 0),
  completion_tokens integer     NOT NULL CHECK (completion_tokens >= 0),
  queue_ns          bigint      NOT NULL CHECK (queue_ns >= 0),
  steps             integer     NOT NULL CHECK (steps >= 0),
  status            text        NOT NULL CHECK (status IN ('ok', 'cancelled', 'timeout', 'failed')),
  started_at        timestamptz NOT NULL,
  finished_at       timestamptz NOT NULL,
  recorded_at       timestamptz NOT NULL DEFAULT now(),
  CHECK (device_ns = prefill_ns + decode_ns),
  PRIMARY KEY (request_id, finished_at)
) PARTITION BY RANGE (finished_at);

CREATE INDEX usage_records_key_finished_idx ON usage_records (api_key_id, finished_at);
-- Range scans by time (reconciliation): rows arrive roughly in finished_at order and monthly
-- partitions are dropped whole, so a BRIN index stays small and selective.
CREATE INDEX usage_records_finished_brin ON usage_records USING brin (finished_at);

-- Records of a month that has no partition (far past, far future) land here.
CREATE TABLE usage_records_default PARTITION OF usage_records DEFAULT;

DO $$
DECLARE
  m timestamp; -- first instant of a month, UTC wall clock
BEGIN
  FOR m IN
    SELECT date_trunc('month', finished_at AT TIME ZONE 'UTC') FROM usage_records_v2
    UNION
    SELECT date_trunc('month', now() AT TIME ZONE 'UTC') + make_interval(months => g)
      FROM generate_series(0, 2) AS g
  LOOP
    EXECUTE format(
      'CREATE TABLE %I PARTITION OF usage_records FOR VALUES FROM (%L) TO (%L)',
      'usage_records_p' || to_char(m, 'YYYY_MM'),
      to_char(m, 'YYYY-MM-DD HH24:MI:SS') || '+00',
      to_char(m + interval '1 month', 'YYYY-MM-DD HH24:MI:SS') || '+00');
  END LOOP;
END $$;

INSERT INTO usage_records (request_id, api_key_id, account_id, model, device, device_name,
    device_uuid, timer_kind, driver_version, cuda_version, weight_policy, device_ns, prefill_ns,
    decode_ns, prompt_tokens, completion_tokens, queue_ns, steps, status, started_at,
    finished_at, recorded_at)
  SELECT request_id, api_key_id, account_id, model, device, device_name, device_uuid,
    timer_kind, driver_version, cuda_version, weight_policy, device_ns, prefill_ns, decode_ns,
    prompt_tokens, completion_tokens, queue_ns, steps, status, started_at, finished_at,
    recorded_at
  FROM usage_records_v2;

CREATE TABLE usage_request_ids (
  request_id  text        PRIMARY KEY,
  finished_at timestamptz NOT NULL
);
-- Pruning deletes claims by finished_at; claims are deleted and re-inserted over time, so a
-- B-tree (not BRIN, whose ranges only widen as pages are reused).
CREATE INDEX usage_request_ids_finished_idx ON usage_request_ids (finished_at);

INSERT INTO usage_request_ids (request_id, finished_at)
  SELECT request_id, finished_at FROM usage_records_v2;

DROP TABLE usage_records_v2;

-- Rollup rows are updated in place by every batch; free space on each page lets those updates
-- be HOT (no new index entries), which keeps the table and its indexes from bloating.
ALTER TABLE usage_hourly SET (fillfactor = 80);
