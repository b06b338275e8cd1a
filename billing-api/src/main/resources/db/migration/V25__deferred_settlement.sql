-- Deduction off the ledger's write path (issue 10 item 7): charges are priced and deducted by a
-- settler, not by a trigger in the ledger's insert.
--
-- * The write path stores only the record. V7's statement trigger usage_records_price (pricing,
--   cost rollup and deduction in the insert's transaction) is dropped; each record draws
--   settle_seq from usage_settle_seq instead (a column default), and the statement takes the
--   settlement gate (an advisory lock) SHARED until its commit (usage_records_settle_gate).
-- * settle_charges() prices and deducts, set-based, every record stored since the watermark
--   (charge_settlement.settled_seq) in one run: V20's pricing, cost rollup and deduction, unchanged,
--   over the records in (watermark, high mark] instead of one insert's transition table. The high
--   mark is usage_settle_seq's last value read while holding the gate EXCLUSIVELY for that read
--   only, so every record numbered up to it is committed and seen by the run (a record numbered
--   later is a later run's). One run at a time per database (an advisory lock held to the caller's
--   commit). It writes the same per-record rows V20 did (charge_prices, charge_deductions,
--   balance_entries, caches), so receipts, invoices and invoice verify read what they read; only
--   the grouping differs: records are deducted in (run, account, request id) order, the rule
--   V16-V20 applied per insert. A record is settled exactly once (the watermark moves past it in
--   the run that settles it; replays never insert a record twice: usage_request_ids).
-- * Who runs it (Java, pricing.Settlement): every replica's settler thread, every second; and
--   every money read, before it reads (balances, invoices, verify, expiry, receipts of stored
--   charges, the request log and cost buckets, price changes, budget lease renewals), so nothing
--   a user sees lags and a lease never draws on funds that stored charges have used.
--   Lock order everywhere: the settlement lock, then the gate (briefly), then accounts ascending;
--   nothing calls settle_charges() while holding an account lock.
-- * Voids: reverse_charge takes the account's lock before it looks for the deduction, and the
--   settler reads the voids again under the account locks, so a void and a settlement of one charge
--   serialize (the void reverses the deduction, or the settler never makes it).
-- Caught by: billing-api DeferredSettlementTest, SetBasedDeductionTest, PlanPoolDeductionTest,
-- AccountingTest, CreditExpiryTest; server InvoiceEndToEndTest, PlanPoolEndToEndTest.

CREATE SEQUENCE usage_settle_seq;
ALTER TABLE usage_records ADD COLUMN settle_seq bigint;
ALTER TABLE usage_records ALTER COLUMN settle_seq SET DEFAULT nextval('usage_settle_seq');
-- A run finds its records by this index. A btree, not a BRIN: BRIN ranges stay unsummarized
-- until vacuum, and a run over an unsummarized partition reads all of it (measured: the run's cost
-- grew with the partition); a btree insert at the rightmost leaf is cheap (PostgreSQL caches it).
CREATE INDEX usage_records_settle_seq_idx ON usage_records (settle_seq);

-- The watermark: every record with settle_seq <= settled_seq is settled (records stored before
-- V25 have no settle_seq and were settled by V20's trigger).
CREATE TABLE charge_settlement (
  singleton   boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
  settled_seq bigint      NOT NULL CHECK (settled_seq >= 0),
  runs        bigint      NOT NULL DEFAULT 0,
  settled_at  timestamptz
);
INSERT INTO charge_settlement (settled_seq) VALUES (0);

DROP TRIGGER usage_records_price ON usage_records;

CREATE FUNCTION usage_records_settle_gate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_advisory_xact_lock_shared(hashtext('charge_settlement_gate'));
  RETURN NULL;
END $$;

CREATE TRIGGER usage_records_settle_gate BEFORE INSERT ON usage_records
  FOR EACH STATEMENT EXECUTE FUNCTION usage_records_settle_gate();

-- V20's reversal, now taking the account's lock (account from the record) BEFORE it looks for the
-- deduction: the settler deducts under that lock after re-reading the voids, so a void and a
-- settlement of the same charge serialize: either the settler sees the void and does not deduct,
-- or the void sees the deduction and reverses it (never neither).
CREATE OR REPLACE FUNCTION reverse_charge(rid text) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
  d   charge_deductions%ROWTYPE;
  acc bigint;
BEGIN
  SELECT account_id INTO acc FROM usage_records WHERE request_id = rid LIMIT 1;
  IF FOUND THEN
    PERFORM pg_advisory_xact_lock(hashtext('account:' || acc));
  END IF;
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

-- V20's price_and_deduct_charges() (kept defined, no longer a trigger), over the records stored
-- since the watermark; returns the number of charges it deducted.
CREATE FUNCTION settle_charges() RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
  lo    bigint;
  hi    bigint;
  a     bigint;
  c     charge_prices%ROWTYPE;
  batch charge_prices[];
  slow  bigint[];
BEGIN
  -- 0. Nothing stored since the watermark: done, without a lock (the sequence only grows).
  SELECT settled_seq INTO lo FROM charge_settlement;
  SELECT CASE WHEN is_called THEN last_value ELSE 0 END INTO hi FROM usage_settle_seq;
  IF hi <= lo THEN
    RETURN 0;
  END IF;
  -- One settlement at a time per database (held to the caller's commit); the watermark is read
  -- again after it, in a fresh snapshot (READ COMMITTED), so a run that waited sees the last one's.
  PERFORM pg_advisory_xact_lock(hashtext('charge_settlement'));
  SELECT settled_seq INTO lo FROM charge_settlement;
  -- The high mark: every writer takes the gate shared before its records draw settle_seq and holds
  -- it to its commit, so once the gate is ours exclusively every record numbered up to last_value
  -- is committed (or rolled back) and visible to the next statement. Held only for the read.
  BEGIN
    PERFORM pg_advisory_lock(hashtext('charge_settlement_gate'));
    SELECT CASE WHEN is_called THEN last_value ELSE 0 END INTO hi FROM usage_settle_seq;
    PERFORM pg_advisory_unlock(hashtext('charge_settlement_gate'));
  EXCEPTION WHEN OTHERS THEN
    PERFORM pg_advisory_unlock(hashtext('charge_settlement_gate'));
    RAISE;
  END;
  IF hi <= lo THEN
    RETURN 0;
  END IF;
  UPDATE charge_settlement SET settled_seq = hi, runs = runs + 1, settled_at = now();

  -- 1. Price the records stored since the watermark (V20's pricing and cost rollup, unchanged);
  -- keep the priced records that are not voided, by account and request id.
  WITH new_rows AS MATERIALIZED (
    SELECT * FROM usage_records WHERE settle_seq > lo AND settle_seq <= hi
  ),
  dc AS MATERIALIZED (
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
    RETURN 0;
  END IF;

  -- 2. Lock the accounts, ascending (two writers never deadlock, never deduct the same funds).
  FOR a IN SELECT DISTINCT b.account_id FROM unnest(batch) b ORDER BY 1 LOOP
    PERFORM pg_advisory_xact_lock(hashtext('account:' || a));
  END LOOP;
  -- A void committed after step 1 (its reverse_charge found nothing to reverse): read the voids
  -- again under the account locks, which reverse_charge takes before it looks.
  batch := ARRAY(SELECT ROW(b.*)::charge_prices FROM unnest(batch) b
                  WHERE NOT EXISTS (SELECT 1 FROM charge_voids v WHERE v.request_id = b.request_id)
                  ORDER BY b.account_id, b.request_id);
  IF cardinality(batch) = 0 THEN
    RETURN 0;
  END IF;

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
  RETURN cardinality(batch);
END $$;

