-- Pricing and deduction set-based end to end (issue 10 item 7). V16 deducted a batch in a few
-- statements, but the cache rows behind it were still kept record by record: V7's row triggers
-- balance_entries_track and charge_deductions_track ran one PL/pgSQL call and one in-place UPDATE
-- of the same hot grant_remaining / allowance_used row per entry (about 2000 per batch of 1000
-- records, each adding a version to a row the next update walks), and V16's function priced and
-- re-read the batch several times with per-record work that is the same for a whole group (the
-- device class, the plan, the invoice period). benchmarks/RESULTS.md, "Set-based deduction".
--
-- 1. The caches are kept by statement-level triggers over the transition table: one UPDATE per
--    grant and one per (account, usage month) that the statement touched, whatever its size. A
--    cached value is still exactly the sum of its entries after every statement (a cache row is
--    only read by later statements), so V7's deduct_charge, which inserts one entry per statement,
--    reads the same values as before. An UPDATE, then an INSERT of the rows still missing (not
--    INSERT ... ON CONFLICT: its CHECK would test the proposed row, a negative sum, before the
--    conflict).
-- 2. price_and_deduct_charges() prices the batch once, keeps the priced, unvoided records in an
--    array (no re-reading of charge_prices), computes the device class once per distinct device,
--    the plan once per account and the invoice period once per (account, usage month). Its result
--    is V16's and V7's: the same rows, in the same order (SetBasedDeductionTest compares V7, V16
--    and this function row by row).
--
-- The record-by-record fallback is taken for an account when a subscription starts or ends inside
-- the time span of its records in the batch, or a grant with something left expires in it (V16
-- checked the plan per record; this checks the span, which is coarser only when two plans in the
-- span happen to include the same amount: then the fallback gives the same rows).

DROP TRIGGER balance_entries_after_insert ON balance_entries;
DROP FUNCTION balance_entries_track();

CREATE FUNCTION balance_entries_track() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  -- Grants in ascending id, so two writers lock cache rows in one order and never deadlock.
  UPDATE grant_remaining r SET remaining_nmicros = r.remaining_nmicros + e.amount
    FROM (SELECT grant_id, sum(amount_nmicros) AS amount FROM new_entries
           WHERE grant_id IS NOT NULL GROUP BY grant_id ORDER BY grant_id) e
   WHERE r.grant_id = e.grant_id;
  INSERT INTO grant_remaining (grant_id, account_id, expires_at, granted_at, remaining_nmicros)
    SELECT g.id, g.account_id, g.expires_at, g.granted_at, e.amount
      FROM (SELECT grant_id, sum(amount_nmicros) AS amount FROM new_entries
             WHERE grant_id IS NOT NULL GROUP BY grant_id) e
      JOIN credit_grants g ON g.id = e.grant_id
     WHERE NOT EXISTS (SELECT 1 FROM grant_remaining r WHERE r.grant_id = e.grant_id)
     ORDER BY g.id;
  RETURN NULL;
END $$;

CREATE TRIGGER balance_entries_after_insert AFTER INSERT ON balance_entries
  REFERENCING NEW TABLE AS new_entries
  FOR EACH STATEMENT EXECUTE FUNCTION balance_entries_track();

DROP TRIGGER charge_deductions_after_insert ON charge_deductions;
DROP FUNCTION charge_deductions_track();

CREATE FUNCTION charge_deductions_track() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  UPDATE allowance_used u SET used_ns = u.used_ns + d.used
    FROM (SELECT account_id, usage_period, sum(included_ns) AS used FROM new_deductions
           GROUP BY account_id, usage_period ORDER BY account_id, usage_period) d
   WHERE u.account_id = d.account_id AND u.period = d.usage_period;
  INSERT INTO allowance_used (account_id, period, used_ns)
    SELECT d.account_id, d.usage_period, d.used
      FROM (SELECT account_id, usage_period, sum(included_ns) AS used FROM new_deductions
             GROUP BY account_id, usage_period) d
     WHERE NOT EXISTS (SELECT 1 FROM allowance_used u
                        WHERE u.account_id = d.account_id AND u.period = d.usage_period)
     ORDER BY d.account_id, d.usage_period;
  RETURN NULL;
END $$;

CREATE TRIGGER charge_deductions_after_insert AFTER INSERT ON charge_deductions
  REFERENCING NEW TABLE AS new_deductions
  FOR EACH STATEMENT EXECUTE FUNCTION charge_deductions_track();

-- The cost rollup moves into price_and_deduct_charges (step 1), the only writer of charge_prices:
-- V14's trigger looked every priced record up again in the partitioned usage_records for its key
-- and device, which the transition table new_rows already has. cost_hourly_add() stays defined,
-- unused.
DROP TRIGGER charge_prices_cost_hourly ON charge_prices;

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
    SELECT s.account_id, s.f1, ac.postpaid_allowed,
           coalesce((SELECT p.included_ns FROM subscriptions su JOIN plans p ON p.id = su.plan_id
                      WHERE su.account_id = s.account_id AND su.active @> s.f0), 0) AS allowance
      FROM (SELECT account_id, min(finished_at) AS f0, max(finished_at) AS f1
              FROM unnest(batch) GROUP BY account_id) s
      JOIN accounts ac ON ac.id = s.account_id
     WHERE s.account_id <> ALL (slow)
  ),
  rec AS (
    SELECT b.*, date_trunc('month', b.finished_at, 'UTC')::date AS usage_month, acct.allowance
      FROM unnest(batch) b JOIN acct ON acct.account_id = b.account_id
  ),
  months AS MATERIALIZED (
    SELECT g.account_id, g.usage_month,
           invoice_period_for(g.account_id, g.usage_month) AS invoice_period,
           greatest(0, acct.allowance - coalesce(au.used_ns, 0)) AS cap
      FROM (SELECT DISTINCT account_id, usage_month FROM rec) g
      JOIN acct ON acct.account_id = g.account_id
      LEFT JOIN allowance_used au ON au.account_id = g.account_id AND au.period = g.usage_month
  ),
  inc AS (
    SELECT rec.*, least(d_before + device_ns, cap) - least(d_before, cap) AS included
      FROM (SELECT rec.*, m.cap, m.invoice_period,
                   sum(device_ns) OVER (PARTITION BY rec.account_id, rec.usage_month
                                        ORDER BY request_id) - device_ns AS d_before
              FROM rec JOIN months m
                ON m.account_id = rec.account_id AND m.usage_month = rec.usage_month) rec
  ),
  need AS (
    SELECT inc.*, need_end - need AS need_start
      FROM (SELECT inc.*,
                   (device_ns - included)::numeric * price_micros_per_s AS need,
                   sum((device_ns - included)::numeric * price_micros_per_s)
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
      included_ns, billable_ns, credit_nmicros, postpaid_nmicros, overspend_nmicros)
  SELECT n.request_id, 'charge', n.account_id, n.usage_month, n.invoice_period,
         n.included, n.device_ns - n.included, coalesce(t.credit, 0),
         CASE WHEN acct.postpaid_allowed THEN n.need - coalesce(t.credit, 0) ELSE 0 END,
         CASE WHEN acct.postpaid_allowed THEN 0 ELSE n.need - coalesce(t.credit, 0) END
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

-- A change to what an account may spend, committed by any replica, the command line or by hand,
-- reaches every replica's budget leases at once (InvalidationListener, kind 'account': each
-- LeasedBudgets renews that account's lease on its budget thread) instead of at its next periodic
-- renewal: a suspension or resumption, a postpaid switch, a credit grant, a plan assigned. Not a
-- deduction (the ledger's hot path; a replica counts its own charges, and renewals see the rest).
-- Caught by: billing-api SuspensionPropagationTest.
CREATE FUNCTION accounts_notify_budget() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('gpumeter_invalidate', 'account:' || NEW.id);
  RETURN NULL;
END $$;

CREATE TRIGGER accounts_notify_budget AFTER UPDATE ON accounts
  FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status
                     OR OLD.postpaid_allowed IS DISTINCT FROM NEW.postpaid_allowed)
  EXECUTE FUNCTION accounts_notify_budget();

CREATE FUNCTION account_funds_notify_budget() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('gpumeter_invalidate', 'account:' || NEW.account_id);
  RETURN NULL;
END $$;

CREATE TRIGGER credit_grants_notify_budget AFTER INSERT ON credit_grants
  FOR EACH ROW EXECUTE FUNCTION account_funds_notify_budget();

CREATE TRIGGER subscriptions_notify_budget AFTER INSERT OR UPDATE ON subscriptions
  FOR EACH ROW EXECUTE FUNCTION account_funds_notify_budget();
