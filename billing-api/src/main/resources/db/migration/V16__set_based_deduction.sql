-- Set-based pricing and deduction (issue 10 item 7): the statement trigger usage_records_price of
-- V7 priced a batch in one statement but then deducted it record by record (deduct_charge: about
-- ten statements per record), about 15x the PostgreSQL CPU of the unpriced path
-- (benchmarks/RESULTS.md, "Pricing and deduction at charge time"). This replaces its function
-- with one that deducts the whole batch in a few statements, with the same result as V7's loop:
--
-- * the same order: accounts ascending, each under its advisory lock (taken before anything is
--   read), records of an account by request id;
-- * the allowance: V7 gives record i of an (account, usage month) min(device_ns, allowance - used
--   so far). While every record of the group sees the same allowance A (one subscription), with
--   cap = max(0, A - used before the batch) and D the group's device time before record i, that
--   is min(D + device_ns, cap) - min(D, cap): a running sum;
-- * credits: V7 takes from the account's grants with something left, earliest expiry first (then
--   grant id), that have not expired at the record's finished_at. While every record of the
--   account sees the same grants (no grant expires between the first and the last finished_at of
--   the account's records in the batch), the records' needs laid end to end and the grants'
--   remainders laid end to end are two partitions of one line: record i takes from grant g the
--   overlap of their intervals, exactly V7's greedy take;
-- * the same rows: one charge_deductions 'charge' row per priced record not voided, with the same
--   amounts and invoice period, and one balance_entries 'deduction' per (record, grant) taken
--   from, inserted per account in V7's order (request id, then grant order); the row triggers of
--   V7 keep grant_remaining and allowance_used as before.
--
-- An account whose batch breaks either condition (a subscription change or a grant expiry inside
-- the batch's time span: rare, a batch spans milliseconds) is deducted by V7's deduct_charge record
-- by record, as before. No rounding happens here (amounts stay exact nano-micro-units).
-- Caught by: billing-api SetBasedDeductionTest (a multi-account, multi-class batch deducts exactly
-- what V7's function does, fast and fallback paths), and the money tests of V7, unchanged.
CREATE OR REPLACE FUNCTION price_and_deduct_charges() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  a       bigint;
  c       charge_prices%ROWTYPE;
  slow    bigint[];
BEGIN
  -- 1. Price exactly the rows this statement inserted (as V7). A request id is new to the ledger
  -- (invariant 3), so the charge_prices rows of new_rows are this statement's; the statements
  -- below find them again by primary key, after the locks, with a fresh snapshot.
  INSERT INTO charge_prices (request_id, account_id, model, device_class, finished_at,
      device_ns, price_version_id, price_micros_per_s, cost_nmicros)
  SELECT n.request_id, n.account_id, n.model, dc.cls, n.finished_at, n.device_ns, pv.id,
         pv.price_micros_per_s, n.device_ns::numeric * pv.price_micros_per_s
    FROM new_rows n
    JOIN accounts ac ON ac.id = n.account_id
    CROSS JOIN LATERAL (SELECT device_class(n.device, n.device_name) AS cls) dc
    JOIN LATERAL (
      SELECT v.id, v.price_micros_per_s FROM price_versions v
       WHERE v.currency = ac.currency AND v.device_class = dc.cls
         AND v.model IN (n.model, '*') AND v.effective @> n.finished_at
       ORDER BY v.model = '*' LIMIT 1) pv ON true;
  IF NOT FOUND THEN
    RETURN NULL;
  END IF;

  -- 2. Lock the accounts, ascending (two writers never deadlock, never deduct the same funds).
  FOR a IN SELECT DISTINCT b.account_id FROM new_rows n JOIN charge_prices b USING (request_id)
            ORDER BY b.account_id LOOP
    PERFORM pg_advisory_xact_lock(hashtext('account:' || a));
  END LOOP;

  -- 3. Accounts the set-based path cannot take (read after the locks).
  SELECT coalesce(array_agg(DISTINCT s.account_id), '{}') INTO slow FROM (
    SELECT b.account_id
      FROM (SELECT b.* FROM new_rows n JOIN charge_prices b ON b.request_id = n.request_id
              WHERE NOT EXISTS (SELECT 1 FROM charge_voids v WHERE v.request_id = b.request_id)) b
      LEFT JOIN LATERAL (
        SELECT p.included_ns FROM subscriptions su JOIN plans p ON p.id = su.plan_id
         WHERE su.account_id = b.account_id AND su.active @> b.finished_at) al ON true
     GROUP BY b.account_id, date_trunc('month', b.finished_at, 'UTC')
    HAVING count(DISTINCT coalesce(al.included_ns, 0)) > 1
    UNION ALL
    SELECT r.account_id
      FROM (SELECT account_id, min(finished_at) AS f0, max(finished_at) AS f1
              FROM (SELECT b.* FROM new_rows n JOIN charge_prices b ON b.request_id = n.request_id
              WHERE NOT EXISTS (SELECT 1 FROM charge_voids v WHERE v.request_id = b.request_id)) pb GROUP BY account_id) span
      JOIN grant_remaining r ON r.account_id = span.account_id
     WHERE r.remaining_nmicros > 0 AND r.expires_at > span.f0 AND r.expires_at <= span.f1
  ) s;

  -- 4. Every other account, in one statement.
  WITH rec AS (
    SELECT b.*, date_trunc('month', b.finished_at, 'UTC')::date AS usage_month,
           coalesce(al.included_ns, 0) AS allowance
      FROM (SELECT b.* FROM new_rows n JOIN charge_prices b ON b.request_id = n.request_id
              WHERE NOT EXISTS (SELECT 1 FROM charge_voids v WHERE v.request_id = b.request_id)) b
      LEFT JOIN LATERAL (
        SELECT p.included_ns FROM subscriptions su JOIN plans p ON p.id = su.plan_id
         WHERE su.account_id = b.account_id AND su.active @> b.finished_at) al ON true
     WHERE b.account_id <> ALL (slow)
  ),
  inc AS (
    SELECT rec.*,
           least(d_before + device_ns, cap) - least(d_before, cap) AS included
      FROM (SELECT rec.*,
                   greatest(0, allowance - coalesce(au.used_ns, 0)) AS cap,
                   sum(device_ns) OVER (PARTITION BY rec.account_id, usage_month
                                        ORDER BY request_id) - device_ns AS d_before
              FROM rec
              LEFT JOIN allowance_used au
                ON au.account_id = rec.account_id AND au.period = rec.usage_month) rec
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
              JOIN (SELECT account_id, max(finished_at) AS f1 FROM rec GROUP BY account_id) span
                ON span.account_id = r.account_id
             WHERE r.remaining_nmicros > 0 AND (r.expires_at IS NULL OR r.expires_at > span.f1)
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
  SELECT n.request_id, 'charge', n.account_id, n.usage_month,
         invoice_period_for(n.account_id, n.usage_month),
         n.included, n.device_ns - n.included, coalesce(t.credit, 0),
         CASE WHEN ac.postpaid_allowed THEN n.need - coalesce(t.credit, 0) ELSE 0 END,
         CASE WHEN ac.postpaid_allowed THEN 0 ELSE n.need - coalesce(t.credit, 0) END
    FROM need n
    JOIN accounts ac ON ac.id = n.account_id
    LEFT JOIN (SELECT request_id, sum(take) AS credit FROM takes GROUP BY request_id) t
      ON t.request_id = n.request_id
   ORDER BY n.account_id, n.request_id;

  -- 5. The accounts left, record by record as V7 did.
  IF cardinality(slow) > 0 THEN
    FOR c IN
      SELECT b.* FROM (SELECT b.* FROM new_rows n JOIN charge_prices b ON b.request_id = n.request_id
              WHERE NOT EXISTS (SELECT 1 FROM charge_voids v WHERE v.request_id = b.request_id)) b
       WHERE b.account_id = ANY (slow) ORDER BY b.account_id, b.request_id
    LOOP
      PERFORM deduct_charge(c);
    END LOOP;
  END IF;
  RETURN NULL;
END $$;
