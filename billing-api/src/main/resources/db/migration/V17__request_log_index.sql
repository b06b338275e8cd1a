-- The customer's request log (GET /v1/organization/requests, billing-api usage.RequestLog): an
-- account's charged requests newest first by (finished_at, request_id). An account_admin key reads
-- the whole account, which no index covered (usage_records_key_finished_idx serves one key), so
-- without this a page was a scan of every partition. Created on the partitioned parent, so every
-- partition, present and future, gets it.
CREATE INDEX usage_records_account_finished_idx
  ON usage_records (account_id, finished_at, request_id);
