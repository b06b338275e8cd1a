-- Costs a customer can read (issue 11): the priced cost of charges rolled up per hour, so the
-- costs API answers 1h/1d buckets from a rollup kept for good (the raw records are dropped after
-- the retention period), and a notification when a price version changes (the receipt's price
-- cache, docs/DESIGN.md "Receipts").
--
-- cost_hourly holds, per (api key, UTC hour of finished_at, model, device), the number of priced
-- charges and the sum of their exact costs (charge_prices.cost_nmicros, nano-micro-units, never
-- rounded), net of voided charges. It is kept by two triggers of its own, so the V7 pricing and
-- deduction functions are not touched:
--  * after an INSERT into charge_prices (the V7 trigger prices the rows a ledger statement added,
--    each exactly once), the statement's new rows are added, except those whose void was already
--    applied (a void that arrived before its record is applied by the V6 row trigger before the
--    V7 statement trigger prices the record);
--  * after a void is applied (charge_voids.applied_ns set), the charge's priced cost, if it has
--    one, is subtracted.
-- Either order adds and subtracts a charge's cost at most once each, so cost_hourly equals the sum
-- of charge_prices.cost_nmicros of the charges that are not voided (CostsApiTest checks it).

CREATE TABLE cost_hourly (
  hour         timestamptz   NOT NULL CHECK (extract(epoch FROM hour) % 3600 = 0),
  api_key_id   bigint        NOT NULL,
  account_id   bigint        NOT NULL,
  model        text          NOT NULL,
  device       text          NOT NULL,
  requests     bigint        NOT NULL CHECK (requests >= 0),
  cost_nmicros numeric(38,0) NOT NULL CHECK (cost_nmicros >= 0),
  -- account_id is in the key although a key belongs to one account: a statement that carried one
  -- key id under two accounts (synthetic data) must not make the upsert touch a row twice
  PRIMARY KEY (api_key_id, hour, model, device, account_id)
);

CREATE INDEX cost_hourly_account_hour_idx ON cost_hourly (account_id, hour);

CREATE FUNCTION cost_hourly_add() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  -- Sorted by the key, so two writers lock rows in the same order and never deadlock.
  INSERT INTO cost_hourly AS h (hour, api_key_id, account_id, model, device, requests,
      cost_nmicros)
    SELECT date_trunc('hour', r.finished_at, 'UTC'), r.api_key_id, r.account_id, r.model,
           r.device, count(*), sum(n.cost_nmicros)
      FROM new_prices n
      JOIN usage_records r ON r.request_id = n.request_id AND r.finished_at = n.finished_at
     WHERE NOT EXISTS (SELECT 1 FROM charge_voids v
                        WHERE v.request_id = n.request_id AND v.applied_ns IS NOT NULL)
     GROUP BY 1, 2, 3, 4, 5
     ORDER BY 2, 1, 4, 5
  ON CONFLICT (api_key_id, hour, model, device, account_id) DO UPDATE SET
    requests = h.requests + EXCLUDED.requests,
    cost_nmicros = h.cost_nmicros + EXCLUDED.cost_nmicros;
  RETURN NULL;
END $$;

CREATE TRIGGER charge_prices_cost_hourly AFTER INSERT ON charge_prices
  REFERENCING NEW TABLE AS new_prices
  FOR EACH STATEMENT EXECUTE FUNCTION cost_hourly_add();

CREATE FUNCTION cost_hourly_void() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  UPDATE cost_hourly h SET requests = h.requests - 1, cost_nmicros = h.cost_nmicros - p.cost_nmicros
    FROM charge_prices p
    JOIN usage_records r ON r.request_id = p.request_id AND r.finished_at = p.finished_at
   WHERE p.request_id = NEW.request_id
     AND h.api_key_id = r.api_key_id AND h.account_id = r.account_id
     AND h.hour = date_trunc('hour', r.finished_at, 'UTC')
     AND h.model = r.model AND h.device = r.device;
  RETURN NULL;
END $$;

CREATE TRIGGER charge_voids_cost_hourly AFTER UPDATE OF applied_ns ON charge_voids
  FOR EACH ROW WHEN (OLD.applied_ns IS NULL AND NEW.applied_ns IS NOT NULL)
  EXECUTE FUNCTION cost_hourly_void();

-- The charges priced before this migration.
INSERT INTO cost_hourly (hour, api_key_id, account_id, model, device, requests, cost_nmicros)
  SELECT date_trunc('hour', r.finished_at, 'UTC'), r.api_key_id, r.account_id, r.model, r.device,
         count(*), sum(p.cost_nmicros)
    FROM charge_prices p
    JOIN usage_records r ON r.request_id = p.request_id AND r.finished_at = p.finished_at
   WHERE NOT EXISTS (SELECT 1 FROM charge_voids v
                      WHERE v.request_id = p.request_id AND v.applied_ns IS NOT NULL)
   GROUP BY 1, 2, 3, 4, 5;

-- A price version added, changed or removed: every replica's receipt price cache reloads
-- (InvalidationListener, kind 'price_version').
CREATE FUNCTION price_versions_notify_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('gpumeter_invalidate', 'price_version:' || coalesce(NEW.id, OLD.id));
  RETURN NULL;
END $$;

CREATE TRIGGER price_versions_notify_change AFTER INSERT OR UPDATE OR DELETE ON price_versions
  FOR EACH ROW EXECUTE FUNCTION price_versions_notify_change();
