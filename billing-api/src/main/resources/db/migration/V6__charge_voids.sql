-- Voided charges (issue 9, item 3): a client never pays for an answer it did not get.
--
-- charge_voids: one row per request whose answer was not delivered, with the reason. It may be
-- written before the charge is stored (the durability wait failed but the record can still land
-- later, e.g. from the outbox) or after it; the record itself stays in usage_records for audit.
--
-- usage_hourly_voided: the voided charges rolled up like usage_hourly (kept for good, so a void
-- still counts after its raw record is dropped by retention). Usage reports are usage_hourly minus
-- usage_hourly_voided. It is maintained by the two triggers below, whichever of the void and the
-- record commits second applies it (charge_voids.applied_ns records that it was applied, once).
-- Both triggers take a transaction advisory lock on the request id first, so the second of two
-- concurrent transactions waits for the first to commit and then sees its row (READ COMMITTED:
-- each statement in the trigger takes a fresh snapshot).

CREATE TABLE charge_voids (
  request_id text        PRIMARY KEY,
  reason     text        NOT NULL CHECK (reason IN ('not_durable', 'client_gone', 'write_failed')),
  voided_at  timestamptz NOT NULL DEFAULT now(),
  applied_ns bigint      CHECK (applied_ns >= 0)
);

CREATE TABLE usage_hourly_voided (
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

CREATE FUNCTION apply_charge_void(rid text) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
  r usage_records%ROWTYPE;
BEGIN
  PERFORM 1 FROM charge_voids WHERE request_id = rid AND applied_ns IS NULL;
  IF NOT FOUND THEN
    RETURN;
  END IF;
  SELECT * INTO r FROM usage_records WHERE request_id = rid LIMIT 1;
  IF NOT FOUND THEN
    RETURN;
  END IF;
  INSERT INTO usage_hourly_voided (hour, api_key_id, account_id, model, device, requests,
      device_ns, prefill_ns, decode_ns, prompt_tokens, completion_tokens)
    VALUES (date_trunc('hour', r.finished_at, 'UTC'), r.api_key_id, r.account_id, r.model,
      r.device, 1, r.device_ns, r.prefill_ns, r.decode_ns, r.prompt_tokens, r.completion_tokens)
  ON CONFLICT (api_key_id, hour, model, device) DO UPDATE SET
    requests = usage_hourly_voided.requests + 1,
    device_ns = usage_hourly_voided.device_ns + EXCLUDED.device_ns,
    prefill_ns = usage_hourly_voided.prefill_ns + EXCLUDED.prefill_ns,
    decode_ns = usage_hourly_voided.decode_ns + EXCLUDED.decode_ns,
    prompt_tokens = usage_hourly_voided.prompt_tokens + EXCLUDED.prompt_tokens,
    completion_tokens = usage_hourly_voided.completion_tokens + EXCLUDED.completion_tokens;
  UPDATE charge_voids SET applied_ns = r.device_ns WHERE request_id = rid;
END $$;

CREATE FUNCTION charge_voids_apply() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_advisory_xact_lock(hashtext('charge_void:' || NEW.request_id));
  PERFORM apply_charge_void(NEW.request_id);
  RETURN NULL;
END $$;

CREATE TRIGGER charge_voids_after_insert AFTER INSERT ON charge_voids
  FOR EACH ROW EXECUTE FUNCTION charge_voids_apply();

CREATE TRIGGER usage_records_apply_void AFTER INSERT ON usage_records
  FOR EACH ROW EXECUTE FUNCTION charge_voids_apply();
