-- Accounts and their API keys. Keys are stored only as a SHA-256 hash plus a short prefix that
-- users can recognise; the plaintext (gm_<40 base62 chars>) is shown once at creation.
-- All time stamps are timestamptz (UTC on the wire and in the embedded server's time zone).

CREATE TABLE accounts (
  id         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  name       text        NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 200),
  created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
  id         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  account_id bigint      NOT NULL REFERENCES accounts (id),
  prefix     text        NOT NULL CHECK (length(prefix) BETWEEN 8 AND 12),
  key_hash   bytea       NOT NULL UNIQUE CHECK (octet_length(key_hash) = 32),
  created_at timestamptz NOT NULL DEFAULT now(),
  revoked_at timestamptz,
  CHECK (revoked_at IS NULL OR revoked_at >= created_at)
);

CREATE INDEX api_keys_account_idx ON api_keys (account_id);
