-- At most one signing and one upcoming key per algorithm, whatever the nodes do. A change
-- moves a key out of 'current' before it moves its successor in.
CREATE UNIQUE INDEX signing_keys_one_current ON signing_keys (alg) WHERE state = 'current';
CREATE UNIQUE INDEX signing_keys_one_next ON signing_keys (alg) WHERE state = 'next';

-- The rate-limit tier of a client (its quota is configured by name); NULL: the default.
ALTER TABLE clients ADD COLUMN rate_limit_tier TEXT;
