-- API keys: each is bound to one ledger. Only a SHA-256 of the secret is kept.

CREATE TABLE api_keys (
    key_id        TEXT   PRIMARY KEY,
    ledger        TEXT   NOT NULL REFERENCES ledgers (name),
    secret_sha256 TEXT   NOT NULL UNIQUE,  -- hex SHA-256 of the whole secret
    scopes        TEXT   NOT NULL,         -- space-separated, sorted: "admin read write"
    created_at_us BIGINT NOT NULL,
    revoked_at_us BIGINT                   -- NULL while the key is live
);
CREATE INDEX api_keys_by_ledger ON api_keys (ledger);
