-- The ledger. One row per request, keyed by its request id: the ledger is idempotent on it
-- (INSERT ... ON CONFLICT (request_id) DO NOTHING), across retries, restarts and replicas.
-- Times in integer nanoseconds, counts in integers; no floating point anywhere.
--
-- No foreign keys to api_keys/accounts on purpose: a charge must never be refused by the
-- ledger (keys are revoked, never deleted, and the server only meters authenticated keys).

CREATE TABLE usage_records (
  request_id        text        PRIMARY KEY,
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
  CHECK (device_ns = prefill_ns + decode_ns)
);

CREATE INDEX usage_records_key_finished_idx ON usage_records (api_key_id, finished_at);

-- Hourly rollup, kept for good. Updated in the same transaction as the raw rows, from the rows
-- that INSERT ... RETURNING reports as actually inserted, so a duplicate never counts twice.
-- hour = date_trunc('hour', finished_at, 'UTC'). The primary key covers
-- (hour, api_key_id, model, device); api_key_id leads so per-key range reads use it.
CREATE TABLE usage_hourly (
  hour              timestamptz NOT NULL CHECK (extract(epoch FROM hour) % 3600 = 0),
  api_key_id        bigint      NOT NULL,
  account_id        bigint      NOT NULL,
  model             text        NOT NULL,
  device            text        NOT NULL,
  requests          bigint      NOT NULL CHECK (requests >= 0),
  device_ns         bigint      NOT NULL CHECK (device_ns >= 0),
  prefill_ns        bigint      NOT NULL CHECK (prefill_ns >= 0),
  decode_ns         bigint      NOT NULL CHECK (decode_ns >= 0),
  prompt_tokens     bigint      NOT NULL CHECK (prompt_tokens >= 0),
  completion_tokens bigint      NOT NULL CHECK (completion_tokens >= 0),
  PRIMARY KEY (api_key_id, hour, model, device),
  CHECK (device_ns = prefill_ns + decode_ns)
);

CREATE INDEX usage_hourly_account_hour_idx ON usage_hourly (account_id, hour);
