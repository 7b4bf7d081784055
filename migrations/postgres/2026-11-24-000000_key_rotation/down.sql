ALTER TABLE clients DROP COLUMN rate_limit_tier;
DROP INDEX signing_keys_one_next;
DROP INDEX signing_keys_one_current;
