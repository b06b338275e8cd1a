-- Budgets enforced before the work (issue 10, item 4; docs/DESIGN.md "Budgets").
--
-- Each server process (replica) leases a slice of an account's funds here and reserves requests
-- against its lease in memory, so admission needs no database round trip while a lease covers it.
-- A lease is granted under the account's advisory lock (the same lock the V7 deduction takes), and
-- never larger than the account's funds less every other unexpired lease:
--   allowance: the plan's included device-ns of the current UTC month less allowance_used;
--   credits:   the unexpired grants' remaining nano-micro-units (grant_remaining).
-- So the leases of all replicas together never exceed the funds at the time each was granted. A
-- replica that dies stops renewing; its lease expires (expires_at) and its slice is free again.
-- Leases are a cache of a promise, not money: they are updated in place and deleted when returned.
CREATE TABLE budget_leases (
  account_id     bigint        NOT NULL REFERENCES accounts (id),
  replica        text          NOT NULL CHECK (length(replica) BETWEEN 1 AND 100),
  allowance_ns   bigint        NOT NULL CHECK (allowance_ns >= 0),
  credit_nmicros numeric(38,0) NOT NULL CHECK (credit_nmicros >= 0),
  granted_at     timestamptz   NOT NULL DEFAULT now(),
  expires_at     timestamptz   NOT NULL CHECK (expires_at > granted_at),
  PRIMARY KEY (account_id, replica)
);
