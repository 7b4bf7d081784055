DROP INDEX signing_keys_one_next;
DROP INDEX signing_keys_one_current;
