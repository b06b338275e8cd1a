-- Money (issue 10): the price book, plans, prepaid credits, deduction at charge time, invoices.
--
-- Units (docs/DESIGN.md, "Money"): prices are integer micro-units of the account's currency per
-- device-second (bigint). A charge's exact cost is device_ns x price, an integer number of
-- nano-micro-units (1e-15 of a currency unit), kept unrounded as numeric(38,0). Balances move in
-- the same exact unit. Rounding to micro-units happens once, per invoice line, half-even, in
-- Java (io.gpumeter.billing.pricing.Money.roundToMicros); SQL never rounds money.
--
-- Pricing and deduction run in the statement-level trigger price_and_deduct_charges below, in the
-- same transaction as the insert of the usage records, and only for the rows that statement
-- inserted (the ledger inserts only newly claimed request ids), so a replay or retry of a stored
-- request is never priced or deducted twice.

CREATE EXTENSION IF NOT EXISTS btree_gist;

ALTER TABLE accounts
  ADD COLUMN currency text NOT NULL DEFAULT 'USD' CHECK (currency ~ '^[A-Z]{3}$'),
  ADD COLUMN status text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended')),
  ADD COLUMN postpaid_allowed boolean NOT NULL DEFAULT false;

ALTER TABLE api_keys
  ADD COLUMN label text NOT NULL DEFAULT '' CHECK (length(label) <= 200);

-- The one rule that turns a timer's device into a device class: cpu stays cpu; an accelerator's
-- name is lower-cased, split on anything that is not a letter or digit, memory-type tokens
-- (hbm, hbm2, hbm2e, hbm3, hbm3e) dropped, and joined with '-':
-- 'NVIDIA H100 80GB HBM3' -> 'nvidia-h100-80gb', 'NVIDIA H200' -> 'nvidia-h200'.
CREATE FUNCTION device_class(device text, device_name text) RETURNS text
  LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
  SELECT CASE
    WHEN device = 'cpu' THEN 'cpu'
    ELSE coalesce(nullif(array_to_string(ARRAY(
        SELECT t FROM regexp_split_to_table(lower(device_name), '[^a-z0-9]+') WITH ORDINALITY AS s(t, i)
        WHERE t <> '' AND t !~ '^hbm[0-9]*e?$' ORDER BY i), '-'), ''), lower(device))
  END
$$;

-- Effective-dated prices: one version per (model or '*', device class, currency) at any instant.
CREATE TABLE price_versions (
  id                 bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  model              text        NOT NULL CHECK (length(model) BETWEEN 1 AND 200),
  device_class       text        NOT NULL CHECK (device_class ~ '^[a-z0-9]+(-[a-z0-9]+)*$'),
  currency           text        NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
  price_micros_per_s bigint      NOT NULL CHECK (price_micros_per_s >= 0),
  effective          tstzrange   NOT NULL CHECK (NOT isempty(effective) AND lower(effective) IS NOT NULL
                                                 AND lower_inc(effective) AND NOT upper_inc(effective)),
  created_at         timestamptz NOT NULL DEFAULT now(),
  EXCLUDE USING gist (model WITH =, device_class WITH =, currency WITH =, effective WITH &&)
);

-- A plan: device-ns included per UTC calendar month, one pool over all device classes.
CREATE TABLE plans (
  id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  name        text        NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 200),
  included_ns bigint      NOT NULL CHECK (included_ns >= 0),
  created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE subscriptions (
  id         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  account_id bigint      NOT NULL REFERENCES accounts (id),
  plan_id    bigint      NOT NULL REFERENCES plans (id),
  active     tstzrange   NOT NULL CHECK (NOT isempty(active) AND lower(active) IS NOT NULL),
  created_at timestamptz NOT NULL DEFAULT now(),
  EXCLUDE USING gist (account_id WITH =, active WITH &&)
);

-- Prepaid credit: a grant or a top-up, in micro-units, with an optional expiry. What is left of
-- it is the sum of its balance entries (never a column updated in place).
CREATE TABLE credit_grants (
  id            bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  account_id    bigint      NOT NULL REFERENCES accounts (id),
  source        text        NOT NULL CHECK (source IN ('grant', 'topup')),
  amount_micros bigint      NOT NULL CHECK (amount_micros > 0),
  expires_at    timestamptz,
  granted_at    timestamptz NOT NULL DEFAULT now(),
  note          text        NOT NULL DEFAULT '',
  CHECK (expires_at IS NULL OR expires_at > granted_at)
);

CREATE INDEX credit_grants_account_idx ON credit_grants (account_id);

-- Every movement of prepaid money, append-only; amounts in nano-micro-units, + adds to the
-- account's balance, - takes from it. An account's balance is the sum of its entries.
CREATE TABLE balance_entries (
  id           bigint        GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  account_id   bigint        NOT NULL REFERENCES accounts (id),
  grant_id     bigint        REFERENCES credit_grants (id),
  kind         text          NOT NULL CHECK (kind IN ('grant', 'topup', 'deduction', 'expiry',
                                                      'adjustment', 'reservation', 'release')),
  amount_nmicros numeric(38,0) NOT NULL,
  request_id   text,
  created_at   timestamptz   NOT NULL DEFAULT now(),
  CHECK ((kind IN ('grant', 'topup', 'adjustment', 'release') AND amount_nmicros >= 0)
      OR (kind IN ('deduction', 'expiry', 'reservation') AND amount_nmicros <= 0))
);

CREATE INDEX balance_entries_grant_idx ON balance_entries (grant_id);
CREATE INDEX balance_entries_account_idx ON balance_entries (account_id);
CREATE INDEX balance_entries_request_idx ON balance_entries (request_id) WHERE request_id IS NOT NULL;

-- Append-only tables refuse UPDATE and DELETE loudly.
CREATE FUNCTION refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION '% is append-only', TG_TABLE_NAME USING ERRCODE = 'check_violation';
END $$;

CREATE TRIGGER balance_entries_append_only BEFORE UPDATE OR DELETE ON balance_entries
  FOR EACH ROW EXECUTE FUNCTION refuse_change();

-- What is left of each grant, kept by the trigger below equal to the sum of the grant's entries
-- (a cache so a deduction does not sum a grant's history; Money.verifyBalances checks it).
CREATE TABLE grant_remaining (
  grant_id          bigint        PRIMARY KEY REFERENCES credit_grants (id),
  account_id        bigint        NOT NULL,
  expires_at        timestamptz,
  granted_at        timestamptz   NOT NULL,
  remaining_nmicros numeric(38,0) NOT NULL CHECK (remaining_nmicros >= 0)
);

CREATE INDEX grant_remaining_account_idx ON grant_remaining (account_id, expires_at, grant_id);

CREATE FUNCTION balance_entries_track() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.grant_id IS NOT NULL THEN
    UPDATE grant_remaining SET remaining_nmicros = remaining_nmicros + NEW.amount_nmicros
      WHERE grant_id = NEW.grant_id;
    IF NOT FOUND THEN
      INSERT INTO grant_remaining (grant_id, account_id, expires_at, granted_at, remaining_nmicros)
        SELECT g.id, g.account_id, g.expires_at, g.granted_at, NEW.amount_nmicros
          FROM credit_grants g WHERE g.id = NEW.grant_id;
    END IF;
  END IF;
  RETURN NULL;
END $$;

CREATE TRIGGER balance_entries_after_insert AFTER INSERT ON balance_entries
  FOR EACH ROW EXECUTE FUNCTION balance_entries_track();

-- The priced charge: one row per priced usage record, written in the record's transaction. A
-- record with no price version for its (model, device class, currency) at finished_at is not
-- priced (no row) and not deducted; Money.verify counts such records.
CREATE TABLE charge_prices (
  request_id         text          PRIMARY KEY,
  account_id         bigint        NOT NULL,
  model              text          NOT NULL,
  device_class       text          NOT NULL,
  finished_at        timestamptz   NOT NULL,
  device_ns          bigint        NOT NULL CHECK (device_ns >= 0),
  price_version_id   bigint        NOT NULL REFERENCES price_versions (id),
  price_micros_per_s bigint        NOT NULL,
  cost_nmicros       numeric(38,0) NOT NULL CHECK (cost_nmicros = device_ns::numeric * price_micros_per_s)
);

-- How each priced charge was paid, append-only: kind 'charge' once per request, 'void' once when
-- the charge was voided (the negation of the 'charge' row). invoice_period is the UTC month whose
-- invoice carries the row: the usage month, or the first month after the account's latest
-- finalized invoice when that month is already finalized (late usage).
CREATE TABLE charge_deductions (
  request_id         text          NOT NULL,
  kind               text          NOT NULL CHECK (kind IN ('charge', 'void')),
  account_id         bigint        NOT NULL,
  usage_period       date          NOT NULL CHECK (extract(day FROM usage_period) = 1),
  invoice_period     date          NOT NULL CHECK (extract(day FROM invoice_period) = 1
                                                   AND invoice_period >= usage_period),
  included_ns        bigint        NOT NULL,
  billable_ns        bigint        NOT NULL,
  credit_nmicros     numeric(38,0) NOT NULL,
  postpaid_nmicros   numeric(38,0) NOT NULL,
  overspend_nmicros  numeric(38,0) NOT NULL,
  created_at         timestamptz   NOT NULL DEFAULT now(),
  PRIMARY KEY (request_id, kind)
);

CREATE INDEX charge_deductions_account_idx ON charge_deductions (account_id, invoice_period);

CREATE TRIGGER charge_deductions_append_only BEFORE UPDATE OR DELETE ON charge_deductions
  FOR EACH ROW EXECUTE FUNCTION refuse_change();

-- Allowance used per account and usage month, kept by the trigger below equal to the sum of
-- charge_deductions.included_ns (a cache; Money.verifyBalances checks it).
CREATE TABLE allowance_used (
  account_id bigint NOT NULL,
  period     date   NOT NULL,
  used_ns    bigint NOT NULL CHECK (used_ns >= 0),
  PRIMARY KEY (account_id, period)
);

CREATE FUNCTION charge_deductions_track() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  UPDATE allowance_used SET used_ns = used_ns + NEW.included_ns
    WHERE account_id = NEW.account_id AND period = NEW.usage_period;
  IF NOT FOUND THEN
    INSERT INTO allowance_used (account_id, period, used_ns)
      VALUES (NEW.account_id, NEW.usage_period, NEW.included_ns);
  END IF;
  RETURN NULL;
END $$;

CREATE TRIGGER charge_deductions_after_insert AFTER INSERT ON charge_deductions
  FOR EACH ROW EXECUTE FUNCTION charge_deductions_track();

CREATE TABLE invoices (
  account_id   bigint      NOT NULL REFERENCES accounts (id),
  period       date        NOT NULL CHECK (extract(day FROM period) = 1),
  currency     text        NOT NULL,
  total_micros bigint      NOT NULL,
  finalized_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (account_id, period)
);

CREATE TABLE invoice_lines (
  account_id       bigint NOT NULL,
  period           date   NOT NULL,
  line_no          int    NOT NULL,
  model            text   NOT NULL,
  device_class     text   NOT NULL,
  price_version_id bigint NOT NULL,
  unit_price_micros_per_s bigint NOT NULL,
  late_from        date,
  requests         bigint NOT NULL,
  device_ns        bigint NOT NULL,
  included_ns      bigint NOT NULL,
  billable_ns      bigint NOT NULL,
  amount_micros    bigint NOT NULL,
  credits_micros   bigint NOT NULL,
  due_micros       bigint NOT NULL CHECK (due_micros = amount_micros - credits_micros),
  PRIMARY KEY (account_id, period, line_no),
  FOREIGN KEY (account_id, period) REFERENCES invoices (account_id, period)
);

CREATE TRIGGER invoices_append_only BEFORE UPDATE OR DELETE ON invoices
  FOR EACH ROW EXECUTE FUNCTION refuse_change();
CREATE TRIGGER invoice_lines_append_only BEFORE UPDATE OR DELETE ON invoice_lines
  FOR EACH ROW EXECUTE FUNCTION refuse_change();

-- The month whose invoice takes a row of usage month p for account a: p unless p is finalized.
CREATE FUNCTION invoice_period_for(a bigint, p date) RETURNS date LANGUAGE sql STABLE AS $$
  SELECT greatest(p, coalesce((SELECT (max(period) + interval '1 month')::date
                                 FROM invoices WHERE account_id = a), p))
$$;

-- Deducts one priced charge: allowance, then credits earliest-expiring first, then postpaid
-- where the account allows it, else overspend. Caller holds the account's advisory lock.
CREATE FUNCTION deduct_charge(c charge_prices) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
  acct      accounts%ROWTYPE;
  usage_month date := date_trunc('month', c.finished_at, 'UTC')::date;
  allowance bigint := 0;
  inc       bigint := 0;
  left_nm   numeric(38,0);
  credit    numeric(38,0) := 0;
  g         record;
  take      numeric(38,0);
BEGIN
  SELECT * INTO acct FROM accounts WHERE id = c.account_id;
  SELECT p.included_ns INTO allowance
    FROM subscriptions s JOIN plans p ON p.id = s.plan_id
    WHERE s.account_id = c.account_id AND s.active @> c.finished_at;
  IF allowance IS NOT NULL AND allowance > 0 THEN
    inc := least(c.device_ns, greatest(0, allowance - coalesce((
      SELECT used_ns FROM allowance_used
      WHERE account_id = c.account_id AND period = usage_month), 0)));
  END IF;
  left_nm := (c.device_ns - inc)::numeric * c.price_micros_per_s;
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
      included_ns, billable_ns, credit_nmicros, postpaid_nmicros, overspend_nmicros)
    VALUES (c.request_id, 'charge', c.account_id, usage_month,
      invoice_period_for(c.account_id, usage_month),
      inc, c.device_ns - inc, credit,
      CASE WHEN acct.postpaid_allowed THEN left_nm ELSE 0 END,
      CASE WHEN acct.postpaid_allowed THEN 0 ELSE left_nm END);
END $$;

-- Reverses a voided charge's deduction (invariant 15): a 'void' row with every amount negated on
-- the invoice that is open now, and an 'adjustment' entry giving each credit back to its grant.
CREATE FUNCTION reverse_charge(rid text) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
  d charge_deductions%ROWTYPE;
BEGIN
  SELECT * INTO d FROM charge_deductions WHERE request_id = rid AND kind = 'charge';
  IF NOT FOUND THEN
    RETURN;
  END IF;
  PERFORM pg_advisory_xact_lock(hashtext('account:' || d.account_id));
  INSERT INTO charge_deductions (request_id, kind, account_id, usage_period, invoice_period,
      included_ns, billable_ns, credit_nmicros, postpaid_nmicros, overspend_nmicros)
    VALUES (rid, 'void', d.account_id, d.usage_period,
      invoice_period_for(d.account_id, d.invoice_period),
      -d.included_ns, -d.billable_ns, -d.credit_nmicros, -d.postpaid_nmicros, -d.overspend_nmicros)
    ON CONFLICT DO NOTHING;
  IF FOUND THEN
    INSERT INTO balance_entries (account_id, grant_id, kind, amount_nmicros, request_id)
      SELECT account_id, grant_id, 'adjustment', -amount_nmicros, rid
        FROM balance_entries WHERE request_id = rid AND kind = 'deduction' ORDER BY id;
  END IF;
END $$;

-- Statement-level: prices exactly the rows this statement inserted into usage_records, then
-- deducts each (accounts in ascending order, each under its advisory lock, so two writers
-- never deadlock and never deduct the same funds twice). A record already voided (its void was
-- applied by the row trigger of V6 in this statement) is priced but not deducted.
CREATE FUNCTION price_and_deduct_charges() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  c      charge_prices%ROWTYPE;
  locked bigint := NULL;
BEGIN
  FOR c IN
    WITH priced AS (
      INSERT INTO charge_prices (request_id, account_id, model, device_class, finished_at,
          device_ns, price_version_id, price_micros_per_s, cost_nmicros)
      SELECT n.request_id, n.account_id, n.model, dc.cls, n.finished_at, n.device_ns, pv.id,
             pv.price_micros_per_s, n.device_ns::numeric * pv.price_micros_per_s
        FROM new_rows n
        JOIN accounts a ON a.id = n.account_id
        CROSS JOIN LATERAL (SELECT device_class(n.device, n.device_name) AS cls) dc
        JOIN LATERAL (
          SELECT v.id, v.price_micros_per_s FROM price_versions v
           WHERE v.currency = a.currency AND v.device_class = dc.cls
             AND v.model IN (n.model, '*') AND v.effective @> n.finished_at
           ORDER BY v.model = '*' LIMIT 1) pv ON true
      RETURNING *
    )
    SELECT * FROM priced ORDER BY account_id, request_id
  LOOP
    IF EXISTS (SELECT 1 FROM charge_voids WHERE request_id = c.request_id) THEN
      CONTINUE;
    END IF;
    IF locked IS DISTINCT FROM c.account_id THEN
      PERFORM pg_advisory_xact_lock(hashtext('account:' || c.account_id));
      locked := c.account_id;
    END IF;
    PERFORM deduct_charge(c);
  END LOOP;
  RETURN NULL;
END $$;

CREATE TRIGGER usage_records_price AFTER INSERT ON usage_records
  REFERENCING NEW TABLE AS new_rows
  FOR EACH STATEMENT EXECUTE FUNCTION price_and_deduct_charges();

-- A void applied to a stored, deducted charge reverses the deduction.
CREATE FUNCTION charge_voids_reverse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM reverse_charge(NEW.request_id);
  RETURN NULL;
END $$;

CREATE TRIGGER charge_voids_after_apply AFTER UPDATE OF applied_ns ON charge_voids
  FOR EACH ROW WHEN (OLD.applied_ns IS NULL AND NEW.applied_ns IS NOT NULL)
  EXECUTE FUNCTION charge_voids_reverse();
