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
-- the outbox and the ledger's insert need no new field, and older rows get theirs here. A plain
-- column set by a row trigger, not a generated column: partition maintenance creates each month's
-- partition with CREATE TABLE (LIKE usage_records) and ATTACH, which a generated column refuses.
CREATE FUNCTION device_index_of(device text) RETURNS integer
  LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
  SELECT CASE WHEN device ~ '^[a-z]+:[0-9]{1,9}$'
              THEN substring(device FROM ':([0-9]+)$')::integer ELSE 0 END
$$;

ALTER TABLE usage_records ADD COLUMN device_index integer NOT NULL DEFAULT 0;

CREATE FUNCTION usage_records_set_device_index() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  NEW.device_index := device_index_of(NEW.device);
  RETURN NEW;
END
$$;

-- On the partitioned table: cloned to every partition, also to those attached later.
CREATE TRIGGER usage_records_device_index BEFORE INSERT ON usage_records
FOR EACH ROW EXECUTE FUNCTION usage_records_set_device_index();

UPDATE usage_records SET device_index = device_index_of(device)
 WHERE device_index <> device_index_of(device);
