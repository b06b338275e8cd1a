-- api_keys.label (issue 10 item 1): an operator's name for a key ("ci runner", "alice laptop"),
-- shown with the key in lists and never used for authentication. V7 added the column as NOT NULL
-- DEFAULT '' with only a length check and nothing wrote it; from V13 on "no label" is NULL (the
-- empty strings become NULL), and a label is 1-200 characters without control characters.
-- billing-api keys.ApiKeys.validateLabel checks the same (and strips surrounding spaces) before it
-- writes, so this CHECK only catches a writer that bypasses it.
ALTER TABLE api_keys DROP CONSTRAINT IF EXISTS api_keys_label_check;
ALTER TABLE api_keys ALTER COLUMN label DROP NOT NULL, ALTER COLUMN label DROP DEFAULT;
UPDATE api_keys SET label = NULL WHERE label = '';
ALTER TABLE api_keys ADD CONSTRAINT api_keys_label_check
  CHECK (label IS NULL OR (char_length(label) BETWEEN 1 AND 200 AND label !~ '[[:cntrl:]]'));
