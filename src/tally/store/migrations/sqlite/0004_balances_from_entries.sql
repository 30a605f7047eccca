-- An account's balance is its last entry's `balance_after` (an invariant of DESIGN.md), read
-- with one primary-key seek; storing it again in `accounts` cost one row update per changed
-- account per batch (docs/benchmarks.md). `accounts` keeps each account's identity.
ALTER TABLE accounts DROP COLUMN balance;
ALTER TABLE accounts DROP COLUMN last_seq;
