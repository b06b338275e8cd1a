-- Usage a customer can read (issue 11): sessions on the charge, and key scopes.
--
-- usage_records.session_id: the session a request belongs to (X-Session-Id, else OpenAI's `user`,
-- else its own request id; validated by the server: 1-128 of [A-Za-z0-9._:@-]). Added nullable so
-- existing partitions are not rewritten: a row written before V8 has NULL and reads as its own
-- request id (coalesce(session_id, request_id)), which is what the ledger writes for a request
-- without a session since V8.
ALTER TABLE usage_records ADD COLUMN session_id text
  CHECK (session_id IS NULL OR length(session_id) BETWEEN 1 AND 128);

-- api_keys.scope: what a key may read through the usage API (billing-api/README.md, "Key scopes";
-- DESIGN.md invariant 9). 'inference' (the default, every key made before V8): its own usage only.
-- 'account_admin': the usage of every key of its own account. No scope reaches another account.
ALTER TABLE api_keys ADD COLUMN scope text NOT NULL DEFAULT 'inference'
  CHECK (scope IN ('inference', 'account_admin'));
