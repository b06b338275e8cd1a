-- Idempotency-Key (issue 12, item 5): a retried POST with the same key returns the stored answer
-- and is charged once.
--
-- idempotency_keys: one row per (API key, Idempotency-Key), kept 24 hours from its claim
-- (expires_at; the maintenance job deletes expired rows, and an expired row counts as absent).
-- A request claims its key BEFORE it generates (state 'in_flight', with the request id that will
-- carry the charge and a lease), and stores its answer AFTER its charge is durable and before the
-- answer is sent (state 'done', status and body). request_hash is the SHA-256 of the canonical
-- request (endpoint and body with sorted keys): the same key with another body is refused.
--
-- A claim whose lease ran out while still 'in_flight' belongs to an attempt that will never store
-- its answer (its process died, or it outlived the request timeout): a retry takes the claim over
-- with a new request id and voids the old one's charge in the same transaction, with the new void
-- reason 'idempotent_retry', so that the client pays for the one answer it gets.

CREATE TABLE idempotency_keys (
  api_key_id      bigint      NOT NULL,
  idempotency_key text        NOT NULL CHECK (length(idempotency_key) BETWEEN 1 AND 255),
  request_hash    bytea       NOT NULL CHECK (length(request_hash) = 32),
  request_id      text        NOT NULL,
  state           text        NOT NULL CHECK (state IN ('in_flight', 'done')),
  status          integer     CHECK (status BETWEEN 100 AND 599),
  body            bytea,
  created_at      timestamptz NOT NULL,
  lease_until     timestamptz NOT NULL,
  expires_at      timestamptz NOT NULL,
  completed_at    timestamptz,
  PRIMARY KEY (api_key_id, idempotency_key),
  CHECK ((state = 'done') = (status IS NOT NULL AND body IS NOT NULL AND completed_at IS NOT NULL)),
  CHECK (expires_at > created_at)
);
CREATE INDEX idempotency_keys_expires_idx ON idempotency_keys (expires_at);

ALTER TABLE charge_voids DROP CONSTRAINT charge_voids_reason_check;
ALTER TABLE charge_voids ADD CONSTRAINT charge_voids_reason_check
  CHECK (reason IN ('not_durable', 'client_gone', 'write_failed', 'idempotent_retry'));
