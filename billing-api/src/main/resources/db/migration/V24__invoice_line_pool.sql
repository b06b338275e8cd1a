-- Invoice lines in the pool's unit (issue 10): what a line's charges took from a class-weighted
-- pool (V20), in ppm-ns (weighted device-ns x 10^6, exact), summed from
-- charge_deductions.pool_used (included_ns x 10^6 for rows written before V20). A finalized
-- invoice stores it beside included_ns, so the stored invoice shows the same pool figures as its
-- draft and `invoice verify` compares them. NULL on lines finalized before V24: the figure was not
-- recorded then (verify does not compare it for them). Caught by: billing-api
-- InvoicePoolLinesTest, LineTotalsPropertiesTest.
ALTER TABLE invoice_lines ADD COLUMN pool_used numeric(38,0);
