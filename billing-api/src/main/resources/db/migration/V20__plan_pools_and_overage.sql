-- Plans with an overage price and a class-weighted pool (issue 10 item 3).
--
-- * plans.overage_price_micros_per_s: where set, the part of a charge beyond the plan's included
--   allowance is priced at it (micro-units per device-second) instead of the charge's price-book
--   price; credits, then postpaid, pay that amount. Such a plan is only assigned to an account that
--   allows postpaid overage (Plans.assign refuses otherwise). charge_deductions.unit_price_micros_per_s
--   records the price used (NULL: the charge's own price, charge_prices.price_micros_per_s).
-- * plan_class_weights: the plan's included_ns is one pool of weighted device-ns; a device-ns of
--   class c uses weight_ppm(c) / 10^6 weighted device-ns of it (a class without a row weighs
--   1 000 000, so a plan without weights is the one unweighted pool of V7). To stay exact, the pool
--   is counted in ppm-ns (weighted device-ns x 10^6, numeric): a charge of device_ns on class c with
--   pool_left ppm-ns left uses pool_used = min(device_ns x w, pool_left) of it and has
--   included_ns = floor(pool_used / w) device-ns included; the part of a device-ns the pool pays
--   only partly (less than one device-ns, on the one charge that empties the pool) is billed, and
--   its pool share is used up. charge_deductions.pool_used records it (NULL on rows written before
--   V20: included_ns x 10^6), allowance_used.used_pool sums it per account and usage month.
--   Deducting record by record and set-based gives the same rows: the set-based running sum of
--   demands device_ns x w capped at the pool is exactly the sequential rule.
--   No money is rounded here (DESIGN.md, "Money": the rounding rule stays Money.roundToMicros).
-- Caught by: billing-api PlanPoolDeductionTest (record by record == set-based, pool arithmetic
-- properties, invoice verify), PlansTest, server PlanPoolEndToEndTest.

ALTER TABLE plans ADD COLUMN overage_price_micros_per_s bigint
  CHECK (overage_price_micros_per_s >= 0);

CREATE TABLE plan_class_weights (
  plan_id      bigint NOT NULL REFERENCES plans (id),
  device_class text   NOT NULL CHECK (device_class ~ '^[a-z0-9]+(-[a-z0-9]+)*$'),
  weight_ppm   bigint NOT NULL CHECK (weight_ppm BETWEEN 1 AND 1000000000000),
  PRIMARY KEY (plan_id, device_class)
);

CREATE TRIGGER plan_class_weights_append_only BEFORE UPDATE OR DELETE ON plan_class_weights
  FOR EACH ROW EXECUTE FUNCTION refuse_change();

ALTER TABLE charge_deductions ADD COLUMN pool_used numeric(38,0);
ALTER TABLE charge_deductions ADD COLUMN unit_price_micros_per_s bigint;

ALTER TABLE allowance_used ADD COLUMN used_pool numeric(38,0);
UPDATE allowance_used SET used_pool = used_ns::numeric * 1000000;
ALTER TABLE allowance_used ALTER COLUMN used_pool SET NOT NULL;
ALTER TABLE allowance_used ADD CONSTRAINT allowance_used_pool_nonnegative CHECK (used_pool >= 0);

-- V18's statement-level cache trigger, also summing the pool used.
CREATE OR REPLACE FUNCTION charge_deductions_track() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  UPDATE allowance_used u SET used_ns = u.used_ns + d.used, used_pool = u.used_pool + d.pool
    FROM (SELECT account_id, usage_period, sum(included_ns) AS used,
                 sum(coalesce(pool_used, included_ns::numeric * 1000000)) AS pool
            FROM new_deductions
           GROUP BY account_id, usage_period ORDER BY account_id, usage_period) d
   WHERE u.account_id = d.account_id AND u.period = d.usage_period;
  INSERT INTO allowance_used (account_id, period, used_ns, used_pool)
    SELECT d.account_id, d.usage_period, d.used, d.pool
      FROM (SELECT account_id, usage_period, sum(included_ns) AS used,
                   sum(coalesce(pool_used, included_ns::numeric * 1000000)) AS pool
              FROM new_deductions
             GROUP BY account_id, usage_period) d
     WHERE NOT EXISTS (SELECT 1 FROM allowance_used u
                        WHERE u.account_id = d.account_id AND u.period = d.usage_period)
     ORDER BY d.account_id, d.usage_period;
  RETURN NULL;
END $$;

-- V7's record-by-record deduction (the fallback of the set-based path), with the pool and the
-- plan's overage price.
CREATE OR REPLACE FUNCTION deduct_charge(c charge_prices) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
  acct      accounts%ROWTYPE;
  usage_month date := date_trunc('month', c.finished_at, 'UTC')::date;
  pl        plans%ROWTYPE;
  w         bigint := 1000000;
  pool      numeric(38,0) := 0;
  inc       bigint := 0;
  price     bigint := c.price_micros_per_s;
  left_nm   numeric(38,0);
  credit    numeric(38,0) := 0;
  g         record;
  take      numeric(38,0);
BEGIN
  SELECT * INTO acct FROM accounts WHERE id = c.account_id;
  SELECT p.* INTO pl
    FROM subscriptions s JOIN plans p ON p.id = s.plan_id
    WHERE s.account_id = c.account_id AND s.active @> c.finished_at;
  IF FOUND THEN
    w := coalesce((SELECT weight_ppm FROM plan_class_weights
                    WHERE plan_id = pl.id AND device_class = c.device_class), 1000000);
    price := coalesce(pl.overage_price_micros_per_s, c.price_micros_per_s);
    pool := least(c.device_ns::numeric * w,
                  greatest(0, pl.included_ns::numeric * 1000000 - coalesce((
                    SELECT used_pool FROM allowance_used
                     WHERE account_id = c.account_id AND period = usage_month), 0)));
    inc := div(pool, w)::bigint;
  END IF;
  left_nm := (c.device_ns - inc)::numeric * price;
  FOR g IN
    SELECT r.grant_id AS id, r.remaining_nmicros AS remaining
      FROM grant_remaining r
      WHERE r.account_id = c.account_id
        AND (r.expires_at IS NULL OR r.expires_at > c.finished_at) AND r.remaining_nmicros > 0
      ORDER BY r.expires_at NULLS LAST, r.grant_id
  LOOP
    EXIT WHEN left_nm <= 0;
    take := least(g.remaining, left_nm);
    INSERT INTO balance_entries (account_id, grant_id, kind, amount_nmicros, request_id)
      VALUES (c.account_id, g.id, 'deduction', -take, c.request_id);
    credit := credit + take;
    left_nm := left_nm - take;
  END LOOP;
  INSERT INTO charge_deductions (request_id, kind, account_id, usage_period, invoice_period,
      included_ns, billable_ns, credit_nmicros, postpaid_nmicros, overspend_nmicros, pool_used,
      unit_price_micros_per_s)
    VALUES (c.request_id, 'charge', c.account_id, usage_month,
      invoice_period_for(c.account_id, usage_month),
      inc, c.device_ns - inc, credit,
      CASE WHEN acct.postpaid_allowed THEN left_nm ELSE 0 END,
      CASE WHEN acct.postpaid_allowed THEN 0 ELSE left_nm END,
      pool, pl.overage_price_micros_per_s);
END $$;

-- V7's reversal of a voided charge, giving back its pool share and keeping its unit price.
CREATE OR REPLACE FUNCTION reverse_charge(rid text) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
  d charge_deductions%ROWTYPE;
BEGIN
  SELECT * INTO d FROM charge_deductions WHERE request_id = rid AND kind = 'charge';
  IF NOT FOUND THEN
    RETURN;
  END IF;
  PERFORM pg_advisory_xact_lock(hashtext('account:' || d.account_id));
  INSERT INTO charge_deductions (request_id, kind, account_id, usage_period, invoice_period,
      included_ns, billable_ns, credit_nmicros, postpaid_nmicros, overspend_nmicros, pool_used,
      unit_price_micros_per_s)
    VALUES (rid, 'void', d.account_id, d.usage_period,
      invoice_period_for(d.account_id, d.invoice_period),
      -d.included_ns, -d.billable_ns, -d.credit_nmicros, -d.postpaid_nmicros, -d.overspend_nmicros,
      -coalesce(d.pool_used, d.included_ns::numeric * 1000000), d.unit_price_micros_per_s)
    ON CONFLICT DO NOTHING;
  IF FOUND THEN
    INSERT INTO balance_entries (account_id, grant_id, kind, amount_nmicros, request_id)
      SELECT account_id, grant_id, 'adjustment', -amount_nmicros, rid
        FROM balance_entries WHERE request_id = rid AND kind = 'deduction' ORDER BY id;
  END IF;
END $$;

-- V18's set-based deduction, with the pool counted in ppm-ns (a running sum of the demands
-- device_ns x weight, capped at what is left of the pool) and the plan's overage price.
CREATE OR REPLACE FUNCTION price_and_deduct_charges() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  a     bigint;
  c     charge_prices%ROWTYPE;
  batch charge_prices[];
  slow  bigint[];
BEGIN
  -- 1. Price exactly the rows this statement inserted (as V7); keep the priced records that are
  -- not voided (a void applied by V6's row trigger in this statement), by account and request id.
  WITH dc AS MATERIALIZED (
    SELECT d.device, d.device_name, device_class(d.device, d.device_name) AS cls
      FROM (SELECT DISTINCT device, device_name FROM new_rows) d
  ),
  priced AS (
    INSERT INTO charge_prices (request_id, account_id, model, device_class, finished_at,
        device_ns, price_version_id, price_micros_per_s, cost_nmicros)
    SELECT n.request_id, n.account_id, n.model, dc.cls, n.finished_at, n.device_ns, pv.id,
           pv.price_micros_per_s, n.device_ns::numeric * pv.price_micros_per_s
      FROM new_rows n
      JOIN accounts ac ON ac.id = n.account_id
      JOIN dc ON dc.device = n.device AND dc.device_name = n.device_name
      JOIN LATERAL (
        SELECT v.id, v.price_micros_per_s FROM price_versions v
         WHERE v.currency = ac.currency AND v.device_class = dc.cls
           AND v.model IN (n.model, '*') AND v.effective @> n.finished_at
         ORDER BY v.model = '*' LIMIT 1) pv ON true
    RETURNING *
  ),
  rolled AS (
    -- V14's cost rollup, here instead of in its trigger on charge_prices: new_rows has the key
    -- and device, so no lookup of every record in the partitioned usage_records. Sorted by the
    -- key, so two writers lock rows in the same order and never deadlock.
    INSERT INTO cost_hourly AS h (hour, api_key_id, account_id, model, device, requests,
        cost_nmicros)
    SELECT date_trunc('hour', n.finished_at, 'UTC'), n.api_key_id, n.account_id, n.model,
           n.device, count(*), sum(p.cost_nmicros)
      FROM priced p
      JOIN new_rows n ON n.request_id = p.request_id
     WHERE NOT EXISTS (SELECT 1 FROM charge_voids v
                        WHERE v.request_id = p.request_id AND v.applied_ns IS NOT NULL)
     GROUP BY 1, 2, 3, 4, 5
     ORDER BY 2, 1, 4, 5
    ON CONFLICT (api_key_id, hour, model, device, account_id) DO UPDATE SET
      requests = h.requests + EXCLUDED.requests,
      cost_nmicros = h.cost_nmicros + EXCLUDED.cost_nmicros
  )
  SELECT array_agg(ROW(p.*)::charge_prices ORDER BY p.account_id, p.request_id) INTO batch
    FROM priced p
   WHERE NOT EXISTS (SELECT 1 FROM charge_voids v WHERE v.request_id = p.request_id);
  IF batch IS NULL THEN
    RETURN NULL;
  END IF;

  -- 2. Lock the accounts, ascending (two writers never deadlock, never deduct the same funds).
  FOR a IN SELECT DISTINCT b.account_id FROM unnest(batch) b ORDER BY 1 LOOP
    PERFORM pg_advisory_xact_lock(hashtext('account:' || a));
  END LOOP;

  -- 3. Accounts the set-based path cannot take (read after the locks): a subscription boundary or
  -- a grant expiry inside the span of the account's records.
  SELECT coalesce(array_agg(s.account_id), '{}') INTO slow
    FROM (SELECT account_id, min(finished_at) AS f0, max(finished_at) AS f1
            FROM unnest(batch) GROUP BY account_id) s
   WHERE EXISTS (SELECT 1 FROM subscriptions su
                  WHERE su.account_id = s.account_id
                    AND su.active && tstzrange(s.f0, s.f1, '[]')
                    AND NOT su.active @> tstzrange(s.f0, s.f1, '[]'))
      OR EXISTS (SELECT 1 FROM grant_remaining r
                  WHERE r.account_id = s.account_id AND r.remaining_nmicros > 0
                    AND r.expires_at > s.f0 AND r.expires_at <= s.f1);

  -- 4. Every other account, in one statement (V16's arithmetic: running sums for the allowance,
  -- overlaps of needs and grant remainders laid end to end for the credits).
  WITH acct AS (
    SELECT s.account_id, s.f1, ac.postpaid_allowed, pl.id AS plan_id,
           coalesce(pl.included_ns, 0) AS allowance, pl.overage_price_micros_per_s AS overage
      FROM (SELECT account_id, min(finished_at) AS f0, max(finished_at) AS f1
              FROM unnest(batch) GROUP BY account_id) s
      JOIN accounts ac ON ac.id = s.account_id
      LEFT JOIN LATERAL (SELECT p.* FROM subscriptions su JOIN plans p ON p.id = su.plan_id
                          WHERE su.account_id = s.account_id AND su.active @> s.f0) pl ON true
     WHERE s.account_id <> ALL (slow)
  ),
  rec AS (
    SELECT b.*, date_trunc('month', b.finished_at, 'UTC')::date AS usage_month, acct.allowance,
           coalesce(w.weight_ppm, 1000000) AS weight,
           coalesce(acct.overage, b.price_micros_per_s) AS unit_price, acct.overage
      FROM unnest(batch) b JOIN acct ON acct.account_id = b.account_id
      LEFT JOIN plan_class_weights w
        ON w.plan_id = acct.plan_id AND w.device_class = b.device_class
  ),
  months AS MATERIALIZED (
    SELECT g.account_id, g.usage_month,
           invoice_period_for(g.account_id, g.usage_month) AS invoice_period,
           greatest(0, acct.allowance::numeric * 1000000 - coalesce(au.used_pool, 0)) AS cap
      FROM (SELECT DISTINCT account_id, usage_month FROM rec) g
      JOIN acct ON acct.account_id = g.account_id
      LEFT JOIN allowance_used au ON au.account_id = g.account_id AND au.period = g.usage_month
  ),
  pool AS (
    SELECT rec.*, least(d_before + demand, cap) - least(d_before, cap) AS pool_used
      FROM (SELECT rec.*, m.cap, m.invoice_period, device_ns::numeric * weight AS demand,
                   sum(device_ns::numeric * weight) OVER (PARTITION BY rec.account_id,
                       rec.usage_month ORDER BY request_id) - device_ns::numeric * weight AS d_before
              FROM rec JOIN months m
                ON m.account_id = rec.account_id AND m.usage_month = rec.usage_month) rec
  ),
  inc AS (
    SELECT pool.*, div(pool_used, weight)::bigint AS included FROM pool
  ),
  need AS (
    SELECT inc.*, need_end - need AS need_start
      FROM (SELECT inc.*,
                   (device_ns - included)::numeric * unit_price AS need,
                   sum((device_ns - included)::numeric * unit_price)
                     OVER (PARTITION BY account_id ORDER BY request_id) AS need_end
              FROM inc) inc
  ),
  grants AS (
    SELECT g.*, supply_end - g.remaining_nmicros AS supply_start
      FROM (SELECT r.grant_id, r.account_id, r.remaining_nmicros,
                   row_number() OVER w AS ord,
                   sum(r.remaining_nmicros) OVER w AS supply_end
              FROM grant_remaining r
              JOIN acct ON acct.account_id = r.account_id
             WHERE r.remaining_nmicros > 0 AND (r.expires_at IS NULL OR r.expires_at > acct.f1)
            WINDOW w AS (PARTITION BY r.account_id ORDER BY r.expires_at NULLS LAST, r.grant_id)) g
  ),
  takes AS (
    SELECT n.account_id, n.request_id, g.grant_id, g.ord,
           least(n.need_end, g.supply_end) - greatest(n.need_start, g.supply_start) AS take
      FROM need n
      JOIN grants g ON g.account_id = n.account_id
                   AND g.supply_start < n.need_end AND n.need_start < g.supply_end
     WHERE n.need > 0
  ),
  entries AS (
    INSERT INTO balance_entries (account_id, grant_id, kind, amount_nmicros, request_id)
    SELECT account_id, grant_id, 'deduction', -take, request_id
      FROM takes WHERE take > 0
     ORDER BY account_id, request_id, ord
    RETURNING 1
  )
  INSERT INTO charge_deductions (request_id, kind, account_id, usage_period, invoice_period,
      included_ns, billable_ns, credit_nmicros, postpaid_nmicros, overspend_nmicros, pool_used,
      unit_price_micros_per_s)
  SELECT n.request_id, 'charge', n.account_id, n.usage_month, n.invoice_period,
         n.included, n.device_ns - n.included, coalesce(t.credit, 0),
         CASE WHEN acct.postpaid_allowed THEN n.need - coalesce(t.credit, 0) ELSE 0 END,
         CASE WHEN acct.postpaid_allowed THEN 0 ELSE n.need - coalesce(t.credit, 0) END,
         n.pool_used, n.overage
    FROM need n
    JOIN acct ON acct.account_id = n.account_id
    LEFT JOIN (SELECT request_id, sum(take) AS credit FROM takes GROUP BY request_id) t
      ON t.request_id = n.request_id
   ORDER BY n.account_id, n.request_id;

  -- 5. The accounts left, record by record as V7 did.
  IF cardinality(slow) > 0 THEN
    FOR c IN
      SELECT * FROM unnest(batch) b WHERE b.account_id = ANY (slow)
       ORDER BY b.account_id, b.request_id
    LOOP
      PERFORM deduct_charge(c);
    END LOOP;
  END IF;
  RETURN NULL;
END $$;

-- Unused since V18 dropped its trigger (V18 kept it defined).
DROP FUNCTION cost_hourly_add();
