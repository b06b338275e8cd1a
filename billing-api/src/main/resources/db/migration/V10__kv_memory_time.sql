-- KV-cache memory-time per request (issue 18, item 3): the KV-cache bytes the sequence held,
-- integrated over the steps it was in (byte-nanoseconds: cached bytes after each step times that
-- step's measured ns, exact), and the most KV bytes it held at once. Measured and reported, not
-- priced. Records written before this migration read 0 (not measured).
--
-- Not rolled up: usage reports sum them from usage_records (kept >= 90 days), excluding voided
-- charges; the sum is numeric, so it cannot overflow.

ALTER TABLE usage_records
  ADD COLUMN kv_byte_ns    bigint NOT NULL DEFAULT 0 CHECK (kv_byte_ns >= 0),
  ADD COLUMN peak_kv_bytes bigint NOT NULL DEFAULT 0 CHECK (peak_kv_bytes >= 0);
