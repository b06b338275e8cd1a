-- Batch company (issue 11): how many other sequences shared the steps a request ran in. The
-- scheduler sums, over the request's steps, the sequences in the step minus one (an exact integer;
-- metering.UsageRecord.batchCompanySum); the request log shows it divided by steps. NULL where it
-- was not measured (records stored before this version, or made outside the scheduler). Added on
-- the partitioned parent, so every partition, present and future, has it; not rolled up.
ALTER TABLE usage_records ADD COLUMN batch_company_sum bigint;
ALTER TABLE usage_records ADD CONSTRAINT usage_records_batch_company_sum_check
  CHECK (batch_company_sum IS NULL OR batch_company_sum >= 0);
