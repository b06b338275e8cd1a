-- KV memory-time in the hourly rollup (issue 18, item 3). Until now kv_byte_ns and peak_kv_bytes
-- lived only on the raw records (V10), so /v1/usage read them from usage_records and lost them when
-- retention dropped a partition. Now usage_hourly carries them too, kept for good like the rest:
--
--  * usage_hourly.kv_byte_ns: the sum of the bucket's records' kv_byte_ns (numeric: a sum can pass
--    a bigint), added by the ledger's one rollup statement (JdbcLedgerStore.RECORD_CTES) in the
--    statement that inserts the records, so a replayed record (its request id already claimed)
--    adds nothing, as for every other rollup column;
--  * usage_hourly_voided.kv_byte_ns: the voided charges' sum, added by the trigger below when a
--    void is applied; reports are usage_hourly minus usage_hourly_voided, as for device time;
--  * usage_hourly.peak_kv_bytes: the largest peak_kv_bytes of the bucket's charges that are NOT
--    voided. A maximum cannot be un-added, so when a void is applied the trigger below recomputes
--    it from the bucket's raw records (one key, one hour: the usage_records_key_finished_idx
--    index), holding the rollup row's lock first so a concurrent insert into the bucket either
--    committed before (and is seen) or waits and takes greatest() with the recomputed value.
--    Lock order: a void locks its usage_hourly_voided row, then the usage_hourly row; a ledger
--    batch whose record has a void already waiting locks them the other way round. The two can
--    deadlock only when a void of a record being inserted meets another void of the same key,
--    hour, model and device; PostgreSQL then aborts one, and both retry (the ledger on 40P01, a
--    void every second until stored: ChargeVoids).
--
-- Rows written before this migration are filled from the raw records still stored; hours whose
-- records retention already dropped keep 0 (not measured then).

ALTER TABLE usage_hourly
  ADD COLUMN kv_byte_ns    numeric(38,0) NOT NULL DEFAULT 0 CHECK (kv_byte_ns >= 0),
  ADD COLUMN peak_kv_bytes bigint        NOT NULL DEFAULT 0 CHECK (peak_kv_bytes >= 0);

ALTER TABLE usage_hourly_voided
  ADD COLUMN kv_byte_ns    numeric(38,0) NOT NULL DEFAULT 0 CHECK (kv_byte_ns >= 0);

UPDATE usage_hourly h SET kv_byte_ns = s.kv, peak_kv_bytes = s.peak
  FROM (SELECT r.api_key_id, date_trunc('hour', r.finished_at, 'UTC') AS hour, r.model, r.device,
               sum(r.kv_byte_ns) AS kv,
               coalesce(max(r.peak_kv_bytes) FILTER (WHERE v.applied_ns IS NULL), 0) AS peak
          FROM usage_records r
          LEFT JOIN charge_voids v ON v.request_id = r.request_id
         GROUP BY 1, 2, 3, 4) s
 WHERE h.api_key_id = s.api_key_id AND h.hour = s.hour AND h.model = s.model
   AND h.device = s.device;

UPDATE usage_hourly_voided h SET kv_byte_ns = s.kv
  FROM (SELECT r.api_key_id, date_trunc('hour', r.finished_at, 'UTC') AS hour, r.model, r.device,
               sum(r.kv_byte_ns) AS kv
          FROM usage_records r
          JOIN charge_voids v ON v.request_id = r.request_id AND v.applied_ns IS NOT NULL
         GROUP BY 1, 2, 3, 4) s
 WHERE h.api_key_id = s.api_key_id AND h.hour = s.hour AND h.model = s.model
   AND h.device = s.device;

-- After a void is applied (V6's apply_charge_void sets applied_ns once, after it added the charge
-- into usage_hourly_voided): its KV memory-time into the voided rollup, and the bucket's peak
-- recomputed without it.
CREATE FUNCTION usage_hourly_kv_void() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  r usage_records%ROWTYPE;
  h timestamptz;
BEGIN
  SELECT * INTO r FROM usage_records WHERE request_id = NEW.request_id LIMIT 1;
  IF NOT FOUND THEN
    RETURN NULL;
  END IF;
  h := date_trunc('hour', r.finished_at, 'UTC');
  UPDATE usage_hourly_voided SET kv_byte_ns = kv_byte_ns + r.kv_byte_ns
   WHERE api_key_id = r.api_key_id AND hour = h AND model = r.model AND device = r.device;
  PERFORM 1 FROM usage_hourly
   WHERE api_key_id = r.api_key_id AND hour = h AND model = r.model AND device = r.device
     FOR UPDATE;
  UPDATE usage_hourly SET peak_kv_bytes = coalesce((
      SELECT max(u.peak_kv_bytes) FROM usage_records u
       WHERE u.api_key_id = r.api_key_id AND u.finished_at >= h
         AND u.finished_at < h + interval '1 hour' AND u.model = r.model AND u.device = r.device
         AND NOT EXISTS (SELECT 1 FROM charge_voids v
                          WHERE v.request_id = u.request_id AND v.applied_ns IS NOT NULL)), 0)
   WHERE api_key_id = r.api_key_id AND hour = h AND model = r.model AND device = r.device;
  RETURN NULL;
END $$;

CREATE TRIGGER charge_voids_kv_rollup AFTER UPDATE OF applied_ns ON charge_voids
  FOR EACH ROW WHEN (OLD.applied_ns IS NULL AND NEW.applied_ns IS NOT NULL)
  EXECUTE FUNCTION usage_hourly_kv_void();
