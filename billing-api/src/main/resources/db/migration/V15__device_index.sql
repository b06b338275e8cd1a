-- Several devices per node (issue 17): a model runs one replica per device, and every charge and
-- every minute of measured time is kept per device. The device label is the per-device key:
-- cuda:N for a GPU (N the CUDA ordinal), cpu for a model on the CPU alone, and cpu:N for CPU
-- replica N when a model runs several replicas on the CPU. usage_hourly, device_time_minutely and
-- reconciliation already key on the label, so they break down per device as they are.

-- A CPU replica's label cpu:N is still the device class cpu (pricing at charge time, V7).
CREATE OR REPLACE FUNCTION device_class(device text, device_name text) RETURNS text
  LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
  SELECT CASE
    WHEN device = 'cpu' OR device ~ '^cpu:[0-9]+$' THEN 'cpu'
    ELSE coalesce(nullif(array_to_string(ARRAY(
        SELECT t FROM regexp_split_to_table(lower(device_name), '[^a-z0-9]+') WITH ORDINALITY AS s(t, i)
        WHERE t <> '' AND t !~ '^hbm[0-9]*e?$' ORDER BY i), '-'), ''), lower(device))
  END
$$;

-- The device's index on its node, as a column of every charge: N of cuda:N or cpu:N, 0 for cpu.
-- Derived from the label the charge carries (metering.TimerInfo.deviceIndex is the same rule), so
-- the outbox and the insert need no new field and old rows get theirs.
ALTER TABLE usage_records ADD COLUMN device_index integer GENERATED ALWAYS AS (
  CASE WHEN device ~ '^[a-z]+:[0-9]{1,9}$' THEN substring(device FROM ':([0-9]+)$')::integer ELSE 0 END
) STORED;
